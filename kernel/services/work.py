"""The work queue: enqueue, claim with a lease and a fencing token,
heartbeat, complete, fail with retries, cancel, and the lease reaper.

Rules: a claim takes the highest-priority, oldest pending item
or an item whose lease has expired; only the holder of the live lease, with
its current token, may heartbeat, complete or fail; an expired lease counts
as a failed attempt; terminal states never change.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from eventkernel.errors import InvalidArgument, LeaseNotHeld, NotFound, TerminalState
from eventkernel.events.work import (
    WorkItemCancelled,
    WorkItemClaimed,
    WorkItemCompleted,
    WorkItemEnqueued,
    WorkItemFailed,
    WorkItemLeaseExpired,
    WorkItemLeaseExtended,
)
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import work_items
from eventkernel.projections.work_items import IN_PROGRESS, PENDING, STATUSES, TERMINAL, WorkItem
from eventkernel.services.base import Command, Context, after_row
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
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                event = cmd.previous[0].event
                assert isinstance(event, WorkItemEnqueued)
                return event.work_item_id
            item_id = work_item_id if work_item_id is not None else new_id("wi", cmd.now)
            # A generated id cannot collide in practice, and if it did the
            # stream's expected_version=0 would still refuse it.
            if work_item_id is not None and work_items.get(self._ctx.db.conn, item_id) is not None:
                raise InvalidArgument(f"{where} refused: work_item_id {item_id!r} already exists")
            cmd.emit(
                stream_of(item_id),
                [WorkItemEnqueued(work_item_id=item_id, task_id=task_id, kind=kind, priority=priority,
                                  max_retries=max_retries, input=input)],
                expected_version=0,
                correlation_id=task_id,
            )
            return item_id

    def claim(
        self, worker: str, lease_ms: int = 30_000, *, kinds: Sequence[str] | None = None,
        command_id: str | None = None,
    ) -> WorkItem | None:
        """Lease the next item to ``worker``: the highest-priority, oldest
        pending item (of one of ``kinds``, when given), or one whose lease
        expired (that expiry is recorded and spends a retry). Returns None
        when nothing is claimable. The returned item's ``token`` must
        accompany heartbeat/complete/fail."""
        where = "work.claim"
        check_text(where, "worker", worker)
        check_int(where, "lease_ms", lease_ms, minimum=1, maximum=MAX_LEASE_MS)
        chosen = None
        if kinds is not None:
            if isinstance(kinds, str) or not isinstance(kinds, list | tuple) or not kinds:
                raise InvalidArgument(f"{where} refused: kinds must be a non-empty list of kinds, got {kinds!r:.60}")
            chosen = tuple(check_text(where, "kinds[]", kind) for kind in kinds)
        args: dict[str, Any] = {"worker": worker, "lease_ms": lease_ms}
        if chosen is not None:
            args["kinds"] = list(chosen)
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                claimed = [r for r in cmd.previous if isinstance(r.event, WorkItemClaimed)]
                return self._replayed_item(claimed[-1]) if claimed else None
            conn = self._ctx.db.conn
            while True:
                pending = work_items.next_pending(conn, chosen)
                expired = work_items.next_expired(conn, cmd.now, chosen)
                item = _first_in_queue(pending, expired)
                if item is None:
                    return None
                if item.status == IN_PROGRESS:
                    retry = self._expire(cmd, item)
                    if not retry:
                        continue
                token = item.token + 1
                cmd.emit(
                    stream_of(item.work_item_id),
                    [WorkItemClaimed(work_item_id=item.work_item_id, worker=worker, token=token,
                                     lease_expires_at=cmd.now + lease_ms, lease_ms=lease_ms)],
                    correlation_id=item.task_id,
                )
                return self._get(item.work_item_id)

    def heartbeat(
        self, work_item_id: str, worker: str, token: int, lease_ms: int | None = None, *,
        command_id: str | None = None,
    ) -> WorkItem:
        """Extend the live lease to now + ``lease_ms`` (default: the lease's
        length, as the claim set it). The deadline never moves earlier.
        Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.heartbeat"
        self._check_holder_args(where, work_item_id, worker, token)
        if lease_ms is not None:
            check_int(where, "lease_ms", lease_ms, minimum=1, maximum=MAX_LEASE_MS)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "lease_ms": lease_ms}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._replayed_item(cmd.previous[-1])
            item = self._held(cmd, "heartbeat", work_item_id, worker, token)
            assert item.lease_expires_at is not None and item.lease_ms is not None
            length = item.lease_ms if lease_ms is None else lease_ms
            cmd.emit(
                stream_of(work_item_id),
                [WorkItemLeaseExtended(work_item_id=work_item_id, worker=worker, token=token,
                                       lease_expires_at=max(item.lease_expires_at, cmd.now + length),
                                       lease_ms=lease_ms)],
                correlation_id=item.task_id,
            )
            return self._get(work_item_id)

    def complete(
        self, work_item_id: str, worker: str, token: int, output: Any = None, *, command_id: str | None = None
    ) -> WorkItem:
        """Finish the item (terminal). Only the live lease's holder and token.
        Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.complete"
        self._check_holder_args(where, work_item_id, worker, token)
        check_json_value(where, "output", output)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "output": output}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._replayed_item(cmd.previous[-1])
            item = self._held(cmd, "complete", work_item_id, worker, token)
            cmd.emit(
                stream_of(work_item_id),
                [WorkItemCompleted(work_item_id=work_item_id, worker=worker, token=token, output=output)],
                correlation_id=item.task_id,
            )
            return self._get(work_item_id)

    def fail(
        self,
        work_item_id: str,
        worker: str,
        token: int,
        error: str,
        retryable: bool = True,
        *,
        command_id: str | None = None,
    ) -> WorkItem:
        """Report a failed attempt. With ``retryable`` and retries left the item
        goes back to pending (retry_count + 1); otherwise it is terminal
        ``failed``. Raises LeaseNotHeld, TerminalState, NotFound."""
        where = "work.fail"
        self._check_holder_args(where, work_item_id, worker, token)
        check_text(where, "error", error, max_len=65_536)
        check_bool(where, "retryable", retryable)
        args = {"work_item_id": work_item_id, "worker": worker, "token": token, "error": error,
                "retryable": retryable}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._replayed_item(cmd.previous[-1])
            item = self._held(cmd, "fail", work_item_id, worker, token)
            retry = retryable and item.retry_count < item.max_retries
            cmd.emit(
                stream_of(work_item_id),
                [WorkItemFailed(work_item_id=work_item_id, worker=worker, token=token, error=error,
                                retryable=retryable, retry=retry)],
                correlation_id=item.task_id,
            )
            return self._get(work_item_id)

    def cancel(self, work_item_id: str, reason: str, *, command_id: str | None = None) -> WorkItem:
        """Withdraw a pending or in-progress item (terminal; any lease ends).
        Raises TerminalState, NotFound."""
        where = "work.cancel"
        check_text(where, "work_item_id", work_item_id)
        check_text(where, "reason", reason, max_len=65_536)
        with self._ctx.command(where, command_id, {"work_item_id": work_item_id, "reason": reason}) as cmd:
            if cmd.previous is not None:
                return self._replayed_item(cmd.previous[-1])
            item = self._existing(where, work_item_id)
            if item.status in TERMINAL:
                raise TerminalState(
                    f"{where} refused: work item {work_item_id} is already {item.status}; terminal states never change"
                )
            cmd.emit(
                stream_of(work_item_id),
                [WorkItemCancelled(work_item_id=work_item_id, reason=reason)],
                correlation_id=item.task_id,
            )
            return self._get(work_item_id)

    def expire_leases(self, *, command_id: str | None = None) -> int:
        """The reaper: every in-progress item whose lease has run out goes back
        to pending (a retry is spent) or to failed when none are left. Returns
        how many leases expired."""
        with self._ctx.command("work.expire_leases", command_id, {}) as cmd:
            if cmd.previous is not None:
                return sum(isinstance(r.event, WorkItemLeaseExpired) for r in cmd.previous)
            items = work_items.expiring(self._ctx.db.conn, cmd.now)
            for item in items:
                self._expire(cmd, item)
            return len(items)

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

    def _get(self, work_item_id: str) -> WorkItem:
        item = work_items.get(self._ctx.db.conn, work_item_id)
        assert item is not None
        return item

    def _existing(self, where: str, work_item_id: str) -> WorkItem:
        with self._ctx.db.statement(where) as conn:
            item = work_items.get(conn, work_item_id)
        if item is None:
            raise NotFound(f"{where} refused: no work item {work_item_id!r}")
        return item

    @staticmethod
    def _check_holder_args(where: str, work_item_id: Any, worker: Any, token: Any) -> None:
        check_text(where, "work_item_id", work_item_id)
        check_text(where, "worker", worker)
        check_int(where, "token", token, minimum=1)

    def _held(self, cmd: Command, action: str, work_item_id: str, worker: str, token: int) -> WorkItem:
        """The item, if ``worker`` holds its live lease with ``token``."""
        item = self._existing(cmd.name, work_item_id)
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
        if cmd.now >= item.lease_expires_at:
            raise LeaseNotHeld(
                action, work_item_id, worker, token, item.lease_holder, item.token,
                f"but that lease expired at {item.lease_expires_at} (now {cmd.now})",
            )
        return item

    def _expire(self, cmd: Command, item: WorkItem) -> bool:
        """Record that ``item``'s lease ran out; returns whether it goes back to pending."""
        assert item.lease_holder is not None and item.lease_expires_at is not None
        retry = item.retry_count < item.max_retries
        cmd.emit(
            stream_of(item.work_item_id),
            [WorkItemLeaseExpired(work_item_id=item.work_item_id, worker=item.lease_holder, token=item.token,
                                  lease_expires_at=item.lease_expires_at, retry=retry)],
            correlation_id=item.task_id,
        )
        return retry

    def _replayed_item(self, record: Recorded) -> WorkItem:
        """The item exactly as it was right after ``record`` (for a repeated command_id)."""
        item_id = record.event.work_item_id  # type: ignore[attr-defined]
        with self._ctx.folded(work_items, stream_of(item_id), record.position) as mem:
            item = work_items.get(mem, item_id)
        assert item is not None
        return item


def _first_in_queue(a: WorkItem | None, b: WorkItem | None) -> WorkItem | None:
    """Of two candidates, the one a claim takes first: priority, then age."""
    if a is None or b is None:
        return a or b
    return min(a, b, key=lambda i: (-i.priority, i.enqueued_position))
