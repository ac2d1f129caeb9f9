"""Erasing a subject's payloads from the journal itself: no byte of them left
in the file, the chain still verified, the projections rebuilt without them,
the past showing them erased, and the erasure recorded."""

from __future__ import annotations

import glob
import os
import random

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.integrations.langgraph import EventKernelSaver

from support import NOTES, Noted, live_tables, rebuilt_tables, refused
from workload import commands, run_one

SECRETS = (b"SSN-123-45-6789", b"4111-1111-1111-1111", b"PHONE-555-0101")


def leftovers(path: str) -> list[bytes]:
    """Which secrets still appear anywhere in the file, its WAL or its shared memory."""
    found = []
    for name in glob.glob(path + "*"):
        with open(name, "rb") as f:
            raw = f.read()
        found += [s for s in SECRETS if s in raw]
    return found


def test_a_session_erased_leaves_no_byte_and_the_chain_verifies(tmp_path, clock):
    path = str(tmp_path / "e.db")
    with eventkernel.open(path, clock=clock) as k:
        k.sessions.create("app", "alice", session_id="s-alice", state={"ssn": SECRETS[0].decode()})
        k.sessions.append_event("s-alice", actor="alice", content={"card": SECRETS[1].decode()},
                                state_delta={"user:phone": SECRETS[2].decode()})
        k.sessions.create("app", "bob", session_id="s-bob", state={"topic": "tea"})
        k.sessions.append_event("s-bob", actor="bob", content="hello")
        k.checkpoint("truncate")
        assert leftovers(path) == list(SECRETS)  # in the file before
        before = k.head
        erasure = k.erase(stream="session:s-alice", reason="GDPR request #42", actor="dpo")
        assert (erasure.events, erasure.projections, erasure.wal_cleared) == (2, ["sessions"], True)
        assert leftovers(path) == []
        report = k.verify()
        assert report.ok, report.problems
        assert rebuilt_tables(k) == live_tables(k) == rebuilt_tables(k, bulk=False)
        with pytest.raises(eventkernel.NotFound):
            k.sessions.get("s-alice")
        assert k.sessions.shared_state("app", "alice") == {}
        assert k.sessions.get("s-bob").state == {"topic": "tea"}
        events = list(k.read())
        assert [(r.type, r.event) for r in events[:2]] == [("session.created", eventkernel.Erased()),
                                                            ("session.event_appended", eventkernel.Erased())]
        (recorded,) = [r for r in events if r.type == "journal.payloads_erased"]
        assert (recorded.position, recorded.event.reason, recorded.event.stream, recorded.event.count) == (
            erasure.position, "GDPR request #42", "session:s-alice", 2)
        assert recorded.meta["actor"] == "dpo"
        with k.at(before) as then:  # the past shows the subject erased, not its data
            with pytest.raises(eventkernel.NotFound):
                then.sessions.get("s-alice")
            assert then.sessions.get("s-bob").event_count == 1
        # the session's id may be used again, on the same stream
        again = k.sessions.create("app", "alice", session_id="s-alice")
        assert again.state == {} and k.verify().ok
    with eventkernel.open(path, read_only=True) as k:
        assert k.verify().ok


def test_an_erasure_needs_every_projection_of_the_file(tmp_path, clock):
    """A process opened without an application's projection cannot rebuild
    it, so its erasure is refused (nothing written, the file not rewritten);
    from a process that has it, the projection is rebuilt and no byte of
    the subject is left."""
    path = str(tmp_path / "e.db")
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        k.append("note:ann", [Noted(text=SECRETS[0].decode())])
        k.append("note:bob", [Noted(text="nothing secret")])
    with eventkernel.open(path, clock=clock) as k:
        with refused(k, eventkernel.CommandRejected, "projections this process does not apply \\('notes'"):
            k.erase(stream="note:ann", reason="GDPR")
        k.checkpoint("truncate")
        assert leftovers(path) == [SECRETS[0]]
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        erasure = k.erase(stream="note:ann", reason="GDPR")
        assert erasure.projections == ["notes"] and erasure.wal_cleared
        assert k.table("notes")[1] == [(2, "nothing secret")]
        assert leftovers(path) == []
        assert k.verify().ok


