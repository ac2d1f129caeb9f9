from __future__ import annotations

import apsw
import pytest

import eventkernel

from support import refused

BOTH_ENGINES = True  # the tests taking ``k`` run on a file and on PostgreSQL


def test_commands_on_a_view_are_read_only_and_append_nothing(k):
    item = k.work.enqueue("t", 1)
    with k.at(k.head) as view:
        for call in (
            lambda: view.work.claim("w"),
            lambda: view.work.enqueue("t", 2),
            lambda: view.memory.put("ns", "k", 1),
            lambda: view.sessions.create("a", "u"),
            lambda: view.tasks.create("x"),
        ):
            with refused(k, eventkernel.ReadOnly, "read-only view of the journal as of position 1"):
                call()
        assert view.work.get(item).status == "pending"


def test_a_view_does_not_see_later_events(k):
    k.memory.put("ns", "k", "old")
    at = k.head
    k.memory.put("ns", "k", "new")
    with k.at(at) as view:
        assert view.head == at and view.position == at
        assert view.memory.get("ns", "k").value == "old"
        assert [r.position for r in view.read()] == [1]
        assert view.stream_version("memory:ns/k") == 1
    with k.at(0) as empty:
        assert empty.head == 0 and empty.memory.list() == []


def test_a_view_by_time(k, clock):
    k.work.enqueue("t", 1)
    t1 = clock()
    clock.advance(1_000)
    k.work.enqueue("t", 2)
    with k.at(time_ms=t1 + 999) as view:
        assert view.head == 1 and len(view.work.list()) == 1
    with k.at(time_ms=t1 - 1) as view:
        assert view.head == 0


def test_bad_positions(k):
    k.work.enqueue("t", 1)
    with pytest.raises(eventkernel.InvalidArgument, match="position 5 is past the journal head 1"):
        k.at(5)
    with pytest.raises(eventkernel.InvalidArgument, match="exactly one"):
        k.at()
    with pytest.raises(eventkernel.InvalidArgument, match="exactly one"):
        k.at(1, time_ms=5)
    with pytest.raises(eventkernel.InvalidArgument, match="position must be >= 0"):
        k.at(-1)


def test_a_view_of_a_file_survives_later_appends_by_others(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        k.work.enqueue("t", 1)
        with k.at(1) as view:
            with eventkernel.open(db_path, clock=clock) as other:
                other.work.enqueue("t", 2)
            assert [r.position for r in view.read()] == [1]
            assert len(view.work.list()) == 1


def test_a_view_by_time_never_shows_an_event_recorded_later(tmp_path):
    # Files written by 0.1.0 may hold times that went backwards (a clock
    # stepped back); rows are written here directly, chained as the kernel does.
    from eventkernel import journal

    path = str(tmp_path / "j.db")
    eventkernel.open(path).close()
    conn = apsw.Connection(path)
    prev = journal.GENESIS_HASH
    for position, recorded_at in enumerate([1_000, 5_000, 2_000, 6_000], start=1):
        row = (position, "note:x", position, "test.at_note", 1, "{}", None, None, None, recorded_at)
        prev = journal.row_hash(prev, *row)
        conn.execute("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, prev))
    conn.execute("UPDATE projection_positions SET position = 4")
    conn.close()
    with eventkernel.open(path, read_only=True) as k:
        assert k.position_at(999) == 0
        assert k.position_at(4_000) == 1  # position 2 was recorded at 5_000: not yet
        assert k.position_at(5_500) == 3
        assert k.position_at(10_000) == 4
        with k.at(time_ms=4_000) as view:
            assert view.head == 1


def test_a_relative_path_stays_the_same_file_after_chdir(tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    with eventkernel.open("rel.db", clock=clock) as k:
        k.work.enqueue("t", 1)
        other = tmp_path / "elsewhere"
        other.mkdir()
        monkeypatch.chdir(other)
        (other / "rel.db").write_bytes(b"")  # a different file of the same name
        with k.at(1) as view:
            assert len(view.work.list()) == 1
        assert k.path == str(tmp_path / "rel.db")
        assert "rel.db" in k.stats().files and k.stats().files["rel.db"] > 0
        assert k.verify().ok
    assert (other / "rel.db").read_bytes() == b""
