from __future__ import annotations

import pytest

import eventkernel
from eventkernel.errors import IdempotencyConflict, InvalidArgument, LeaseNotHeld, NotFound, TerminalState

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def types_of(k, after=0):
    return [r.type for r in k.read(after=after)]


def test_enqueue_records_a_pending_item_correlated_to_its_task(k, clock):
    item_id = k.work.enqueue("task-1", {"prompt": "hi"}, priority=2, max_retries=1, kind="llm")
    item = k.work.get(item_id)
    assert (item.task_id, item.kind, item.priority, item.input, item.status) == ("task-1", "llm", 2, {"prompt": "hi"}, "pending")
    assert (item.attempt, item.retry_count, item.max_retries, item.token) == (0, 0, 1, 0)
    assert item.created_at == item.updated_at == clock()
    (r,) = k.read()
    assert (r.stream, r.type, r.correlation_id) == (f"work_item:{item_id}", "work_item.enqueued", "task-1")
    assert r.meta == {"command": "work.enqueue"}


def test_claim_takes_highest_priority_then_oldest(k):
    low = k.work.enqueue("t", 1, priority=0)
    high_old = k.work.enqueue("t", 2, priority=5)
    high_new = k.work.enqueue("t", 3, priority=5)
    assert [k.work.claim("w").work_item_id for _ in range(3)] == [high_old, high_new, low]


def test_claim_returns_none_and_writes_nothing_when_the_queue_is_empty(k):
    before = snapshot(k)
    assert k.work.claim("w") is None
    assert snapshot(k) == before


def test_claim_grants_a_lease_with_a_fencing_token(k, clock):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1", lease_ms=1_000)
    assert item.work_item_id == item_id
    assert (item.status, item.lease_holder, item.token, item.attempt) == ("in_progress", "w1", 1, 1)
    assert (item.lease_acquired_at, item.lease_expires_at) == (clock(), clock() + 1_000)


def test_claim_skips_items_with_a_live_lease(k, clock):
    k.work.enqueue("t", None)
    k.work.claim("w1", lease_ms=1_000)
    clock.advance(999)
    assert k.work.claim("w2") is None


def test_claim_takes_over_an_expired_lease_and_spends_a_retry(k, clock):
    item_id = k.work.enqueue("t", None, max_retries=2)
    k.work.claim("w1", lease_ms=1_000)
    clock.advance(1_000)
    head = k.head
    item = k.work.claim("w2", lease_ms=1_000)
    assert types_of(k, head) == ["work_item.lease_expired", "work_item.claimed"]
    assert (item.work_item_id, item.lease_holder, item.token, item.attempt, item.retry_count) == (item_id, "w2", 2, 2, 1)
    assert "expired" in item.error


def test_an_expired_item_with_no_retries_fails_and_claim_moves_on(k, clock):
    doomed = k.work.enqueue("t", None, priority=9, max_retries=0)
    other = k.work.enqueue("t", None)
    k.work.claim("w1", lease_ms=10)
    clock.advance(10)
    assert k.work.claim("w2").work_item_id == other
    assert k.work.get(doomed).status == "failed"


def test_pending_beats_expired_of_lower_priority(k, clock):
    expiring = k.work.enqueue("t", None, priority=0)
    k.work.claim("w1", lease_ms=10)
    pending = k.work.enqueue("t", None, priority=1)
    clock.advance(10)
    assert k.work.claim("w2").work_item_id == pending
    assert k.work.claim("w3").work_item_id == expiring


def test_heartbeat_extends_the_live_lease(k, clock):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1", lease_ms=1_000)
    clock.advance(900)
    after = k.work.heartbeat(item_id, "w1", item.token, lease_ms=1_000)
    assert (after.lease_expires_at, after.heartbeat_at) == (clock() + 1_000, clock())
    clock.advance(900)
    assert k.work.claim("w2") is None  # still held thanks to the heartbeat