def test_a_langgraph_thread_erased_by_its_correlation_id(tmp_path):
    from langgraph.checkpoint.base import empty_checkpoint

    path = str(tmp_path / "g.db")
    with EventKernelSaver.from_conn_string(path) as saver:
        for thread in ("secret-thread", "other"):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"notes": SECRETS[0].decode() if thread == "secret-thread" else "fine",
                                            "bulk": random.Random(0).randbytes(100_000) if thread == "secret-thread" else b""}
            checkpoint["channel_versions"] = {"notes": 1, "bulk": 1}
            config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            stored = saver.put(config, checkpoint, {"source": "input", "step": -1}, {"notes": 1, "bulk": 1})
            saver.put_writes(stored, [("notes", SECRETS[1].decode() if thread == "secret-thread" else "ok")], "t1")
        saver.kernel.checkpoint("truncate")
        assert leftovers(path) == list(SECRETS[:2])
        size = os.path.getsize(path)
        saver.delete_thread("secret-thread")
        erasure = saver.kernel.erase(correlation_id="secret-thread", reason="user asked")
        assert erasure.events == 3 and erasure.projections == ["graphs"]  # put, put_writes, delete_thread
        assert leftovers(path) == []
        assert os.path.getsize(path) < size - 90_000  # the thread's pages went back to the file system
        assert saver.get_tuple({"configurable": {"thread_id": "secret-thread", "checkpoint_ns": ""}}) is None
        other = saver.get_tuple({"configurable": {"thread_id": "other", "checkpoint_ns": ""}})
        assert other.checkpoint["channel_values"] == {"notes": "fine", "bulk": b""}
        assert other.pending_writes[0][2] == "ok"
        assert saver.kernel.verify().ok


def test_a_memory_namespace_erased_by_stream_prefix(k):
    k.memory.put("user:alice", "ssn", SECRETS[0].decode(), ttl_ms=60_000)
    k.memory.touch("user:alice", "ssn")
    k.memory.put("user:alice", "phone", SECRETS[2].decode())
    k.memory.put("user:alicia", "kept", "not hers")
    erasure = k.erase(stream_prefix="memory:user:alice/", reason="retention")
    assert erasure.events == 2  # the touch, on memory_ttl:, names only the address
    assert [e.namespace for e in k.memory.list("user:")] == ["user:alicia"]
    assert k.memory.history("user:alice", "ssn") == []
    assert rebuilt_tables(k) == live_tables(k) and k.verify().ok


def test_refusals_write_nothing(k):
    k.sessions.create("app", "alice", session_id="s1")
    with refused(k, eventkernel.NotFound, "no event has stream 'session:nobody'"):
        k.erase(stream="session:nobody", reason="r")
    with refused(k, eventkernel.InvalidArgument, "exactly one of"):
        k.erase(stream="session:s1", correlation_id="x", reason="r")
    with refused(k, eventkernel.InvalidArgument, "reason must not be empty"):
        k.erase(stream="session:s1", reason="")
    first = k.erase(stream="session:s1", reason="r")
    head = k.head
    again = k.erase(stream="session:s1", reason="again")  # nothing new to record: the file is only rewritten
    assert (again.position, again.events, again.projections, k.head) == (first.position, 0, [], head)
    with refused(k, eventkernel.NotFound):
        k.erase(stream_prefix="erasure:", reason="the erasures themselves stay")


