"""The rules of every domain, as the pure ``decide`` functions of its
commands: state and arguments in, events (or a refusal) out. No SQLite
here — the module refuses to open a connection."""

from __future__ import annotations

import apsw
import msgspec
import pytest

import eventkernel
from eventkernel.events.idempotency import IdempotencyKeyStarted
from eventkernel.events.work import WorkItemClaimed, WorkItemLeaseExpired, WorkItemLeaseExtended
from eventkernel.projections.idempotency_keys import IdempotencyKey
from eventkernel.projections.memory_entries import MemoryEntry
from eventkernel.projections.recovery import RecoveryAttempt
from eventkernel.projections.sessions import Session
from eventkernel.projections.tasks import Agent, Task
from eventkernel.projections.work_items import WorkItem
from eventkernel.services import idempotency, memory, recovery, sessions, tasks, work
from eventkernel.services.runner import NOTHING

NOW = 1_000_000


@pytest.fixture(autouse=True)
def no_sqlite(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("a rule touched SQLite")

    monkeypatch.setattr(apsw, "Connection", refuse)


def item(**changes):
    base = WorkItem("wi-1", "t1", "task", 0, None, "pending", 0, 0, 2, 0, None, None, None, None, None, None, None,
                    1, 1, 1, 1)
    return msgspec.structs.replace(base, **changes)


def leased(**changes):
    lease = {"status": "in_progress", "token": 3, "attempt": 3, "lease_holder": "w1", "lease_acquired_at": NOW - 100,
             "lease_expires_at": NOW + 100, "lease_ms": 200}
    return item(**{**lease, **changes})


def events(decision):
    return [e for emit in decision.emits for e in emit.events]


# --- the work queue -------------------------------------------------------------------


def test_a_claim_takes_the_pending_item_and_fences_it():
    (claimed,) = events(work.decide_claim((item(token=4), []), {"worker": "w2", "lease_ms": 500}, NOW))
    assert claimed == WorkItemClaimed(work_item_id="wi-1", worker="w2", token=5, lease_expires_at=NOW + 500,
                                      lease_ms=500)


def test_a_claim_expires_leases_ahead_until_one_can_be_retried():
    spent = leased(work_item_id="wi-a", retry_count=2, max_retries=2)
    retried = leased(work_item_id="wi-b", retry_count=0)
    decided = events(work.decide_claim((item(work_item_id="wi-c"), [spent, retried]), {"worker": "w", "lease_ms": 9},
                                       NOW))
    assert [type(e).__name__ for e in decided] == ["WorkItemLeaseExpired", "WorkItemLeaseExpired", "WorkItemClaimed"]
    assert (decided[0].retry, decided[1].retry, decided[2].work_item_id) == (False, True, "wi-b")
    assert work.decide_claim((None, []), {"worker": "w", "lease_ms": 9}, NOW) == NOTHING


@pytest.mark.parametrize(("state", "args", "error", "message"), [
    (None, {}, eventkernel.NotFound, "no work item"),
    (item(status="completed"), {}, eventkernel.TerminalState, "already completed"),
    (item(token=3), {}, eventkernel.LeaseNotHeld, "pending: nobody holds a lease on it .the last lease, token 3"),
    (leased(), {"token": 2}, eventkernel.LeaseNotHeld, "the live lease is token 3 held by 'w1'"),
    (leased(), {"worker": "w2"}, eventkernel.LeaseNotHeld, "held by 'w1'"),
    (leased(lease_expires_at=NOW), {}, eventkernel.LeaseNotHeld, "expired at 1000000 .now 1000000."),
])
def test_only_the_holder_of_the_live_lease_may_act(state, args, error, message):
    a = {"work_item_id": "wi-1", "worker": "w1", "token": 3, "output": None, **args}
    with pytest.raises(error, match=message):
        work.decide_complete(state, a, NOW)


def test_a_heartbeat_keeps_the_length_and_never_moves_the_deadline_earlier():
    a = {"work_item_id": "wi-1", "worker": "w1", "token": 3}
    (kept,) = events(work.decide_heartbeat(leased(), {**a, "lease_ms": None}, NOW))
    assert kept == WorkItemLeaseExtended(work_item_id="wi-1", worker="w1", token=3, lease_expires_at=NOW + 200)
    (shorter,) = events(work.decide_heartbeat(leased(), {**a, "lease_ms": 1}, NOW))
    assert (shorter.lease_expires_at, shorter.lease_ms) == (NOW + 100, 1)


def test_a_failure_spends_a_retry_or_ends_the_item():
    a = {"work_item_id": "wi-1", "worker": "w1", "token": 3, "error": "e"}
    assert events(work.decide_fail(leased(retry_count=1), {**a, "retryable": True}, NOW))[0].retry is True
    assert events(work.decide_fail(leased(retry_count=2), {**a, "retryable": True}, NOW))[0].retry is False
    assert events(work.decide_fail(leased(), {**a, "retryable": False}, NOW))[0].retry is False


def test_the_reaper_expires_every_item_it_is_given():
    decided = events(work.decide_expire([leased(work_item_id="a"), leased(work_item_id="b", retry_count=2)], {}, NOW))
    assert [(e.work_item_id, e.retry) for e in decided] == [("a", True), ("b", False)]
    assert all(isinstance(e, WorkItemLeaseExpired) for e in decided)


def test_terminal_items_cannot_be_cancelled():
    with pytest.raises(eventkernel.TerminalState):
        work.decide_cancel(item(status="failed"), {"work_item_id": "wi-1", "reason": "r"}, NOW)


# --- idempotency keys -------------------------------------------------------------------


def key(**changes):
    return msgspec.structs.replace(IdempotencyKey("k", "h1", None, "pending", None, None, 1, 1, None, 1), **changes)


def test_begin_starts_a_new_or_expired_key_and_reports_a_live_one():
    a = {"key": "k", "request_hash": "h1", "ttl_ms": 10, "task_id": None}
    assert events(idempotency.decide_begin(None, a, NOW)) == [
        IdempotencyKeyStarted(key="k", request_hash="h1", task_id=None, expires_at=NOW + 10)]
    assert events(idempotency.decide_begin(key(expires_at=NOW), {**a, "request_hash": "h2"}, NOW))  # expired
    assert idempotency.decide_begin(key(status="completed"), a, NOW).outcome == "completed"
    assert idempotency.decide_begin(key(), a, NOW).outcome == "in_flight"
    with pytest.raises(eventkernel.IdempotencyConflict, match="held until forever by a different request"):
        idempotency.decide_begin(key(), {**a, "request_hash": "h2"}, NOW)


def test_only_a_live_pending_key_completes():
    a = {"key": "k", "response": 1}
    with pytest.raises(eventkernel.TerminalState):
        idempotency.decide_complete(key(status="failed"), a, NOW)
    with pytest.raises(eventkernel.InvalidTransition, match="expired"):
        idempotency.decide_complete(key(expires_at=NOW), a, NOW)
    with pytest.raises(eventkernel.NotFound):
        idempotency.decide_fail(None, {"key": "k", "error": "e"}, NOW)


# --- sessions -----------------------------------------------------------------------------


def session(status):
    return Session("s1", "app", "u", None, status, {}, None, 0, 1, 1, None, None, 1, 1)


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ("created", "active", True), ("active", "paused", True), ("paused", "active", True),
    ("paused", "terminated", True), ("terminated", "archived", True), ("archived", "active", False),
    ("created", "paused", False), ("terminated", "active", False),
])
def test_the_session_lifecycle(old, new, allowed):
    a = {"session_id": "s1", "status": new}
    if allowed:
        assert events(sessions.decide_set_status(session(old), a, NOW))[0].status == new
    else:
        with pytest.raises(eventkernel.InvalidTransition):
            sessions.decide_set_status(session(old), a, NOW)
    assert sessions.decide_set_status(session(new), a, NOW) == NOTHING


