"""EventKernelSaver against LangGraph's own judges: the checkpointer
conformance suite (every capability, on a file, in memory, on the asyncio
kernel and on PostgreSQL), and
LangGraph's InMemorySaver as the oracle of the sync methods."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

import eventkernel
import eventkernel.aio
from eventkernel.errors import InvalidArgument
from eventkernel.integrations.langgraph import EventKernelSaver

from support import open_kernel

CAPABILITIES = {"put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs", "copy_thread", "prune"}


def _report(saver_factory: Any) -> dict[str, Any]:
    report = asyncio.run(validate(saver_factory))
    return report.results


@pytest.mark.parametrize("where", ["file", "memory", "aio", "postgres"])
def test_the_conformance_suite_passes_every_clause(where, tmp_path, request):
    path = ":memory:" if where == "memory" else str(tmp_path / f"{where}.db")
    schemas: list[str] = []
    if where == "postgres":  # each factory's saver on a journal of its own (a schema) on the server
        path = request.getfixturevalue("pg_url")

    if where == "postgres":
        @checkpointer_test(name=f"EventKernelSaver-{where}")
        async def factory():
            schemas.append(f"lg_{len(schemas)}")
            async with EventKernelSaver.from_conn_string(path, schema=schemas[-1]) as saver:
                yield saver
    elif where == "aio":
        @checkpointer_test(name=f"EventKernelSaver-{where}")
        async def factory():
            async with eventkernel.aio.open(path) as k:
                yield EventKernelSaver(k)
    else:
        @checkpointer_test(name=f"EventKernelSaver-{where}")
        async def factory():
            async with EventKernelSaver.from_conn_string(path) as saver:
                yield saver

    results = _report(factory)
    assert set(results) == CAPABILITIES
    failures = [f for r in results.values() for f in r.failures]
    assert not failures, "\n".join(failures)
    assert all(r.detected and r.passed for r in results.values()), results
    assert sum(r.tests_passed for r in results.values()) == 81
    if where == "postgres":
        assert len(schemas) > 1
        for schema in schemas:
            with eventkernel.open(path, schema=schema) as k:
                assert k.verify().ok
    elif where != "memory":
        with eventkernel.open(path, read_only=True) as k:
            assert k.verify().ok
            assert k.stats().head > 0


# --- the sync methods, against InMemorySaver -----------------------------------------

THREADS = st.sampled_from(["t1", "t2"])
NAMESPACES = st.sampled_from(["", "child:1"])
CHANNELS = st.sampled_from(["messages", "count", "flag"])
INT64 = st.integers(-(2**63), 2**63 - 1)  # what LangGraph's serializer carries
VALUES = st.one_of(
    st.none(), st.booleans(), INT64, st.text(max_size=5), st.binary(max_size=5),
    st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.text(max_size=3), INT64, max_size=2),
    st.tuples(INT64, st.text(max_size=2)), st.frozensets(st.integers(0, 3), max_size=2),  # msgpack extensions
    st.floats(allow_nan=False),
)
OPS = st.one_of(
    st.tuples(st.just("put"), THREADS, NAMESPACES, st.dictionaries(CHANNELS, VALUES, max_size=2),
              st.sampled_from(["input", "loop"]), st.integers(-1, 3), st.booleans()),
    st.tuples(st.just("writes"), THREADS, NAMESPACES,
              st.lists(st.tuples(st.sampled_from(["messages", ERROR, INTERRUPT]), VALUES), max_size=3),
              st.sampled_from(["task-a", "task-b"]), st.sampled_from(["", "p:1"])),
    st.tuples(st.just("delete"), THREADS),
)


def _lists(saver: Any, thread: str, ns: str) -> list[Any]:
    configs: list[Any] = [
        {"configurable": {"thread_id": thread, "checkpoint_ns": ns}},
        {"configurable": {"thread_id": thread}},
    ]
    out = []
    for config in configs:
        for kwargs in ({}, {"limit": 1}, {"filter": {"source": "loop"}}, {"filter": {"step": 1, "source": "input"}}):
            found: Any = list(saver.list(config, **kwargs))
            if "checkpoint_ns" not in config["configurable"]:
                # InMemorySaver lists namespace by namespace; the order across namespaces is not a contract
                found = len(found) if "limit" in kwargs else sorted(
                    found, key=lambda t: (t.config["configurable"]["checkpoint_ns"],
                                          t.config["configurable"]["checkpoint_id"]))
            out.append(found)
    # every thread, through the metadata index
    found = list(saver.list(None, filter={"source": "loop"}))
    out.append(sorted((t.config["configurable"]["thread_id"], t.config["configurable"]["checkpoint_ns"],
                       t.config["configurable"]["checkpoint_id"], t.metadata["step"]) for t in found))
    return out


@pytest.mark.parametrize("where", ["file", "postgres"])
@settings(max_examples=60)
@given(ops=st.lists(OPS, max_size=14))
def test_sync_methods_answer_as_langgraphs_in_memory_saver_does(where, ops, tmp_path_factory):
    if where == "postgres":
        ours = EventKernelSaver(open_kernel("postgres"))
    else:
        ours = EventKernelSaver(eventkernel.open(str(tmp_path_factory.mktemp("lg") / "saver.db")))
    theirs = InMemorySaver()
    ids = itertools.count(1)
    latest: dict[tuple[str, str], Any] = {}
    versions: dict[tuple[str, str, str], int] = {}
    try:
        for op in ops:
            if op[0] == "put":
                _, thread, ns, values, source, step, with_parent = op
                checkpoint = empty_checkpoint()
                checkpoint["id"] = f"{next(ids):08d}"
                new_versions = {}
                for channel, value in values.items():
                    v = versions[thread, ns, channel] = versions.get((thread, ns, channel), 0) + 1
                    new_versions[channel] = v
                    checkpoint["channel_values"][channel] = value
                checkpoint["channel_versions"] = {c: v for (t, n, c), v in versions.items() if (t, n) == (thread, ns)}
                config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
                parent = latest.get((thread, ns))
                if with_parent and parent is not None:
                    config["configurable"]["checkpoint_id"] = parent
                metadata = {"source": source, "step": step, "parents": {}}
                assert ours.put(config, checkpoint, metadata, new_versions) == \
                    theirs.put(config, checkpoint, metadata, new_versions)
                latest[thread, ns] = checkpoint["id"]
            elif op[0] == "writes":
                _, thread, ns, writes, task, path_ = op
                if (thread, ns) not in latest:
                    continue
                config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns,
                                           "checkpoint_id": latest[thread, ns]}}
                ours.put_writes(config, writes, task, path_)
                theirs.put_writes(config, writes, task, path_)
            else:
                ours.delete_thread(op[1])
                theirs.delete_thread(op[1])
                for key in [k for k in latest if k[0] == op[1]]:
                    del latest[key]
                for key in [k for k in versions if k[0] == op[1]]:
                    del versions[key]
            for thread, ns in itertools.product(["t1", "t2"], ["", "child:1"]):
                config = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
                assert ours.get_tuple(config) == theirs.get_tuple(config)
                for t in theirs.list(config):
                    assert ours.get_tuple(t.config) == t
                assert _lists(ours, thread, ns) == _lists(theirs, thread, ns)
        assert ours.kernel.verify().ok
    finally:
        ours.kernel.close()


@pytest.mark.parametrize("page", [100, 7])
def test_a_long_history_is_listed_in_pages_as_in_memory_saver_lists_it(page, tmp_path, monkeypatch):
    """One namespace of a thread is read a page at a time, newest first: the
    same tuples as InMemorySaver whatever the limit, cursor and filter, and a
    caller that takes the first tuple reads one page."""
    monkeypatch.setattr("eventkernel.integrations.langgraph._PAGE", page)
    ours = EventKernelSaver(eventkernel.open(str(tmp_path / "saver.db")))
    theirs = InMemorySaver()
    try:
        for i in range(1, 61):
            for ns in ("", "child:1") if i % 4 == 0 else ("",):
                checkpoint = empty_checkpoint()
                checkpoint["id"] = f"{i:08d}"
                checkpoint["channel_values"] = {"count": i}
                checkpoint["channel_versions"] = {"count": i}
                config = {"configurable": {"thread_id": "long", "checkpoint_ns": ns}}
                metadata = {"source": "loop" if i % 3 else "input", "step": i, "parents": {}}
                for saver in (ours, theirs):
                    stored = saver.put(config, checkpoint, metadata, {"count": i})
                    saver.put_writes(stored, [("count", i * 10)], f"task-{i}")
        config = {"configurable": {"thread_id": "long", "checkpoint_ns": ""}}
        before = {"configurable": {"thread_id": "long", "checkpoint_ns": "", "checkpoint_id": f"{45:08d}"}}
        for kwargs in ({}, {"limit": 1}, {"limit": 7}, {"limit": 8}, {"limit": 59}, {"limit": 60}, {"limit": 500},
                       {"before": before}, {"before": before, "limit": 9}, {"filter": {"source": "input"}},
                       {"filter": {"source": "loop"}, "limit": 13}):
            assert list(ours.list(config, **kwargs)) == list(theirs.list(config, **kwargs)), kwargs
        calls = []
        listed = ours.kernel.graphs._list
        monkeypatch.setattr(ours.kernel.graphs, "_list", lambda *a, **kw: calls.append(kw["limit"]) or listed(*a, **kw))
        assert next(iter(ours.list(config))).checkpoint["id"] == f"{60:08d}"
        assert calls == [page]
        with pytest.raises(InvalidArgument, match="limit must be >= 0"):
            next(iter(ours.list(config, limit=-1)))
    finally:
        ours.kernel.close()


# --- storage ---------------------------------------------------------------------------


def test_plain_values_are_readable_in_sql_and_others_are_kept_exactly(tmp_path):
    path = str(tmp_path / "g.db")
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": ["hi", {"role": "user"}], "raw": b"\x00\xff", "seen": {1, 2}}
    checkpoint["channel_versions"] = {"messages": 1, "raw": 1, "seen": 1}
    args = ({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, checkpoint, {"source": "input", "step": -1},
            {"messages": 1, "raw": 1, "seen": 1})
    oracle = InMemorySaver()
    expected = oracle.get_tuple(oracle.put(*args))
    with EventKernelSaver.from_conn_string(path) as saver:
        got = saver.get_tuple(saver.put(*args))
        assert got == expected
        assert got is not None and got.checkpoint["channel_values"]["seen"] == {1, 2}
    conn = sqlite3.connect(path)
    (messages,) = conn.execute(
        "SELECT json_extract(data, '$.values.messages.value.value') FROM journal WHERE type = 'graph.checkpoint_saved'"
    ).fetchone()
    assert msgspec.json.decode(messages) == ["hi", {"role": "user"}]
    for channel in ("raw", "seen"):  # not plain JSON: the serializer's bytes, in base64
        (b64,) = conn.execute(f"SELECT json_extract(data, '$.values.{channel}.value.base64') FROM journal").fetchone()
        assert b64
    # stored once: the projection holds positions, not values
    assert conn.execute("SELECT count(*) FROM graph_values").fetchone() == (3,)
    assert "messages" not in str(conn.execute("SELECT * FROM graph_checkpoints").fetchall()[0][6])
    conn.close()


def test_a_read_hands_each_value_over_once_and_copies_one_it_returns_twice(tmp_path):
    """With LangGraph's serializer, a plain value comes back as the journal
    decoded it (no msgpack round trip); a value two checkpoints of one list
    share (a channel whose version did not change) is not one object in
    both; and the answers equal those of the serializer's own decoding."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class Decoding(JsonPlusSerializer):  # not the exact class: every value through loads_typed
        pass

    path = str(tmp_path / "g.db")
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    with EventKernelSaver.from_conn_string(path) as saver:
        first = empty_checkpoint()
        first["channel_values"] = {"messages": ["hi", {"role": "user"}], "raw": b"\x00"}
        first["channel_versions"] = {"messages": "1", "raw": "1"}
        saved = saver.put(config, first, {"source": "input", "step": -1}, {"messages": "1", "raw": "1"})
        saver.put_writes(saved, [("messages", ["pending"])], "task-1")
        second = empty_checkpoint()
        second["channel_values"] = {"messages": ["hi", {"role": "user"}], "raw": b"\x00"}
        second["channel_versions"] = {"messages": "1", "raw": "1"}  # unchanged: read from the first's event
        saver.put(saved, second, {"source": "loop", "step": 0}, {})
        newest, oldest = saver.list(config)
        values = [t.checkpoint["channel_values"]["messages"] for t in (newest, oldest)]
        assert values[0] == values[1] == ["hi", {"role": "user"}] and values[0] is not values[1]
        values[0][1]["role"] = "changed"
        assert values[1] == ["hi", {"role": "user"}]
        assert oldest.pending_writes == [("task-1", "messages", ["pending"])]
        decoding = EventKernelSaver(saver.kernel, serde=Decoding())
        assert list(decoding.list(config)) == list(saver.list(config))
        assert decoding.get_tuple(config) == saver.get_tuple(config)


