"""LangGraph checkpointers: ``EventKernelSaver`` against LangGraph's
``SqliteSaver`` (``langgraph-checkpoint-sqlite``), both at FULL, in the
same run: ``put``, ``put_writes``, ``get_tuple`` and ``list(limit=10)``
through LangGraph's API; a 10-node graph invoked end to end, from one
thread and from eight sharing the saver; and the size
of the file after a 200-turn conversation whose message list grows every
turn (what LangGraph stores: the whole list at each step)."""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import eventkernel
from benchmarks.common import CapturedFloor, calls, interleaved, rate, scratch_dir, summary

THEIRS = "langgraph-checkpoint-sqlite SqliteSaver"
FLOOR = "raw APSW replaying the saver's own statements"


def _row(name: str, a: list[float], b: list[float], unit: str, baseline: str, target: float | None) -> dict[str, Any]:
    sa, sb = summary(a), summary(b)
    return {"name": name, "value": sa["median"], "min": sa["min"], "max": sa["max"], "unit": unit,
            "baseline": baseline, "baseline_value": sb["median"], "ratio": sa["median"] / sb["median"],
            "target": target}


def _size(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def run(*, quick: bool) -> list[dict[str, Any]]:
    try:
        import langgraph.checkpoint.sqlite
        import langgraph.graph  # noqa: F401
    except ImportError:
        print('  langgraph or langgraph-checkpoint-sqlite is not installed (pip install -e ".[test]"): skipped',
              flush=True)
        return []
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver

    from eventkernel.integrations.langgraph import EventKernelSaver

    where = scratch_dir()
    n = 40 if quick else 200
    reads = n * 5  # reads are fast: longer rounds
    rounds = 3 if quick else 7
    conn = sqlite3.connect(str(where / "sqlitesaver.db"), check_same_thread=False)
    theirs = SqliteSaver(conn)
    theirs.setup()
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    print(f"  langgraph SqliteSaver: SQLite synchronous={sync} (2 = FULL)", flush=True)
    ours = EventKernelSaver(eventkernel.open(str(where / "eventkernel.db")))
    # The floor: what our saver's SQL costs with none of its Python (statements
    # captured from a saver on a kernel of its own, replayed by raw APSW).
    floor = CapturedFloor(where, "langgraph-floor", "full")
    counter = itertools.count()
    savers = {"ours": ours, "theirs": theirs, "floor": EventKernelSaver(floor.kernel)}
    latest: dict[tuple[str, str], Any] = {}

    def put_one(who: str, thread: str) -> Any:
        saver = savers[who]
        i = next(counter)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": [f"message {j} of step {i}" for j in range(5)], "step": i}
        version = saver.get_next_version(None, None)
        checkpoint["channel_versions"] = {"messages": version, "step": version}
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        parent = latest.get((who, thread))
        if parent is not None:
            config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
        stored = saver.put(config, checkpoint, {"source": "loop", "step": i, "parents": {}},
                           {"messages": version, "step": version})
        latest[who, thread] = stored
        return stored

    def puts(who: str) -> float:
        return rate(n, lambda: [put_one(who, "puts") for _ in range(n)])

    def writes(who: str) -> float:
        stored = put_one(who, "writes")
        return rate(n, lambda: [savers[who].put_writes(stored, [("messages", ["a reply"]), ("step", i)], f"task-{i}")
                                for i in range(n)])

    for who in ("ours", "theirs"):  # a thread of 50 checkpoints to read
        for _ in range(50):
            put_one(who, "reads")
    floor.replay(floor.capture(lambda _: [put_one("floor", "reads") for _ in range(50)]))

    def replayed(work: Any, *, read: bool = False, times: int = 1) -> float:
        statements = floor.capture(work, reads=read)  # not timed: the saver issuing them
        return calls(times, lambda: floor.replay(statements)) * (1 if read else n)

    def gets(who: str) -> float:
        config = {"configurable": {"thread_id": "reads", "checkpoint_ns": ""}}
        return calls(reads, lambda: savers[who].get_tuple(config))

    def lists(who: str) -> float:
        config = {"configurable": {"thread_id": "reads", "checkpoint_ns": ""}}
        return calls(reads, lambda: list(savers[who].list(config, limit=10)))

    def floor_puts() -> float:
        return replayed(lambda _: [put_one("floor", "puts") for _ in range(n)])

    def floor_writes() -> float:
        made: list[Any] = []
        floor.replay(floor.capture(lambda _: made.append(put_one("floor", "writes"))))  # not timed
        stored = made[0]
        return replayed(lambda _: [savers["floor"].put_writes(stored, [("messages", ["a reply"]), ("step", i)],
                                                              f"task-{i}") for i in range(n)])

    def floor_gets() -> float:
        config = {"configurable": {"thread_id": "reads", "checkpoint_ns": ""}}
        return replayed(lambda _: savers["floor"].get_tuple(config), read=True, times=reads)

    def floor_lists() -> float:
        config = {"configurable": {"thread_id": "reads", "checkpoint_ns": ""}}
        return replayed(lambda _: list(savers["floor"].list(config, limit=10)), read=True, times=reads)

    out = []
    for name, fn, target, floor_fn in (("put", puts, 0.8, floor_puts),
                                       ("put_writes, 2 writes", writes, None, floor_writes),
                                       ("get_tuple, latest of 50", gets, 1.0, floor_gets),
                                       ("list(limit=10)", lists, 1.0, floor_lists)):
        a, b = interleaved(rounds, lambda fn=fn: fn("ours"), lambda fn=fn: fn("theirs"))
        out.append(_row(f"LangGraph {name}", a, b, "calls/s", THEIRS, target))
        if floor_fn is not None:
            # the bound: our statements alone against SqliteSaver, and our Python's share
            f, b = interleaved(rounds, floor_fn, lambda fn=fn: fn("theirs"))
            out.append(_row(f"  {name}: our SQL alone, replayed", f, b, "calls/s", THEIRS, None))
            a, f = interleaved(rounds, lambda fn=fn: fn("ours"), floor_fn)
            out.append(_row(f"  {name}: the saver against its own SQL", a, f, "calls/s", FLOOR, None))

    out.append(_async_puts(where, n, rounds))

    # a 10-node graph, invoked end to end on each saver; and on InMemorySaver,
    # which stores nothing durably: LangGraph's own cost per step, the ceiling
    # of any saver
    from langgraph.checkpoint.memory import InMemorySaver

    savers["memory"] = InMemorySaver()
    graphs = {who: _chain(saver) for who, saver in savers.items()}
    invocations = 20 if quick else 200
    runs = itertools.count()

    def invoke(who: str) -> float:
        def go() -> None:
            for _ in range(invocations // 4):
                graphs[who].invoke({"steps": []}, {"configurable": {"thread_id": f"g-{next(runs)}"}})
        return rate(invocations // 4 * 11, go)  # 11 checkpoints per invocation

    a, b = interleaved(4, lambda: invoke("ours"), lambda: invoke("theirs"))
    out.append(_row("a 10-node graph invoked, one thread", a, b, "steps/s", THEIRS, 1.0))
    a, b = interleaved(4, lambda: invoke("memory"), lambda: invoke("theirs"))
    out.append(_row("  the same on InMemorySaver (no storage: the ceiling)", a, b, "steps/s", THEIRS, None))

    def bound() -> float:
        """The most our saver can reach: LangGraph's own cost per step (on
        InMemorySaver, which does a little more than nothing) plus our
        statements alone, captured from the same graph on a kernel of its
        own and replayed by raw APSW."""
        steps = invocations // 4 * 11
        statements = floor.capture(lambda _: [
            graphs["floor"].invoke({"steps": []}, {"configurable": {"thread_id": f"g-{next(runs)}"}})
            for _ in range(invocations // 4)], both=True)  # not timed
        start = time.perf_counter()
        floor.replay(statements)
        replayed = time.perf_counter() - start
        return 1 / (1 / invoke("memory") + replayed / steps)

    a, b = interleaved(4, bound, lambda: invoke("theirs"))
    out.append(_row("  the bound: InMemorySaver's steps plus our SQL alone", a, b, "steps/s", THEIRS, None))

    def threaded(who: str, threads: int = 8) -> float:
        each = max(invocations // 40, 2)

        def work() -> None:
            for _ in range(each):
                graphs[who].invoke({"steps": []}, {"configurable": {"thread_id": f"g-{next(runs)}"}})

        def go() -> None:
            pool = [threading.Thread(target=work) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        return rate(threads * each * 11, go)

    a, b = interleaved(3, lambda: threaded("ours"), lambda: threaded("theirs"))
    out.append(_row("the same graph from 8 threads, one saver", a, b, "steps/s", THEIRS, 3.0))
    a, b = interleaved(3, lambda: threaded("memory"), lambda: threaded("theirs"))
    out.append(_row("  the same on InMemorySaver (the ceiling)", a, b, "steps/s", THEIRS, None))

    # the size of a 200-turn conversation with a growing message list
    turns = 50 if quick else 200
    sizes = {}
    for who in ("ours", "theirs"):
        path = where / f"conversation-{who}.db"
        if who == "ours":
            saver_: Any = EventKernelSaver(eventkernel.open(str(path)))
        else:
            c = sqlite3.connect(str(path), check_same_thread=False)
            saver_ = SqliteSaver(c)
            saver_.setup()
        messages: list[Any] = []
        parent = None
        version = None
        for turn in range(turns):
            messages = [*messages, HumanMessage(f"question {turn}: " + "words " * 20),
                        AIMessage(f"answer {turn}: " + "more words " * 30)]
            checkpoint = empty_checkpoint()
            version = saver_.get_next_version(version, None)
            checkpoint["channel_values"] = {"messages": messages}
            checkpoint["channel_versions"] = {"messages": version}
            config = {"configurable": {"thread_id": "chat", "checkpoint_ns": ""}}
            if parent is not None:
                config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            parent = saver_.put(config, checkpoint, {"source": "loop", "step": turn, "parents": {}},
                                {"messages": version})
        if who == "ours":
            saver_.kernel.checkpoint("truncate")
            sizes["ours"] = _size(path)
            # the history let go: the thread pruned to its latest checkpoint, then every event
            # before the head moved to an archive (what the latest checkpoint reads stays)
            saver_.prune(["chat"], strategy="keep_latest")
            archive = str(where / "conversation-archive.db")
            saver_.kernel.compact(before=saver_.kernel.head, archive=archive)
            saver_.kernel.checkpoint("truncate")
            sizes["ours, pruned and compacted"] = _size(path)
            # and then forgotten: the thread deleted, its payloads erased (the archive's too), the space given back
            saver_.delete_thread("chat")
            saver_.kernel.erase(correlation_id="chat", reason="benchmark", archive=archive)
            sizes["ours, erased"] = _size(path)
            saver_.kernel.close()
        else:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.close()
            sizes["theirs"] = _size(path)
    out.append({"name": f"file size after a {turns}-turn conversation", "value": sizes["ours"] / 2**20,
                "min": sizes["ours"] / 2**20, "max": sizes["ours"] / 2**20, "unit": "MiB", "baseline": THEIRS,
                "baseline_value": sizes["theirs"] / 2**20, "ratio": sizes["ours"] / sizes["theirs"], "target": 1.0})
    pruned = sizes["ours, pruned and compacted"]
    out.append({"name": "the same file after prune(keep_latest) and k.compact", "value": pruned / 2**20,
                "min": pruned / 2**20, "max": pruned / 2**20, "unit": "MiB", "baseline": THEIRS,
                "baseline_value": sizes["theirs"] / 2**20, "ratio": pruned / sizes["theirs"], "target": None})
    erased = sizes["ours, erased"]
    out.append({"name": "then after delete_thread and k.erase", "value": erased / 2**20,
                "min": erased / 2**20, "max": erased / 2**20, "unit": "MiB", "baseline": THEIRS,
                "baseline_value": sizes["theirs"] / 2**20, "ratio": erased / sizes["theirs"], "target": None})
    out += _store_searches(where, quick, rounds)
    ours.kernel.close()
    floor.close()
    conn.close()
    return out


def _store_searches(where: Path, quick: bool, rounds: int) -> list[dict[str, Any]]:
    """LangGraph's store: ``search(limit=10)`` of one user's namespace of
    5,000 items (the newest ten), with and without a filter, against
    ``SqliteStore``, both filled the same way."""
    from langgraph.store.base import PutOp
    from langgraph.store.sqlite import SqliteStore

    from eventkernel.integrations.langgraph import EventKernelStore

    items, searches = (500, 20) if quick else (5_000, 100)
    conn = sqlite3.connect(str(where / "sqlitestore.db"), check_same_thread=False, isolation_level=None)
    stores: dict[str, Any] = {"theirs": SqliteStore(conn), "ours": EventKernelStore(
        eventkernel.open(str(where / "eventkernel-store.db")))}
    stores["theirs"].setup()
    namespace = ("users", "u1", "memories")
    for store in stores.values():
        store.batch([PutOp(namespace, f"k{i}", {"text": f"memory {i}", "kind": "fact" if i % 4 else "preference"})
                     for i in range(items)])
    out = []
    for name, wanted in (("", None), (", filtered (a quarter pass)", {"kind": "preference"})):
        def search(who: str, wanted: Any = wanted) -> float:
            store = stores[who]
            return calls(searches, lambda: store.search(namespace, filter=wanted, limit=10))

        a, b = interleaved(rounds, lambda: search("ours"), lambda: search("theirs"))
        out.append(_row(f"LangGraph store search(limit=10) of {items:,} items{name}", a, b, "calls/s",
                        "SqliteStore", None))
    stores["ours"].kernel.close()
    conn.close()
    return out


class Steps(TypedDict):
    steps: Annotated[list[int], operator.add]


def _chain(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(Steps)
    previous = START
    for i in range(10):
        builder.add_node(f"n{i}", lambda s, i=i: {"steps": [i]})
        builder.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


def _async_puts(where: Path, n: int, rounds: int) -> dict[str, Any]:
    """``aput`` awaited one after the other: on the asyncio kernel against
    ``AsyncSqliteSaver`` (aiosqlite), each with its own event loop run."""
    import asyncio

    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    import eventkernel.aio
    from eventkernel.integrations.langgraph import EventKernelSaver

    counter = itertools.count()

    async def puts(saver: Any) -> float:
        async def go() -> None:
            for _ in range(n):
                i = next(counter)
                checkpoint = empty_checkpoint()
                checkpoint["channel_values"] = {"messages": [f"message {j} of step {i}" for j in range(5)]}
                version = saver.get_next_version(None, None)
                checkpoint["channel_versions"] = {"messages": version}
                await saver.aput({"configurable": {"thread_id": "aput", "checkpoint_ns": ""}}, checkpoint,
                                 {"source": "loop", "step": i, "parents": {}}, {"messages": version})
        loop = asyncio.get_running_loop()
        start = loop.time()
        await go()
        return n / (loop.time() - start)

    async def both() -> tuple[list[float], list[float]]:
        ours: list[float] = []
        theirs: list[float] = []
        async with eventkernel.aio.open(str(where / "aio.db")) as k, \
                AsyncSqliteSaver.from_conn_string(str(where / "asyncsqlitesaver.db")) as saver:
            mine = EventKernelSaver(k)
            for _ in range(rounds):
                theirs.append(await puts(saver))
                ours.append(await puts(mine))
        return ours, theirs

    a, b = asyncio.run(both())
    return _row("LangGraph aput, asyncio", a, b, "calls/s", "langgraph-checkpoint-sqlite AsyncSqliteSaver", None)
