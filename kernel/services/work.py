"""The work queue: enqueue, claim with a lease and a fencing token,
heartbeat, complete, fail with retries, cancel, and the lease reaper.

Rules: a claim takes the highest-priority, oldest pending item or an item
whose lease has expired; only the holder of the live lease, with its current
token, may heartbeat, complete or fail; an expired lease counts as a failed
attempt; terminal states never change. Each command is a :class:`Spec`: its
``decide`` holds the rules, as a pure function.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Any

import apsw

from eventkernel import journal
from eventkernel.errors import InvalidArgument, LeaseNotHeld, NotFound, TerminalState
from eventkernel.events.work import (
    WorkItemCancelled,
    WorkItemClaimed,
    WorkItemCompleted,
    WorkItemEnqueued,
    WorkItemFailed,
    WorkItemLeaseExpired,
    WorkItemLeaseExtended,
    WorkItemReleased,
)
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import work_items
from eventkernel.projections.work_items import PENDING, STATUSES, TERMINAL, WorkItem
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import Args, Decision, Emit, Reads, Spec, emit, run, streams_of
from eventkernel.validate import (
    check_bool,
    check_int,
    check_json_value,
    check_limit,
    check_optional_text,
    check_text,
)

MAX_LEASE_MS = 366 * 24 * 3600 * 1000  # a year and a day


def stream_of(work_item_id: str) -> str:
    return f"work_item:{work_item_id}"


# --- the rules: pure functions of the loaded state, the arguments and the time --------


def decide_enqueue(state: tuple[str, bool], a: Args, now: int) -> Decision:
    """``state``: (the item's id, whether an item with that id exists)."""
    item_id, exists = state
    if exists:
        raise InvalidArgument(f"work.enqueue refused: work_item_id {item_id!r} already exists")
    return emit(
        stream_of(item_id),
        WorkItemEnqueued(work_item_id=item_id, task_id=a["task_id"], kind=a["kind"], priority=a["priority"],
                         max_retries=a["max_retries"], input=a["input"]),
        expected_version=0, correlation_id=a["task_id"],
    )


def _expiry(item: WorkItem) -> tuple[Emit, bool]:
    """The event of ``item``'s lease running out, and whether it goes back to pending."""
    assert item.lease_holder is not None and item.lease_expires_at is not None
    retry = item.retry_count < item.max_retries
    event = WorkItemLeaseExpired(work_item_id=item.work_item_id, worker=item.lease_holder, token=item.token,
                                 lease_expires_at=item.lease_expires_at, retry=retry)
    return Emit(stream_of(item.work_item_id), (event,), correlation_id=item.task_id), retry


def decide_claim(state: tuple[WorkItem | None, builtins.list[WorkItem]], a: Args, now: int) -> Decision:
    """``state``: the first pending item, and the in-progress items whose
    lease expired that come before it in queue order. Each expiry is
    recorded (a retry spent) until one goes back to pending: that one is
    claimed; otherwise the pending item is."""
    pending, expired = state
    emits: builtins.list[Emit] = []
    chosen = pending
    for item in expired:
        expiry, retry = _expiry(item)
        emits.append(expiry)
        if retry:
            chosen = item
            break
    if chosen is None:
        return Decision(emits=tuple(emits))
    lease_ms = a["lease_ms"]
    emits.append(Emit(
        stream_of(chosen.work_item_id),
        (WorkItemClaimed(work_item_id=chosen.work_item_id, worker=a["worker"], token=chosen.token + 1,
                         lease_expires_at=now + lease_ms, lease_ms=lease_ms),),
        correlation_id=chosen.task_id,
    ))
    return Decision(emits=tuple(emits))


def held(action: str, item: WorkItem | None, a: Args, now: int) -> WorkItem:
    """``item`` if ``a["worker"]`` holds its live lease with ``a["token"]``;
    raises NotFound, TerminalState, LeaseNotHeld otherwise."""
    work_item_id, worker, token = a["work_item_id"], a["worker"], a["token"]
    if item is None:
        raise NotFound(f"work.{action} refused: no work item {work_item_id!r}")
    if item.status in TERMINAL:
        raise TerminalState(
            f"cannot {action} {work_item_id}: it is already {item.status}; terminal states never change"
        )
    if item.status == PENDING:
        reason = "but the item is pending: nobody holds a lease on it"
        if item.token:
            reason += f" (the last lease, token {item.token}, ended)"
        raise LeaseNotHeld(action, work_item_id, worker, token, None, None, reason)
    if token != item.token or worker != item.lease_holder:
        raise LeaseNotHeld(
            action, work_item_id, worker, token, item.lease_holder, item.token,
            f"the live lease is token {item.token} held by {item.lease_holder!r}",
        )
    assert item.lease_expires_at is not None
    if now >= item.lease_expires_at:
        raise LeaseNotHeld(
            action, work_item_id, worker, token, item.lease_holder, item.token,
            f"but that lease expired at {item.lease_expires_at} (now {now})",
        )
    return item


def decide_heartbeat(item: WorkItem | None, a: Args, now: int) -> Decision:
    """The deadline moves to now + the lease's length (or ``lease_ms``), never earlier."""
    item = held("heartbeat", item, a, now)
    assert item.lease_expires_at is not None and item.lease_ms is not None
    length = item.lease_ms if a["lease_ms"] is None else a["lease_ms"]
    return emit(
        stream_of(item.work_item_id),
        WorkItemLeaseExtended(work_item_id=item.work_item_id, worker=a["worker"], token=a["token"],
                              lease_expires_at=max(item.lease_expires_at, now + length), lease_ms=a["lease_ms"]),
        correlation_id=item.task_id,
    )


def decide_complete(item: WorkItem | None, a: Args, now: int) -> Decision:
    item = held("complete", item, a, now)
    return emit(
        stream_of(item.work_item_id),
        WorkItemCompleted(work_item_id=item.work_item_id, worker=a["worker"], token=a["token"], output=a["output"]),
        correlation_id=item.task_id,
    )


def decide_fail(item: WorkItem | None, a: Args, now: int) -> Decision:
    """Back to pending with a retry spent, or terminal ``failed`` when the
    failure is not retryable or no retry is left."""
    item = held("fail", item, a, now)
    retry = a["retryable"] and item.retry_count < item.max_retries
    return emit(
        stream_of(item.work_item_id),
        WorkItemFailed(work_item_id=item.work_item_id, worker=a["worker"], token=a["token"], error=a["error"],
                       retryable=a["retryable"], retry=retry),
        correlation_id=item.task_id,
    )


def decide_release(item: WorkItem | None, a: Args, now: int) -> Decision:
    """The holder gives the live lease back: pending again, no retry spent."""
    item = held("release", item, a, now)
    return emit(stream_of(item.work_item_id),
                WorkItemReleased(work_item_id=item.work_item_id, worker=a["worker"], token=a["token"]),
                correlation_id=item.task_id)


def decide_cancel(item: WorkItem | None, a: Args, now: int) -> Decision:
    if item is None:
        raise NotFound(f"work.cancel refused: no work item {a['work_item_id']!r}")
    if item.status in TERMINAL:
        raise TerminalState(
            f"work.cancel refused: work item {item.work_item_id} is already {item.status}; "
            "terminal states never change"
        )
    return emit(stream_of(item.work_item_id), WorkItemCancelled(work_item_id=item.work_item_id, reason=a["reason"]),
                correlation_id=item.task_id)


def decide_expire(items: builtins.list[WorkItem], a: Args, now: int) -> Decision:
    """Every item whose lease ran out: back to pending (a retry spent) or failed."""
    return Decision(emits=tuple(_expiry(item)[0] for item in items))


# --- loading and answering ---------------------------------------------------------------


def _load_enqueue(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool]:
    given = a["work_item_id"]
    if given is None:
        # A generated id cannot collide in practice, and if it did the
        # stream's expected_version=0 would still refuse it.
        return new_id("wi", now), False
    return given, work_items.get(conn, given) is not None


def _filters(a: Args) -> tuple[tuple[str, ...] | None, str | None]:
    return (None if a.get("kinds") is None else tuple(a["kinds"])), a.get("task_id")


def _load_claim(conn: apsw.Connection, a: Args, now: int) -> tuple[WorkItem | None, builtins.list[WorkItem]]:
    kinds, task_id = _filters(a)
    pending = work_items.next_pending(conn, kinds, task_id)
    before = None if pending is None else (pending.priority, pending.enqueued_position)
    return pending, work_items.expired(conn, now, kinds, task_id=task_id, before=before)


def _load_item(conn: apsw.Connection, a: Args, now: int) -> WorkItem | None:
    return work_items.get(conn, a["work_item_id"])


def _claimed(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> WorkItem | None:
    claimed = [r for r in records if isinstance(r.event, WorkItemClaimed)]
    return None if not claimed else _item_of(reads, a, claimed, outcome)


def _item_of(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> WorkItem:
    item = work_items.get(reads.conn, records[-1].event.work_item_id)  # type: ignore[attr-defined]
    assert item is not None
    return item


ENQUEUE: Spec[tuple[str, bool], str] = Spec(
    "work.enqueue", _load_enqueue, decide_enqueue,
    lambda reads, a, records, outcome: records[0].event.work_item_id,  # type: ignore[attr-defined]
)
CLAIM: Spec[Any, WorkItem | None] = Spec("work.claim", _load_claim, decide_claim, _claimed, work_items, streams_of)
HEARTBEAT = Spec("work.heartbeat", _load_item, decide_heartbeat, _item_of, work_items, streams_of)
COMPLETE = Spec("work.complete", _load_item, decide_complete, _item_of, work_items, streams_of)
FAIL = Spec("work.fail", _load_item, decide_fail, _item_of, work_items, streams_of)
RELEASE = Spec("work.release", _load_item, decide_release, _item_of, work_items, streams_of)
CANCEL = Spec("work.cancel", _load_item, decide_cancel, _item_of, work_items, streams_of)
EXPIRE: Spec[builtins.list[WorkItem], int] = Spec(
    "work.expire_leases", lambda conn, a, now: work_items.expiring(conn, now), decide_expire,
    lambda reads, a, records, outcome: sum(isinstance(r.event, WorkItemLeaseExpired) for r in records),
)


# --- the service ---------------------------------------------------------------------------


class WorkQueue:
    """``k.work``: a durable, lease-based work queue."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # --- commands -----------------------------------------------------------------

    def enqueue(
        self,
        task_id: str,
        input: Any,
        priority: int = 0,
        max_retries: int = 3,
        kind: str = "task",
        *,
        work_item_id: str | None = None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> str:
        """Add a pending item; returns its id. Higher ``priority`` is claimed first.

        Raises InvalidArgument for bad values or an id already in use.
        """
        where = "work.enqueue"
        check_text(where, "task_id", task_id)
        check_json_value(where, "input", input)
        check_int(where, "priority", priority)
        check_int(where, "max_retries", max_retries, minimum=0, maximum=1_000_000)
        check_text(where, "kind", kind)
        check_optional_text(where, "work_item_id", work_item_id)
        args = {"task_id": task_id, "input": input, "priority": priority, "max_retries": max_retries,
                "kind": kind, "work_item_id": work_item_id}
        return run(self._ctx, ENQUEUE, args, command_id=command_id, actor=actor)

    def claim(
        self, worker: str, lease_ms: int = 30_000, *, kinds: Sequence[str] | None = None, task_id: str | None = None,
        wait_ms: int = 0, actor: str | None = None, command_id: str | None = None,
    ) -> WorkItem | None:
        """Lease the next item to ``worker``: the highest-priority, oldest
        pending item (of one of ``kinds``, of ``task_id``, when given), or one
        whose lease expired (that expiry is recorded and spends a retry). The
        returned item's ``token`` must accompany heartbeat/complete/fail.

        With nothing to claim: None at once, or with ``wait_ms`` a blocking
        claim that wakes when something changes — an enqueue, a release, a
        failure with a retry left, from this process or another — or when a
        live lease runs out, and returns None at the deadline. With a
        ``command_id`` the id binds to the answer the claim finally gave."""
        where = "work.claim"
        check_text(where, "worker", worker)
        check_int(where, "lease_ms", lease_ms, minimum=1, maximum=MAX_LEASE_MS)
        check_int(where, "wait_ms", wait_ms, minimum=0, maximum=MAX_LEASE_MS)
        check_optional_text(where, "task_id", task_id)
        args: dict[str, Any] = {"worker": worker, "lease_ms": lease_ms}
        if kinds is not None:
            if isinstance(kinds, str) or not isinstance(kinds, list | tuple) or not kinds:
                raise InvalidArgument(f"{where} refused: kinds must be a non-empty list of kinds, got {kinds!r:.60}")
            args["kinds"] = [check_text(where, "kinds[]", kind) for kind in kinds]
        if task_id is not None:
            args["task_id"] = task_id
        if not wait_ms:
            if command_id is None and self._nothing_claimable(args):
                return None
            return run(self._ctx, CLAIM, args, command_id=command_id, actor=actor)
        return self._wait_and_claim(where, args, wait_ms, command_id, actor)

    def _nothing_claimable(self, args: dict[str, Any]) -> bool:
        """On PostgreSQL, whether a claim would find nothing, known without the
        shared write lock: when the replica holds exactly the server's head,
        its state (at the server's time) is the server's at that moment, so
        no pending item and no expired lease there is the claim's answer —
        and workers polling an empty queue do not serialise every writer.
        Asked only when the replica holds no pending item: when it holds
        one, the claim runs at once (deciding on the server's state) without
        that round trip. (On a file the lock is local and a claim just takes it.)"""
        db, ctx = self._ctx.db, self._ctx
        shared = db.shared
        if shared is None or db.owns_write():
            return False
        with db.read("work.claim") as conn:
            if work_items.next_pending(conn, *_filters(args)) is not None:
                return False  # (the claim decides, on the server's state: the round trip would not answer it)
        with shared.current("work.claim") as seen:
            if seen is None:
                return False
            conn, server_now = seen
            now = max(server_now if ctx.clock == shared.clock else ctx.now(), journal.head_row(conn)[2])
            pending, expired = _load_claim(conn, args, now)
            return pending is None and not expired

    def _wait_and_claim(
        self, where: str, args: dict[str, Any], wait_ms: int, command_id: str | None, actor: str | None
    ) -> WorkItem | None:
        db, clock = self._ctx.db, self._ctx.clock
        deadline = time.monotonic() + wait_ms / 1000
        if command_id is not None:
            with db.statement(where) as conn:
                if journal.find_command(conn, command_id):  # a retry: the first answer, at once
                    return run(self._ctx, CLAIM, args, command_id=command_id, actor=actor)
        kinds, task_id = _filters(args)
        while True:
            watch = db.watch(where)
            item = None if self._nothing_claimable(args) else run(
                self._ctx, CLAIM, args, command_id=command_id, actor=actor, record_noop=False)
            remaining = deadline - time.monotonic()
            if item is not None:
                return item
            if remaining <= 0:  # the last attempt: its answer binds the command id
                if command_id is None and self._nothing_claimable(args):
                    return None
                return run(self._ctx, CLAIM, args, command_id=command_id, actor=actor)
            with db.statement(where) as conn:
                expiry = work_items.next_deadline(conn, kinds, task_id)
            if expiry is not None:  # a live lease that runs out before the deadline wakes the claim too
                remaining = min(remaining, max(expiry - clock(), 0) / 1000 + 0.001)
            watch.wait(remaining)

    def release(
        self, work_item_id: str, worker: str, token: int, *, actor: str | None = None, command_id: str | None = None
    ) -> WorkItem:
        """Give the live lease back without spending a retry (a worker shutting
        down cleanly): the item is pending again. Raises LeaseNotHeld,
        TerminalState, NotFound."""
        where = "work.release"
        _check_holder_args(where, work_item_id, worker, token)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token}
        return run(self._ctx, RELEASE, args, command_id=command_id, actor=actor)

    def heartbeat(
        self, work_item_id: str, worker: str, token: int, lease_ms: int | None = None, *,
        actor: str | None = None, command_id: str | None = None,
    ) -> WorkItem:
        """Extend the live lease to now + ``lease_ms`` (default: the lease's
        length, as the claim set it). The deadline never moves earlier.
        Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.heartbeat"
        _check_holder_args(where, work_item_id, worker, token)
        if lease_ms is not None:
            check_int(where, "lease_ms", lease_ms, minimum=1, maximum=MAX_LEASE_MS)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "lease_ms": lease_ms}
        return run(self._ctx, HEARTBEAT, args, command_id=command_id, actor=actor)

    def complete(
        self, work_item_id: str, worker: str, token: int, output: Any = None, *,
        actor: str | None = None, command_id: str | None = None,
    ) -> WorkItem:
        """Finish the item (terminal). Only the live lease's holder and token.
        Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.complete"
        _check_holder_args(where, work_item_id, worker, token)
        check_json_value(where, "output", output)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "output": output}
        return run(self._ctx, COMPLETE, args, command_id=command_id, actor=actor)

    def fail(
        self,
        work_item_id: str,
        worker: str,
        token: int,
        error: str,
        retryable: bool = True,
        *,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> WorkItem:
        """Report a failed attempt. With ``retryable`` and retries left the item
        goes back to pending (retry_count + 1); otherwise it is terminal
        ``failed``. Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.fail"
        _check_holder_args(where, work_item_id, worker, token)
        check_text(where, "error", error, max_len=65_536)
        check_bool(where, "retryable", retryable)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "error": error,
                "retryable": retryable}
        return run(self._ctx, FAIL, args, command_id=command_id, actor=actor)

    def cancel(
        self, work_item_id: str, reason: str, *, actor: str | None = None, command_id: str | None = None
    ) -> WorkItem:
        """Withdraw a pending or in-progress item (terminal; any lease ends).
        Raises TerminalState, NotFound."""
        where = "work.cancel"
        check_text(where, "work_item_id", work_item_id)
        check_text(where, "reason", reason, max_len=65_536)
        return run(self._ctx, CANCEL, {"work_item_id": work_item_id, "reason": reason}, command_id=command_id,
                   actor=actor)

    def expire_leases(self, *, actor: str | None = None, command_id: str | None = None) -> int:
        """The reaper: every in-progress item whose lease has run out goes back
        to pending (a retry is spent) or to failed when none are left. Returns
        how many leases expired."""
        return run(self._ctx, EXPIRE, {}, command_id=command_id, actor=actor)

    # --- queries ------------------------------------------------------------------

    def get(self, work_item_id: str) -> WorkItem:
        """One item by id. Raises NotFound."""
        check_text("work.get", "work_item_id", work_item_id)
        return self._existing("work.get", work_item_id)

    def list(
        self, *, status: str | None = None, task_id: str | None = None, limit: int | None = None,
        after_key: str | None = None,
    ) -> builtins.list[WorkItem]:
        """Items in queue order (priority, then age), filtered by status and/or
        task; at most ``limit``, after the item ``after_key`` (the id of the
        last item of the previous page). Raises InvalidArgument, NotFound (the cursor)."""
        where = "work.list"
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"{where} refused: status must be one of {', '.join(STATUSES)}, got {status!r}")
        check_optional_text(where, "task_id", task_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: work_items.get(conn, i), "work item",
                              lambda item: (item.priority, item.enqueued_position))
            return work_items.list(conn, status=status, task_id=task_id, limit=limit, after=after)

    def expiring(
        self, before: int, *, limit: int | None = None, after_key: str | None = None
    ) -> builtins.list[WorkItem]:
        """In-progress items whose lease ends at or before ``before`` (ms),
        soonest first; at most ``limit``, after the item ``after_key``."""
        where = "work.expiring"
        check_int(where, "before", before)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: work_items.get(conn, i), "work item",
                              lambda item: (item.lease_expires_at, item.enqueued_position))
            if after is not None and after[0] is None:
                raise NotFound(f"{where} refused: after_key {after_key!r} no longer holds a lease")
            return work_items.expiring(conn, before, limit=limit, after=after)

    # --- helpers --------------------------------------------------------------------

    def _existing(self, where: str, work_item_id: str) -> WorkItem:
        with self._ctx.db.statement(where) as conn:
            item = work_items.get(conn, work_item_id)
        if item is None:
            raise NotFound(f"{where} refused: no work item {work_item_id!r}")
        return item


def _check_holder_args(where: str, work_item_id: Any, worker: Any, token: Any) -> None:
    check_text(where, "work_item_id", work_item_id)
    check_text(where, "worker", worker)
    check_int(where, "token", token, minimum=1)