def test_heartbeat_complete_fail_by_another_worker_are_refused(k):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1")
    msg = "worker 'w2' presented token 1, the live lease is token 1 held by 'w1'"
    with refused(k, LeaseNotHeld, f"cannot heartbeat {item_id}: {msg}"):
        k.work.heartbeat(item_id, "w2", item.token)
    with refused(k, LeaseNotHeld, f"cannot complete {item_id}: {msg}"):
        k.work.complete(item_id, "w2", item.token)
    with refused(k, LeaseNotHeld, f"cannot fail {item_id}: {msg}"):
        k.work.fail(item_id, "w2", item.token, "boom")


def test_a_stale_token_is_refused_after_takeover(k, clock):
    item_id = k.work.enqueue("t", None)
    old = k.work.claim("w1", lease_ms=10)
    clock.advance(10)
    new = k.work.claim("w1", lease_ms=10)  # the same worker name, a new lease
    assert new.token == old.token + 1
    with refused(k, LeaseNotHeld, "presented token 1, the live lease is token 2 held by 'w1'"):
        k.work.complete(item_id, "w1", old.token)
    k.work.complete(item_id, "w1", new.token)


def test_an_expired_lease_is_not_held_even_before_the_reaper(k, clock):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1", lease_ms=100)
    clock.advance(100)
    with refused(k, LeaseNotHeld, "expired at"):
        k.work.complete(item_id, "w1", item.token)


def test_lease_not_held_carries_the_facts(k):
    item_id = k.work.enqueue("t", None)
    k.work.claim("w1")
    with pytest.raises(LeaseNotHeld) as e:
        k.work.complete(item_id, "w2", 1)
    assert (e.value.work_item_id, e.value.worker, e.value.token, e.value.holder, e.value.live_token) == (item_id, "w2", 1, "w1", 1)


def test_acting_on_a_pending_item_is_lease_not_held(k):
    item_id = k.work.enqueue("t", None)
    with refused(k, LeaseNotHeld, "the item is pending: nobody holds a lease"):
        k.work.complete(item_id, "w1", 1)


def test_complete_is_terminal(k, clock):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1")
    done = k.work.complete(item_id, "w1", item.token, output={"answer": 42})
    assert (done.status, done.output, done.lease_holder, done.lease_expires_at) == ("completed", {"answer": 42}, None, None)
    for attempt in (
        lambda: k.work.complete(item_id, "w1", item.token),
        lambda: k.work.fail(item_id, "w1", item.token, "late"),
        lambda: k.work.heartbeat(item_id, "w1", item.token),
        lambda: k.work.cancel(item_id, "no"),
    ):
        with refused(k, TerminalState, "already completed; terminal states never change"):
            attempt()
    clock.advance(10**9)
    assert k.work.claim("w2") is None
    assert k.work.expire_leases() == 0


def test_fail_with_retries_left_goes_back_to_pending(k):
    item_id = k.work.enqueue("t", None, max_retries=1)
    item = k.work.claim("w1")
    after = k.work.fail(item_id, "w1", item.token, "timeout")
    assert (after.status, after.retry_count, after.error, after.lease_holder) == ("pending", 1, "timeout", None)
    item = k.work.claim("w2")
    assert (item.work_item_id, item.attempt, item.token) == (item_id, 2, 2)
    after = k.work.fail(item_id, "w2", item.token, "timeout again")
    assert (after.status, after.retry_count) == ("failed", 1)
    (last,) = list(k.read(after=k.head - 1))
    assert (last.event.retryable, last.event.retry) == (True, False)


def test_fail_not_retryable_is_terminal_at_once(k):
    item_id = k.work.enqueue("t", None, max_retries=5)
    item = k.work.claim("w1")
    after = k.work.fail(item_id, "w1", item.token, "bad input", retryable=False)
    assert (after.status, after.retry_count) == ("failed", 0)


def test_cancel_from_pending_and_in_progress(k):
    a = k.work.enqueue("t", None)
    b = k.work.enqueue("t", None)
    k.work.claim("w1")
    assert k.work.cancel(a, "user stopped it").status == "cancelled"
    cancelled = k.work.cancel(b, "superseded")
    assert (cancelled.status, cancelled.error) == ("cancelled", "superseded")
    assert k.work.claim("w2") is None