def test_the_journal_stays_append_only_but_for_an_erasure(k):
    k.memory.put("user:a", "k", "v")
    k.erase(stream="memory:user:a/k", reason="r")
    raw = k._db.conn
    for sql in ("UPDATE journal SET data = 'null', meta = NULL WHERE position = 2",  # not recorded as erased
                "UPDATE journal SET stream = 'x:y' WHERE position = 1",
                "UPDATE journal SET data = '{}' WHERE position = 1",
                "DELETE FROM journal WHERE position = 1",
                "UPDATE erased SET data_digest = 'x'",
                "DELETE FROM erased"):
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            raw.execute(sql)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(commands, max_size=30), data=st.data())
def test_any_stream_erased_keeps_rebuilt_equal_to_live(ops, data):
    clock = eventkernel.FrozenClock(1_700_000_000_000)
    with eventkernel.open(":memory:", clock=clock) as k:
        for op in ops:
            try:
                run_one(k, clock, op, None)
            except eventkernel.KernelError:
                pass
        streams = sorted({r.stream for r in k.read()})
        if not streams:
            return
        victim = data.draw(st.sampled_from(streams), label="erased stream")
        k.erase(stream=victim, reason="property")
        assert k.verify().ok
        assert rebuilt_tables(k) == live_tables(k) == rebuilt_tables(k, bulk=False)
        for op in data.draw(st.lists(commands, max_size=10), label="after"):
            try:
                run_one(k, clock, op, None)
            except eventkernel.KernelError:
                pass
        assert k.verify().ok
        assert rebuilt_tables(k) == live_tables(k)


def test_the_command(tmp_path, capsys):
    from eventkernel.cli import main as cli

    path = str(tmp_path / "c.db")
    with eventkernel.open(path) as k:
        k.memory.put("user:a", "k", SECRETS[0].decode())
    assert cli(["erase", path, "--prefix", "memory:user:a/", "--reason", "asked", "--actor", "dpo"]) == 0
    assert "erased the payloads of 1 events" in capsys.readouterr().out
    assert leftovers(path) == []
    assert cli(["erase", path, "--stream", "memory:user:b/k", "--reason", "nothing"]) == 1
    assert "no event has stream 'memory:user:b/k'" in capsys.readouterr().err


def test_backup_and_erase_are_awaitable(tmp_path):
    import asyncio

    import eventkernel.aio

    async def main() -> None:
        async with eventkernel.aio.open(str(tmp_path / "a.db")) as k:
            await k.memory.put("user:a", "k", SECRETS[0].decode())
            assert await k.backup(str(tmp_path / "b.db")) == 1
            done = await k.erase(stream="memory:user:a/k", reason="asked")
            assert done.events == 1 and leftovers(str(tmp_path / "a.db")) == []
        assert leftovers(str(tmp_path / "b.db")) == [SECRETS[0]]  # a backup is a separate file: erase it too

    asyncio.run(main())


def test_the_framework_backends_can_erase_what_they_delete(tmp_path):
    import asyncio

    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types
    from langgraph.checkpoint.base import empty_checkpoint

    from eventkernel.integrations.adk import EventKernelSessionService

    path = str(tmp_path / "both.db")
    with eventkernel.open(path) as k:
        saver = EventKernelSaver(k, erase_deleted=True)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"], checkpoint["channel_versions"] = {"notes": SECRETS[0].decode()}, {"notes": 1}
        saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, checkpoint, {}, {"notes": 1})
        sessions = EventKernelSessionService(k, erase_deleted=True)

        async def chat() -> None:
            s = await sessions.create_session(app_name="app", user_id="u", session_id="s")
            await sessions.append_event(s, Event(invocation_id="i", author="user", actions=EventActions(
                state_delta={"user:phone": SECRETS[2].decode()}), content=types.Content(
                role="user", parts=[types.Part(text=SECRETS[1].decode())])))
            await sessions.delete_session(app_name="app", user_id="u", session_id="s")
            assert await sessions.get_user_state(app_name="app", user_id="u") == {}  # erased with the session

        k.checkpoint("truncate")
        asyncio.run(chat())
        saver.delete_thread("t")
        assert leftovers(path) == []
        assert k.verify().ok and rebuilt_tables(k) == live_tables(k)


def test_erase_and_backup_refuse_to_run_inside_a_transaction(k, tmp_path):
    k.memory.put("user:a", "k", "v")
    with k.transaction():
        k.memory.put("user:a", "k2", "uncommitted")
        with pytest.raises(eventkernel.InvalidArgument, match="inside this thread's transaction"):
            k.erase(stream="memory:user:a/k", reason="r")
        with pytest.raises(eventkernel.InvalidArgument, match="inside this thread's transaction"):
            k.backup(str(tmp_path / "copy.db"))
    assert k.memory.get("user:a", "k").value == "v" and k.memory.get("user:a", "k2").value == "uncommitted"
    assert not (tmp_path / "copy.db").exists() and k.verify().ok
