"""The journal's contract, run on both engines: an SQLite file
(``eventkernel.open``) and PostgreSQL (``eventkernel.postgres.open_journal``).
Every test here runs once per engine with the same assertions; the property
at the end writes the same random appends to both and requires the same
outcomes and the same rows, hashes included."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel import postgres
from eventkernel.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidArgument,
    JournalBusy,
    KernelError,
)
from tests.conftest import START_MS
from tests.integration.pg_children import Noted, raw_rows

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Any, clock: eventkernel.FrozenClock) -> Iterator[Any]:
    if request.param == "sqlite":
        with eventkernel.open(str(tmp_path / "j.db"), clock=clock) as k:
            yield k
    else:
        url = request.getfixturevalue("pg_url")
        with postgres.open_journal(url, clock=clock) as j:
            yield j


def test_appends_read_back_in_order(engine: Any) -> None:
    assert engine.head == 0
    assert engine.append("note:a", [Noted(text="one"), Noted(text="two")]) == 2
    assert engine.append("note:b", Noted(text="three"), correlation_id="c1", meta={"who": "me"}) == 3
    got = [(r.position, r.stream, r.version, r.event) for r in engine.read()]
    assert got == [(1, "note:a", 1, Noted(text="one")), (2, "note:a", 2, Noted(text="two")),
                   (3, "note:b", 1, Noted(text="three"))]
    assert [r.position for r in engine.read(stream="note:a", after=1)] == [2]
    assert [e.meta for e in engine.log(correlation_id="c1")] == [{"who": "me"}]
    assert [e.position for e in engine.log(types=["engines.noted"], limit=2)] == [1, 2]
    assert engine.stream_version("note:a") == 2 and engine.stream_version("note:zzz") == 0
    assert engine.head == 3
    report = engine.verify()
    assert report.ok and report.head == 3


def _refused(engine: Any, call: Any, error: type[BaseException], words: str) -> None:
    before = raw_rows(engine)
    with pytest.raises(error) as e:
        call()
    assert words in str(e.value)
    assert isinstance(e.value, KernelError)
    assert raw_rows(engine) == before  # nothing written
    assert engine.head == len(before)


def test_refusals_write_nothing(engine: Any) -> None:
    engine.append("note:a", [Noted(text="x")], event_ids=["e-1"])
    _refused(engine, lambda: engine.append("note:a", [Noted(text="y")], expected_version=0),
             ConcurrencyConflict, "expected version 0, the stream is at version 1")
    _refused(engine, lambda: engine.append("note:b", [Noted(text="other")], event_ids=["e-1"]),
             IdempotencyConflict, "'e-1' was already used at position 1")
    _refused(engine, lambda: engine.append("work_item:x", [Noted(text="y")]), InvalidArgument, "kind 'work_item'")
    _refused(engine, lambda: engine.append("NoKind", [Noted(text="y")]), InvalidArgument, "'<kind>:<id>'")
    _refused(engine, lambda: engine.append("note:a", []), InvalidArgument, "non-empty list")
    _refused(engine, lambda: engine.append("note:a", [Noted(text="y")], event_ids=["cmd:1"]),
             InvalidArgument, "reserved for command ids")
    _refused(engine, lambda: engine.append("note:a", [Noted(text="y")], meta={"x": {1, 2}}), InvalidArgument, "meta")
    # an exact retry appends nothing and answers the original position
    assert engine.append("note:a", [Noted(text="x")], event_ids=["e-1"]) == 1
    assert engine.head == 1


def test_transaction_commits_together_and_a_refusal_undoes_only_itself(engine: Any) -> None:
    with engine.transaction():
        engine.append("note:a", [Noted(text="1")])
        with pytest.raises(ConcurrencyConflict):
            engine.append("note:a", [Noted(text="2")], expected_version=5)
        engine.append("note:a", [Noted(text="3")], expected_version=1)
        assert engine.head == 2  # the transaction's own appends are seen inside it
        assert [r.event.text for r in engine.read()] == ["1", "3"]
        engine.append("note:b", [Noted(text="4")], event_ids=["e-4"])
        assert engine.stream_version("note:b") == 1
        assert engine.append("note:b", [Noted(text="4")], event_ids=["e-4"]) == 3  # its retry, in it too
    assert [r.event.text for r in engine.read()] == ["1", "3", "4"]
    with pytest.raises(RuntimeError), engine.transaction():
        engine.append("note:a", [Noted(text="lost")])
        raise RuntimeError("the block fails")
    assert engine.head == 3 and engine.stream_version("note:a") == 2
    assert engine.verify().ok


def test_another_thread_waits_for_a_transaction(engine: Any) -> None:
    done: list[Any] = []
    with engine.transaction():
        engine.append("note:a", [Noted(text="mine")])
        t = threading.Thread(target=lambda: done.append(engine.append("note:b", [Noted(text="theirs")])))
        t.start()
        time.sleep(0.3)
        assert done == []  # waiting, not joined to this transaction
    t.join(10)
    assert done == [2]
    assert [r.stream for r in engine.read()] == ["note:a", "note:b"]


def test_the_clock_never_goes_back(engine: Any, clock: eventkernel.FrozenClock) -> None:
    engine.append("note:a", [Noted(text="1")])
    clock._now -= 5_000  # the clock steps back
    engine.append("note:a", [Noted(text="2")])
    assert [e.recorded_at for e in engine.log()] == [START_MS, START_MS]


# --- the same appends on both engines: the same outcomes, the same bytes ---------

streams = st.sampled_from(["note:a", "note:b", "order:1", "x:ünï ✓"])
ops = st.lists(
    st.tuples(
        streams,
        st.lists(st.tuples(st.text(max_size=8), st.integers(-2**63, 2**63 - 1)), min_size=1, max_size=3),
        st.one_of(st.none(), st.integers(0, 4)),                       # expected_version
        st.one_of(st.none(), st.sampled_from(["id-1", "id-2", "id-3"])),  # an event id for the first event
        st.one_of(st.none(), st.sampled_from(["c-1", "c-2"])),          # correlation id
        st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2)),
        st.integers(0, 3_000),                                           # the clock moves
    ),
    min_size=1, max_size=12,
)


def _outcome(j: Any, op: Any) -> Any:
    stream, events, expected, event_id, correlation, meta, advance = op
    try:
        return j.append(stream, [Noted(text=t, n=n) for t, n in events], expected_version=expected,
                        event_ids=None if event_id is None else [event_id] + [None] * (len(events) - 1),
                        correlation_id=correlation, meta=meta)
    except KernelError as e:
        return type(e).__name__, str(e)


@settings(max_examples=25)
@given(ops)
def test_both_engines_write_the_same_journal(pg_cluster: Any, tmp_path_factory: Any, ops: Any) -> None:
    clock_a, clock_b = eventkernel.FrozenClock(START_MS), eventkernel.FrozenClock(START_MS)
    path = str(tmp_path_factory.mktemp("engines") / "j.db")
    schema = "s_" + uuid.uuid4().hex[:10]
    with eventkernel.open(path, clock=clock_a) as k, \
            postgres.open_journal(pg_cluster.url(), schema=schema, clock=clock_b) as j:
        for op in ops:
            assert _outcome(k, op) == _outcome(j, op)
            clock_a.advance(op[-1])
            clock_b.advance(op[-1])
        assert raw_rows(k) == raw_rows(j)
        assert k.verify().head_hash == j.verify().head_hash == j.head_hash()[1]


def test_busy_timeout_bounds_the_wait_for_the_write_lock(pg_url: str) -> None:
    """Another client holding the journal's lock (a hung transaction) makes
    a writer fail with JournalBusy after busy_timeout_ms, not hang."""
    import psycopg

    with postgres.open_journal(pg_url, busy_timeout_ms=300) as j:
        j.append("note:a", [Noted(text="before")])
        with psycopg.connect(pg_url) as other:
            other.execute("SET search_path TO eventkernel")
            other.execute("SELECT * FROM journal_head FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(JournalBusy, match="lock"):
                j.append("note:a", [Noted(text="blocked")])
            assert time.monotonic() - started < 5
            other.rollback()
        assert j.head == 1
        assert j.append("note:a", [Noted(text="after")]) == 2
        assert j.verify().ok


# --- PostgreSQL: a group's transaction in one round trip -------------------------


def _asked_before_commit(j: Any, append: Any) -> list[str]:
    """The requests for an answer (Flush, Sync) the journal's writer
    connection sent while ``append`` ran, before it sent its COMMIT: none
    when the whole transaction went in one round trip."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp()
    pgconn = j._writer.raw.pgconn
    pgconn.trace(fd)
    try:
        append()
    finally:
        pgconn.untrace()
        os.close(fd)
    with open(path, encoding="utf-8", errors="replace") as f:
        sent = [[field.strip() for field in line.split("\t")] for line in f if "\tF\t" in line]
    os.remove(path)
    commit = next(i for i, fields in enumerate(sent) if "COMMIT" in fields[-1])
    return [fields[3] for fields in sent[:commit] if fields[3] in ("Flush", "Sync")]


