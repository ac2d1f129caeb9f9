"""Inside a larger transaction a command takes a savepoint only where it could
fail after writing; where it cannot undo just itself, the whole transaction
is rolled back and nothing of it commits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import eventkernel
from eventkernel.projections import work_items

from support import snapshot

BOTH_ENGINES = True  # the tests taking ``k`` run on a file and on PostgreSQL


def _statements(k: eventkernel.Kernel) -> list[str]:
    seen: list[str] = []

    def trace(_cursor: object, sql: str, _bindings: object) -> bool:
        seen.append(sql)
        return True

    k._db.conn.exec_trace = trace
    return seen


def test_a_command_in_a_transaction_takes_no_savepoint_unless_it_needs_one(k):
    seen = _statements(k)
    with k.transaction():
        first = k.work.enqueue("t", {"n": 1})
        with pytest.raises(eventkernel.NotFound):
            k.work.complete("wi_missing", "w", 1)  # refused while deciding: nothing to undo
        k.work.enqueue("t", {"n": 2})
    k._db.conn.exec_trace = None
    assert not [s for s in seen if s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))], seen
    assert k.work.get(first).status == "pending" and k.head == 2 and k.verify().ok


def _refuses_big_inputs(conn, recorded, event):
    if event.input == {"big": True}:
        raise ValueError("too big for the shadow table")
    conn.execute("INSERT INTO shadow VALUES (?)", (recorded.position,))


SHADOW = SimpleNamespace(NAME="shadow", VERSION=1, HANDLES=frozenset({"work_item.enqueued"}),
                         DDL="CREATE TABLE shadow (position INTEGER PRIMARY KEY)", apply=_refuses_big_inputs)


def test_a_command_whose_events_an_application_projection_folds_undoes_only_itself(db_path, clock):
    with eventkernel.open(db_path, clock=clock, projections=[SHADOW]) as k:
        seen = _statements(k)
        with k.transaction():
            k.work.enqueue("t", {"n": 1})
            with pytest.raises(eventkernel.ProjectionFailed, match="too big for the shadow table"):
                k.work.enqueue("t", {"big": True})
            k.work.enqueue("t", {"n": 2})
        k._db.conn.exec_trace = None
        assert any(s.startswith("SAVEPOINT") for s in seen)
        assert k.head == 2 and [i.input for i in k.work.list()] == [{"n": 1}, {"n": 2}]
        assert [r for (r,) in k._db.conn.execute("SELECT position FROM shadow")] == [1, 2]
        assert k.verify().ok


@pytest.fixture
def broken_projection(monkeypatch):
    """The work_items projection fails on one input, after the journal row was written."""
    apply = work_items.apply

    def failing(conn, recorded, event):
        if getattr(event, "input", None) == {"poison": True}:
            raise RuntimeError("a bug in a projection")
        apply(conn, recorded, event)

    monkeypatch.setattr(work_items, "apply", failing)


def test_a_command_that_fails_after_writing_rolls_back_its_whole_transaction(k, broken_projection):
    k.work.enqueue("before", None)
    before = snapshot(k)
    with pytest.raises(eventkernel.JournalError, match=r"work.enqueue failed \(ProjectionFailed: .*a bug in a "
                                                       r"projection.*\), so the whole transaction it was part of "
                                                       r"is rolled back"), k.transaction():
        k.work.enqueue("t", {"n": 1})
        k.work.enqueue("t", {"poison": True})
    assert snapshot(k) == before
    k.work.enqueue("after", None)  # the kernel goes on
    assert k.head == 2 and k.verify().ok


def test_a_transaction_that_swallowed_such_a_failure_refuses_more_commands_and_commits_nothing(k, broken_projection):
    before = snapshot(k)
    with pytest.raises(eventkernel.JournalError, match="transaction failed: .*nothing of it is committed"):
        with k.transaction():
            k.work.enqueue("t", {"n": 1})
            with pytest.raises(eventkernel.JournalError):
                k.work.enqueue("t", {"poison": True})
            with pytest.raises(eventkernel.JournalError, match=r"work.enqueue refused: work.enqueue failed"):
                k.work.enqueue("t", {"n": 2})
    assert snapshot(k) == before
    assert k.verify().ok


def test_in_a_group_commit_such_a_failure_fails_the_whole_group(k, broken_projection):
    import threading

    before = snapshot(k)
    errors: dict[str, BaseException] = {}

    def enqueue(name: str, value: dict) -> None:
        try:
            k.work.enqueue(name, value)
        except BaseException as e:
            errors[name] = e

    threads = [threading.Thread(target=enqueue, args=(n, v)) for n, v in
               (("a", {"n": 1}), ("poisoned", {"poison": True}), ("c", {"n": 3}))]
    with k.transaction():  # hold the lock so the three queue up and commit as one group
        for t in threads:
            t.start()
        while len(k._db.group.queue) < len(threads):
            threading.Event().wait(0.001)
    for t in threads:
        t.join()
    assert set(errors) == {"a", "poisoned", "c"}
    assert all(isinstance(e, eventkernel.JournalError) for e in errors.values())
    assert snapshot(k) == before