def test_expire_leases_reaps_every_expired_lease(k, clock):
    a = k.work.enqueue("t", None, max_retries=0)
    b = k.work.enqueue("t", None)
    c = k.work.enqueue("t", None)
    k.work.claim("w1", lease_ms=100)
    k.work.claim("w2", lease_ms=100)
    k.work.claim("w3", lease_ms=500)
    clock.advance(100)
    assert [i.work_item_id for i in k.work.expiring(clock())] == [a, b]
    assert k.work.expire_leases() == 2
    assert [k.work.get(i).status for i in (a, b, c)] == ["failed", "pending", "in_progress"]
    before = snapshot(k)
    assert k.work.expire_leases() == 0
    assert snapshot(k) == before


def test_get_and_list(k):
    a = k.work.enqueue("t1", None)
    b = k.work.enqueue("t2", None, priority=3)
    k.work.claim("w")
    assert [i.work_item_id for i in k.work.list()] == [b, a]
    assert [i.work_item_id for i in k.work.list(status="pending")] == [a]
    assert [i.work_item_id for i in k.work.list(task_id="t2")] == [b]
    assert [i.work_item_id for i in k.work.list(limit=1)] == [b]
    with pytest.raises(NotFound, match="no work item 'nope'"):
        k.work.get("nope")
    with pytest.raises(InvalidArgument, match="status must be one of"):
        k.work.list(status="done")


def test_unknown_items_are_not_found_and_nothing_is_written(k):
    for attempt in (
        lambda: k.work.complete("ghost", "w", 1),
        lambda: k.work.heartbeat("ghost", "w", 1),
        lambda: k.work.fail("ghost", "w", 1, "e"),
        lambda: k.work.cancel("ghost", "r"),
    ):
        with refused(k, NotFound, "no work item 'ghost'"):
            attempt()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda k: k.work.enqueue("", None), "task_id must not be empty"),
        (lambda k: k.work.enqueue(7, None), "task_id must be a str"),
        (lambda k: k.work.enqueue("t", float("nan")), "NaN"),
        (lambda k: k.work.enqueue("t", {1: 2}), "keys must be str"),
        (lambda k: k.work.enqueue("t", None, priority=1.5), "priority must be an int"),
        (lambda k: k.work.enqueue("t", None, priority=True), "priority must be an int"),
        (lambda k: k.work.enqueue("t", None, max_retries=-1), "max_retries must be between 0"),
        (lambda k: k.work.enqueue("t", None, kind=""), "kind must not be empty"),
        (lambda k: k.work.enqueue("t", None, work_item_id="x" * 300), "at most 256"),
        (lambda k: k.work.claim("w", lease_ms=0), "lease_ms must be between 1"),
        (lambda k: k.work.claim("w", lease_ms="30s"), "lease_ms must be an int"),
        (lambda k: k.work.claim(None), "worker must be a str"),
        (lambda k: k.work.heartbeat("x", "w", 0), "token must be >= 1"),
        (lambda k: k.work.complete("x", "w", 1, output=b"raw"), "only JSON values"),
        (lambda k: k.work.fail("x", "w", 1, ""), "error must not be empty"),
        (lambda k: k.work.fail("x", "w", 1, "e", retryable="yes"), "retryable must be a bool"),
        (lambda k: k.work.cancel("x", None), "reason must be a str"),
        (lambda k: k.work.claim("w", command_id=""), "command_id must not be empty"),
    ],
)
def test_bad_arguments_are_refused_at_the_door(k, call, match):
    k.work.enqueue("t", None, work_item_id="x")
    with refused(k, InvalidArgument, match):
        call(k)


def test_a_duplicate_work_item_id_is_refused(k):
    k.work.enqueue("t", None, work_item_id="job-1")
    with refused(k, InvalidArgument, "work_item_id 'job-1' already exists"):
        k.work.enqueue("t", None, work_item_id="job-1")


# --- command ids -----------------------------------------------------------------


