"""The libraries users would pick instead, each against our equivalent
operation in the same run (install them with ``pip install -e ".[bench]"``).

- ``eventsourcing`` on SQLite: saving one new aggregate (one event) per
  save, and 1000 new aggregates in one save; ours: ``k.append`` of one event
  to a new stream with ``expected_version=0``, one per transaction and 1000
  in one ``k.transaction()``.
- ``langgraph-checkpoint-sqlite``: ``SqliteSaver.put`` of a checkpoint;
  ours: ``k.checkpoints.record`` of the same state.

Each peer's ``synchronous`` setting is read back and printed: a comparison
is only fair between equally durable writes.
"""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from typing import Any

import eventkernel
from benchmarks.common import interleaved, rate, scratch_dir, summary


class BenchItemCreated(eventkernel.Event, tag="bench.item_created"):
    """The event our side appends: the counterpart of the peer's aggregate."""

    n: int


def _state(n: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"question {n}"},
                         {"role": "assistant", "content": "an answer of a few words"}], "step": n}


def _eventsourcing(where: Any, k: eventkernel.Kernel, single_n: int, rounds: int) -> list[dict[str, Any]]:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Item(Aggregate):  # type: ignore[misc]
        @event("Created")  # type: ignore[misc]
        def __init__(self, n: int) -> None:
            self.n = n

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(where / "es.db")})
    app.save(Item(0))
    with app.recorder.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
        c.execute("PRAGMA synchronous")
        sync = tuple(c.fetchone())[0]
    print(f"  eventsourcing: SQLite synchronous={sync} (2 = FULL)", flush=True)
    counter = itertools.count()

    def es_single() -> float:
        return rate(single_n, lambda: [app.save(Item(next(counter))) for _ in range(single_n)])

    def ours_single() -> float:
        def go() -> None:
            for _ in range(single_n):
                n = next(counter)
                k.append(f"item:{n}", [BenchItemCreated(n=n)], expected_version=0)
        return rate(single_n, go)

    def es_batch() -> float:
        items = [Item(next(counter)) for _ in range(1000)]
        return rate(1000, lambda: app.save(*items))

    def ours_batch() -> float:
        def go() -> None:
            with k.transaction():
                for _ in range(1000):
                    n = next(counter)
                    k.append(f"item:{n}", [BenchItemCreated(n=n)], expected_version=0)
        return rate(1000, go)

    out = []
    for name, ours, theirs, target in (
        ("append one event, one transaction each", ours_single, es_single, 2.0),
        ("append 1000 new streams in one transaction", ours_batch, es_batch, 5.0),
    ):
        a, b = interleaved(rounds, ours, theirs)
        sa, sb = summary(a), summary(b)
        out.append({"name": name, "value": sa["median"], "min": sa["min"], "max": sa["max"], "unit": "events/s",
                    "baseline": "eventsourcing (SQLite) Application.save", "baseline_value": sb["median"],
                    "ratio": sa["median"] / sb["median"], "target": target})
    app.close()
    return out


def _langgraph(where: Any, k: eventkernel.Kernel, n: int, rounds: int) -> list[dict[str, Any]]:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(where / "langgraph.db"), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    print(f"  langgraph SqliteSaver: SQLite synchronous={sync} (2 = FULL)", flush=True)
    counter = itertools.count()

    def theirs() -> float:
        def go() -> None:
            for _ in range(n):
                i = next(counter)
                checkpoint = empty_checkpoint()
                checkpoint["id"] = str(uuid.uuid4())
                checkpoint["channel_values"] = _state(i)
                saver.put({"configurable": {"thread_id": "thread-1", "checkpoint_ns": ""}}, checkpoint,
                          {"source": "loop", "step": i}, {})
        return rate(n, go)

    def ours() -> float:
        return rate(n, lambda: [k.checkpoints.record("thread-1", "state_transition", _state(next(counter))) for _ in range(n)])

    a, b = interleaved(rounds, ours, theirs)
    sa, sb = summary(a), summary(b)
    conn.close()
    return [{"name": "save a checkpoint, one transaction each", "value": sa["median"], "min": sa["min"],
             "max": sa["max"], "unit": "checkpoints/s", "baseline": "langgraph-checkpoint-sqlite SqliteSaver.put",
             "baseline_value": sb["median"], "ratio": sa["median"] / sb["median"], "target": 1.2}]


def run(*, quick: bool, synchronous: str) -> list[dict[str, Any]]:
    where = scratch_dir()
    k = eventkernel.open(str(where / "eventkernel.db"), synchronous=synchronous)  # type: ignore[arg-type]
    single_n = 50 if quick else 300
    rounds = 3 if quick else 7
    results: list[dict[str, Any]] = []
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        print('  eventsourcing is not installed (pip install -e ".[bench]"): skipped', flush=True)
    else:
        results += _eventsourcing(where, k, single_n, rounds)
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError:
        print('  langgraph-checkpoint-sqlite is not installed (pip install -e ".[bench]"): skipped', flush=True)
    else:
        results += _langgraph(where, k, single_n, rounds)
    k.close()
    return results