def test_events_go_only_to_created_or_active_sessions():
    a = {"session_id": "s1", "actor": "u", "content": 1, "state_delta": {}}
    assert events(sessions.decide_append_event(session("created"), a, NOW))[0].seq == 1
    with pytest.raises(eventkernel.InvalidTransition, match="set_status"):
        sessions.decide_append_event(session("paused"), a, NOW)


# --- memory -------------------------------------------------------------------------------


def entry(version, *, deleted=False, operation="put"):
    return MemoryEntry("ns", "k", version, "v", "semantic", deleted, operation, None, None, None, 1, 1, None, None, 1)


def test_delete_restore_rollback_publish():
    a = {"namespace": "ns", "key": "k", "actor": None}
    with pytest.raises(eventkernel.InvalidTransition, match="already deleted"):
        memory.decide_delete(entry(2, deleted=True, operation="delete"), a, NOW)
    with pytest.raises(eventkernel.InvalidTransition, match="live"):
        memory.decide_restore(entry(2), a, NOW)
    assert memory.decide_delete(entry(2), a, NOW).emits[0].expected_version == 2
    with pytest.raises(eventkernel.NotFound, match="no version 3 before its current version 3"):
        memory.decide_rollback((entry(3), entry(3)), {**a, "to_version": 3}, NOW)
    assert events(memory.decide_rollback((entry(3), entry(1)), {**a, "to_version": 1}, NOW))[0].to_version == 1
    with pytest.raises(eventkernel.NotFound, match="nothing to publish"):
        memory.decide_publish(entry(2, deleted=True, operation="expire"), {**a, "to_namespace": "o"}, NOW)


# --- recovery and tasks -------------------------------------------------------------------


def attempt(finished):
    return RecoveryAttempt("a1", "t1", "retry", 1, 1, 2 if finished else None, finished or None, None, None, None, 1)