def test_an_append_by_the_process_that_made_the_last_commit_takes_one_round_trip(pg_url: str) -> None:
    with postgres.open_journal(pg_url, one_round_trip=True) as j:
        # The first learns the head, under the lock: an answer awaited before the rows go.
        assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="one")], event_ids=["e1"])) == ["Flush"]
        # Then the lock, its check, the rows and the COMMIT go at once.
        assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="two")], event_ids=["e2"])) == []
        assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="three")],
                                                        expected_version=2)) == []
        assert [(r.position, r.version, r.event_id) for r in j.read()] == [(1, 1, "e1"), (2, 2, "e2"), (3, 3, None)]
        assert j.verify().ok
    for options in ({"one_round_trip": False}, {}):  # every transaction takes the lock first (the default)
        with postgres.open_journal(pg_url, **options) as j:  # type: ignore[arg-type]
            assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="four")])) == ["Flush"]
            assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="five")])) == ["Flush"]
    # a clock of the caller's: its time is the same either way, so the default takes one round trip
    with postgres.open_journal(pg_url, clock=lambda: time.time_ns() // 1_000_000) as j:
        assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="six")])) == ["Flush"]
        assert _asked_before_commit(j, lambda: j.append("note:a", [Noted(text="seven")])) == []
        assert j.head == 9 and j.verify().ok
    with pytest.raises(InvalidArgument, match="open_journal refused: one_round_trip must be a bool or None"):
        postgres.open_journal(pg_url, one_round_trip=1)  # type: ignore[arg-type]


