from __future__ import annotations

import pytest
from support import refused

import eventkernel


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