def test_one_recovery_attempt_at_a_time_and_finished_for_good():
    a = {"task_id": "t1", "strategy": "s", "reasoning": None}
    with pytest.raises(eventkernel.InvalidTransition, match="still running"):
        recovery.decide_start_attempt(("a2", False, [attempt(False)]), a, NOW)
    assert events(recovery.decide_start_attempt(("a2", False, [attempt(True)]), a, NOW))[0].attempt_number == 2
    with pytest.raises(eventkernel.TerminalState, match="already finished"):
        recovery.decide_finish_attempt(attempt(True), {"attempt_id": "a1", "success": True, "notes": None}, NOW)


def task(status):
    return Task("t1", "x", "generic", status, None, None, None, None, 0, 1, 1, None, None, None, 1)


def test_the_task_and_agent_lifecycles():
    a = {"task_id": "t1", "error": None}
    assert events(tasks.decide_set_status(task("pending"), {**a, "status": "running"}, NOW))[0].status == "running"
    with pytest.raises(eventkernel.TerminalState):
        tasks.decide_set_status(task("completed"), {**a, "status": "running"}, NOW)
    with pytest.raises(eventkernel.InvalidTransition):
        tasks.decide_set_status(task("pending"), {**a, "status": "completed"}, NOW)
    agent = Agent("ag1", "t1", "n", None, "spawned", 1, 1, 1)
    assert tasks.decide_set_agent_status(agent, {"agent_id": "ag1", "status": "spawned"}, NOW) == NOTHING
    with pytest.raises(eventkernel.NotFound, match="no workflow"):
        tasks.decide_add_to_workflow((False, True, None, None),
                                     {"workflow_id": "w", "task_id": "t1", "sequence": 1}, NOW)


# --- configurations, connections, documents -------------------------------------------


def _config(**changes):
    from eventkernel.projections.configurations import ConfigEntry

    base = ConfigEntry("k", 5, "integer", "d", False, 1, NOW, NOW, 1)
    return msgspec.structs.replace(base, **changes)


def _set_args(value, *, value_type=None, secret=False, key_id=None, description=None):
    from eventkernel.services.config import fits

    return {"key": "k", "value": None if secret else value, "value_type": value_type, "fits": fits(value),
            "description": description, "secret": secret, "key_id": key_id, "_ciphertext": "ek1:x:y" if secret else None}


def test_config_types_secrecy_and_keys():
    from eventkernel.events.config import ConfigSet
    from eventkernel.services.config import decide_set

    event = decide_set((None, None), _set_args(2.5), NOW).emits[0].events[0]
    assert isinstance(event, ConfigSet) and (event.value_type, event.value) == ("float", 2.5)
    assert decide_set((_config(), None), _set_args(5), NOW).outcome == "unchanged"  # same value: no version
    assert decide_set((_config(), None), _set_args(6), NOW).emits[0].events[0].description == "d"  # kept
    with pytest.raises(eventkernel.InvalidArgument, match="holds integer values"):
        decide_set((_config(), None), _set_args("x"), NOW)
    assert decide_set((_config(), None), _set_args("x", value_type="string"), NOW).emits  # retyped on purpose
    with pytest.raises(eventkernel.InvalidArgument, match="is secret, so it is set with secret=True"):
        decide_set((_config(is_secret=True), None), _set_args(5), NOW)
    with pytest.raises(eventkernel.SecretKeyError, match="encrypted under key aaa and this kernel encrypts with key bbb"):
        decide_set((None, "aaa"), _set_args("pw", secret=True, key_id="bbb"), NOW)
    secret = decide_set((None, "aaa"), _set_args("pw", secret=True, key_id="aaa"), NOW).emits[0].events[0]
    assert (secret.value, secret.secret, secret.ciphertext) == (None, True, "ek1:x:y")


def test_connection_rules():
    from eventkernel.projections.connections import Connection
    from eventkernel.services.connections import decide_close, decide_heartbeat, decide_reap

    live = Connection("c1", "cl", None, "ws", True, None, NOW, NOW, NOW, None, None, 1)
    assert decide_heartbeat(live, {"connection_id": "c1", "metadata": None}, NOW).emits
    closed = msgspec.structs.replace(live, is_active=False, closed_at=NOW, close_reason="timed_out")
    with pytest.raises(eventkernel.TerminalState, match="timed out at"):
        decide_close(closed, {"connection_id": "c1"}, NOW)
    with pytest.raises(eventkernel.NotFound):
        decide_heartbeat(None, {"connection_id": "c1", "metadata": None}, NOW)
    reaped = decide_reap(["c1", "c2"], {"timeout_ms": 10}, NOW)
    assert [e.stream for e in reaped.emits] == ["connection:c1", "connection:c2"]
    assert all(e.events[0].reason == "timed_out" for e in reaped.emits)


def test_document_marks_need_a_document():
    from eventkernel.services.documents import decide_mark

    with pytest.raises(eventkernel.NotFound, match="no document 'p'; index"):
        decide_mark(None, {"file_path": "p", "status": "synced", "error": None}, NOW)