def test_an_optimistic_append_that_finds_the_journal_moved_on_runs_again_under_the_lock(pg_url: str) -> None:
    with postgres.open_journal(pg_url, one_round_trip=True) as a, postgres.open_journal(pg_url) as b:
        a.append("note:a", [Noted(text="a1")])
        a.append("note:a", [Noted(text="a2")])  # a knows the head: 2, and note:a at 2
        b.append("note:a", [Noted(text="b1")])  # another process moves both on
        # a's version of note:a is old: the append is decided again under the lock, and succeeds.
        assert a.append("note:a", [Noted(text="a3")], expected_version=3) == 4
        b.append("note:b", [Noted(text="b2")])  # the head moves on; note:a does not
        assert a.append("note:a", [Noted(text="a4")]) == 6
        # A real conflict is refused, and writes nothing.
        _refused(a, lambda: a.append("note:a", [Noted(text="late")], expected_version=1), ConcurrencyConflict,
                 "expected version 1")
        assert [(r.position, r.stream, r.version) for r in a.read()] == [
            (1, "note:a", 1), (2, "note:a", 2), (3, "note:a", 3), (4, "note:a", 4), (5, "note:b", 1),
            (6, "note:a", 5)]
        assert a.verify().ok and b.verify().ok


def test_an_optimistic_append_found_stale_logs_no_warning(pg_url: str, caplog: Any) -> None:
    """An append with event ids whose one-round-trip try finds the journal
    moved on runs again under the lock, quietly: the pipeline the check
    aborted is ended without psycopg's warning (one on every such retry)."""
    caplog.set_level(logging.DEBUG)
    with postgres.open_journal(pg_url, one_round_trip=True) as a, postgres.open_journal(pg_url) as b:
        a.append("note:a", [Noted(text="a1")])
        a.append("note:a", [Noted(text="a2")])
        b.append("note:a", [Noted(text="b1")])
        assert a.append("note:a", [Noted(text="a3")], event_ids=["a3"]) == 4
        assert a._contended_until > time.monotonic()  # (the try was found stale)
        assert a.verify().ok
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_retry_of_an_event_id_returns_its_first_position_after_an_optimistic_try(pg_url: str) -> None:
    with postgres.open_journal(pg_url, one_round_trip=True) as j:
        first = j.append("note:a", [Noted(text="once")], event_ids=["x"])
        j.append("note:a", [Noted(text="other")])  # j knows the head
        # Taken as new, the id fails the commit: the retry runs under the lock and finds it.
        assert j.append("note:a", [Noted(text="once")], event_ids=["x"]) == first
        _refused(j, lambda: j.append("note:a", [Noted(text="changed")], event_ids=["x"]), IdempotencyConflict, "x")
        assert j.head == 2 and j.verify().ok