def _containers(value: Any, into: set[int]) -> set[int]:
    """The ids of every list, dict and set inside a value."""
    if isinstance(value, (list, dict, set)):
        into.add(id(value))
        for item in (value.values() if isinstance(value, dict) else value):
            _containers(item, into)
    return into


def test_no_two_tuples_of_a_read_share_a_value_whatever_holds_it(tmp_path):
    """Values a read gives back are handed over as decoded where nothing else
    in the answer is given the same decoded object: a value saved before
    the page and shared by two of its checkpoints, the checkpoints and
    writes a copied thread shares with its source, and events a compaction
    kept with its base each come back as separate objects, equal to what
    the serializer's own decoding gives."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class Decoding(JsonPlusSerializer):  # not the exact class: every value through loads_typed
        pass

    path = str(tmp_path / "g.db")
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    with EventKernelSaver.from_conn_string(path) as saver:
        previous = config
        for step in range(4):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": [{"n": 0}], "step": [step]}
            checkpoint["channel_versions"] = {"messages": 1, "step": step + 1}  # messages saved once, first
            previous = saver.put(previous, checkpoint, {"source": "loop", "step": step},
                                 {"messages": 1, "step": step + 1} if step == 0 else {"step": step + 1})
            saver.put_writes(previous, [("messages", [{"w": step}])], "task")
        saver.copy_thread("t", "u")

        def reads(s: EventKernelSaver) -> list[list[Any]]:
            return [list(s.list(config, limit=2)), list(s.list(config)), list(s.list(None)),
                    list(s.list(None, filter={"step": 3})), [s.get_tuple(config)]]

        decoding = EventKernelSaver(saver.kernel, serde=Decoding())
        for when in ("live", "compacted"):
            if when == "compacted":
                saver.kernel.compact(before=saver.kernel.head, archive=str(tmp_path / "archive.db"))
            answers = reads(saver)
            assert answers == reads(decoding), when
            assert len(answers[2]) == 8
            for answer in answers:
                seen: set[int] = set()
                for t in answer:
                    held = _containers(t.checkpoint["channel_values"], set())
                    for write in t.pending_writes:
                        _containers(write[2], held)
                    assert not held & seen, when
                    seen |= held


def test_a_checkpoint_reads_the_values_saved_with_it(tmp_path):
    """A channel's value comes from the checkpoint's own save when that save
    holds it at the checkpoint's version (as SqliteSaver, which keeps each
    checkpoint whole): a later checkpoint saving the same version again,
    with another value, changes only what it and those after it read."""
    with EventKernelSaver.from_conn_string(str(tmp_path / "g.db")) as saver:
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        first = empty_checkpoint()
        first["channel_values"], first["channel_versions"] = {"n": "first"}, {"n": 1}
        one = saver.put(config, first, {"step": 0}, {"n": 1})
        second = empty_checkpoint()
        second["channel_values"], second["channel_versions"] = {"n": "second"}, {"n": 1}
        two = saver.put(one, second, {"step": 1}, {"n": 1})  # the same version, saved again
        third = empty_checkpoint()
        third["channel_values"], third["channel_versions"] = {}, {"n": 1}
        saver.put(two, third, {"step": 2}, {})  # saved before: the latest saving of that version
        got = [t.checkpoint["channel_values"] for t in saver.list(config)]
        assert got == [{"n": "second"}, {"n": "second"}, {"n": "first"}]
        assert saver.get_tuple(one).checkpoint["channel_values"] == {"n": "first"}
        assert saver.kernel.graphs.get("t", "", one["configurable"]["checkpoint_id"]).values == {
            "n": ("msgpack", msgspec.msgpack.encode("first"))}


def test_any_thread_id_langgraph_accepts_is_accepted(tmp_path):
    with EventKernelSaver.from_conn_string(str(tmp_path / "g.db")) as saver:
        for thread in ["", "#x", "a" * 5000, "nul\x00inside", "white space/and:colons", 42]:
            config = saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": "ns\x00"}},
                               empty_checkpoint(), {"step": 0}, {})
            got = saver.get_tuple(config)
            assert got is not None and got.config["configurable"]["thread_id"] == thread
            assert len(list(saver.list({"configurable": {"thread_id": thread}}))) == 1
        assert saver.kernel.verify().ok


def test_a_thread_is_one_correlation_id_and_its_past_can_be_read(tmp_path):
    with EventKernelSaver.from_conn_string(str(tmp_path / "g.db")) as saver:
        config = {"configurable": {"thread_id": "chat-1", "checkpoint_ns": ""}}
        first = empty_checkpoint()
        first["channel_values"], first["channel_versions"] = {"n": 1}, {"n": 1}
        stored = saver.put(config, first, {"step": 0}, {"n": 1})
        saver.put_writes(stored, [("n", 2)], "task")
        position = saver.kernel.head
        saver.delete_thread("chat-1")
        assert saver.get_tuple(config) is None
        assert [e.type for e in saver.kernel.log(correlation_id="chat-1")] == [
            "graph.checkpoint_saved", "graph.writes_saved", "graph.thread_deleted"]
        with saver.kernel.at(position) as past:
            then = EventKernelSaver(past).get_tuple(config)
        assert then is not None and then.checkpoint["channel_values"] == {"n": 1}
        assert then.pending_writes == [("task", "n", 2)]