def test_a_repeated_command_id_returns_the_original_result_and_appends_nothing(k, clock):
    item_id = k.work.enqueue("t", {"a": 1}, command_id="enq-1")
    assert k.work.enqueue("t", {"a": 1}, command_id="enq-1") == item_id
    claimed = k.work.claim("w1", lease_ms=1_000, command_id="claim-1")
    clock.advance(10)
    k.work.heartbeat(item_id, "w1", claimed.token, lease_ms=5_000)
    before = snapshot(k)
    again = k.work.claim("w1", lease_ms=1_000, command_id="claim-1")
    assert again == claimed  # as it was then, not as it is now
    assert snapshot(k) == before
    done = k.work.complete(item_id, "w1", claimed.token, command_id="done-1")
    assert k.work.complete(item_id, "w1", claimed.token, command_id="done-1") == done
    assert k.head == 4


def test_a_command_id_reused_for_something_else_is_a_conflict(k):
    k.work.enqueue("t", 1, command_id="c1")
    with refused(k, IdempotencyConflict, "command_id 'c1' was already used at position 1 by work.enqueue"):
        k.work.enqueue("t", 2, command_id="c1")
    with refused(k, IdempotencyConflict, "already used"):
        k.work.claim("w", command_id="c1")


def test_command_ids_mark_their_events(k):
    k.work.enqueue("t", 1, command_id="c1")
    (r,) = k.read()
    assert r.event_id == "cmd:c1:0"
    assert r.meta["command"] == "work.enqueue" and r.meta["command_id"] == "c1"


def test_expire_leases_replay_returns_the_original_count(k, clock):
    k.work.enqueue("t", None)
    k.work.claim("w", lease_ms=1)
    clock.advance(1)
    assert k.work.expire_leases(command_id="reap-1") == 1
    assert k.work.expire_leases(command_id="reap-1") == 1


# --- transactions -------------------------------------------------------------


def test_a_transaction_commits_many_commands_at_once(k, db_path):
    with k.transaction():
        ids = [k.work.enqueue("t", i) for i in range(5)]
        with eventkernel.open(db_path, busy_timeout_ms=0) as other:
            assert other.head == 0  # nothing visible before the commit
    assert [i.work_item_id for i in k.work.list()] == ids


def test_a_rejected_command_inside_a_transaction_undoes_only_itself(k):
    with k.transaction():
        kept = k.work.enqueue("t", 1)
        with pytest.raises(NotFound):
            k.work.complete("ghost", "w", 1)
        with pytest.raises(InvalidArgument):
            k.work.enqueue("t", 1, work_item_id=kept)
    assert k.head == 1 and k.work.get(kept).status == "pending"


def test_an_exception_in_a_transaction_undoes_everything(k):
    with pytest.raises(RuntimeError), k.transaction():
        k.work.enqueue("t", 1)
        raise RuntimeError("the caller changed its mind")
    assert k.head == 0 and k.work.list() == []


class SteppingClock:
    """A clock that can be set anywhere, backwards included (a system clock stepped by NTP)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_a_clock_stepping_back_neither_shortens_a_lease_nor_lets_another_worker_in(db_path):
    clock = SteppingClock(1_000_000)
    with eventkernel.open(db_path, clock=clock) as k:
        item_id = k.work.enqueue("t", None)
        item = k.work.claim("w1", lease_ms=10_000)
        assert item.lease_expires_at == 1_010_000
        clock.now -= 60_000  # the system clock steps back a minute
        beat = k.work.heartbeat(item_id, "w1", item.token)
        assert beat.lease_expires_at == 1_010_000  # not 950_000
        assert k.work.claim("w2", lease_ms=10_000) is None
        times = [r.recorded_at for r in k.read()]
        assert times == sorted(times) and min(times) == 1_000_000
        clock.now = 1_010_000  # the real end of the lease
        assert k.work.claim("w2", lease_ms=10_000).lease_holder == "w2"


def test_a_heartbeat_keeps_the_claims_lease_length_unless_told_otherwise(k, clock):
    item_id = k.work.enqueue("t", None)
    item = k.work.claim("w1", lease_ms=5_000)
    assert item.lease_ms == 5_000
    clock.advance(1_000)
    assert k.work.heartbeat(item_id, "w1", item.token).lease_expires_at == clock() + 5_000
    clock.advance(1_000)
    longer = k.work.heartbeat(item_id, "w1", item.token, lease_ms=60_000)
    assert (longer.lease_ms, longer.lease_expires_at) == (60_000, clock() + 60_000)
    clock.advance(1_000)
    assert k.work.heartbeat(item_id, "w1", item.token).lease_expires_at == clock() + 60_000
    # a shorter lease_ms never moves the deadline earlier
    assert k.work.heartbeat(item_id, "w1", item.token, lease_ms=1).lease_expires_at == clock() + 60_000


def test_claim_takes_only_the_kinds_asked_for(k):
    k.work.enqueue("t", 1, kind="email", priority=9)
    wanted = k.work.enqueue("t", 2, kind="llm")
    assert k.work.claim("w", kinds=["llm", "embed"]).work_item_id == wanted
    assert k.work.claim("w", kinds=["llm"]) is None
    for bad in ("llm", [], [""], [1]):
        with pytest.raises(eventkernel.InvalidArgument, match="kinds"):
            k.work.claim("w", kinds=bad)


def test_the_clock_must_read_a_time_within_range(db_path):
    clock = SteppingClock(1_000)
    with eventkernel.open(db_path, clock=clock) as k:
        for reading in (2**63, -1, 1.5, None):
            clock.now = reading
            with pytest.raises(eventkernel.JournalError, match="a clock must return int ms since the epoch"):
                k.work.enqueue("t", None)
        assert k.head == 0


def test_the_bulk_rebuild_folds_every_work_item_event_as_apply_does(k, clock):
    """Every event type and branch of work_items, then the rebuild's Fold,
    the one-by-one apply and the live table must agree row for row."""
    from support import live_tables, rebuilt_tables

    a = k.work.enqueue("t", {"nested": [1, 2.5, "é"]}, priority=2, max_retries=1)
    b = k.work.enqueue("t", None, max_retries=0)
    c = k.work.enqueue("t", "text", priority=-1)
    d = k.work.enqueue("u", [None], kind="other")
    e = k.work.enqueue("u", 0)
    item = k.work.claim("w1", lease_ms=1_000)  # a: priority 2
    k.work.heartbeat(item.work_item_id, "w1", item.token)  # keeps its lease_ms
    k.work.heartbeat(item.work_item_id, "w1", item.token, lease_ms=5_000)
    k.work.fail(item.work_item_id, "w1", item.token, "retry me")  # retry spent, pending
    item = k.work.claim("w2", lease_ms=1_000)
    k.work.fail(item.work_item_id, "w2", item.token, "give up", retryable=False)  # a: failed for good
    item = k.work.claim("w3", lease_ms=1_000)  # b or e (priority 0, oldest first): b
    assert item.work_item_id == b
    clock.advance(2_000)
    assert k.work.expire_leases() == 1  # b has no retry left: failed
    item = k.work.claim("w4", lease_ms=1_000)
    assert item.work_item_id == d or item.work_item_id == e
    k.work.release(item.work_item_id, "w4", item.token)
    item = k.work.claim("w5", lease_ms=1_000)
    k.work.complete(item.work_item_id, "w5", item.token, output={"done": True, "n": -0.0})
    item = k.work.claim("w6", lease_ms=1_000)
    clock.advance(2_000)
    k.work.expire_leases()  # a retry left: pending again
    k.work.cancel(c, "not needed")
    last = k.work.claim("w7", lease_ms=1_000, task_id="u")
    k.work.heartbeat(last.work_item_id, "w7", last.token, lease_ms=7_000)
    statuses = {i.status for i in k.work.list()}
    assert {"failed", "completed", "cancelled", "in_progress"} <= statuses
    live = live_tables(k)
    assert rebuilt_tables(k) == live
    assert rebuilt_tables(k, bulk=False) == live
