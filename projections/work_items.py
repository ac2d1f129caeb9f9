"""Projection ``work_items``: the lease-based work queue, one row per item.

Lease columns (``lease_holder``, ``lease_acquired_at``, ``lease_expires_at``,
``heartbeat_at``) describe the current lease and are NULL whenever the item
is not ``in_progress``; ``token`` keeps the latest lease's fencing token.
"""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec
from msgspec.structs import astuple

from eventkernel import codec
from eventkernel.events.retention import RowsForgotten
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
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Order, Target, Writer, limit_of, loader, order_by, raw_json, where_equal
from eventkernel.projections.rows import after as after_cursor

NAME = "work_items"
VERSION = 3  # 2: lease_ms; 3: the lease index holds live leases only
HANDLES = frozenset(
    cls.__event_type__
    for cls in (
        WorkItemEnqueued,
        WorkItemClaimed,
        WorkItemLeaseExtended,
        WorkItemCompleted,
        WorkItemFailed,
        WorkItemLeaseExpired,
        WorkItemReleased,
        WorkItemCancelled,
    )
) | {retention.FORGOTTEN}

PENDING = "pending"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


class WorkItem(msgspec.Struct, frozen=True):
    """A row of ``work_items``; ``token`` is the fencing token of the latest lease."""

    work_item_id: str
    task_id: str
    kind: str
    priority: int
    input: Any
    status: str
    attempt: int
    retry_count: int
    max_retries: int
    token: int
    lease_holder: str | None
    lease_acquired_at: int | None
    lease_expires_at: int | None
    lease_ms: int | None
    heartbeat_at: int | None
    output: Any
    error: str | None
    created_at: int
    updated_at: int
    enqueued_position: int
    position: int


_COLUMNS = ", ".join(WorkItem.__struct_fields__)
_CLEAR_LEASE = (
    "lease_holder = NULL, lease_acquired_at = NULL, lease_expires_at = NULL, lease_ms = NULL, heartbeat_at = NULL"
)


def _json(value: Any) -> str | None:
    return None if value is None else codec.dump_json(value)


def apply(conn: Target, recorded: Recorded, event: codec.Event) -> None:
    """Fold one work-item event into ``work_items``."""
    if retention.forget(conn, event, NAME, "work_item_id"):
        return
    at = recorded.recorded_at
    pos = recorded.position
    if isinstance(event, WorkItemEnqueued):
        conn.execute(
            f"INSERT INTO work_items ({_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, 'pending', 0, 0, ?, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ?, ?, ?, ?)",
            (event.work_item_id, event.task_id, event.kind, event.priority, _json(event.input),
             event.max_retries, at, at, pos, pos),
        )
    elif isinstance(event, WorkItemClaimed):
        lease_ms = event.lease_expires_at - at if event.lease_ms is None else event.lease_ms
        conn.execute(
            "UPDATE work_items SET status = 'in_progress', attempt = attempt + 1, token = ?, "
            "lease_holder = ?, lease_acquired_at = ?, lease_expires_at = ?, lease_ms = ?, heartbeat_at = NULL, "
            "updated_at = ?, position = ? WHERE work_item_id = ?",
            (event.token, event.worker, at, event.lease_expires_at, lease_ms, at, pos, event.work_item_id),
        )
    elif isinstance(event, WorkItemLeaseExtended):
        conn.execute(
            "UPDATE work_items SET lease_expires_at = ?, lease_ms = coalesce(?, lease_ms), heartbeat_at = ?, "
            "updated_at = ?, position = ? WHERE work_item_id = ?",
            (event.lease_expires_at, event.lease_ms, at, at, pos, event.work_item_id),
        )
    elif isinstance(event, WorkItemCompleted):
        conn.execute(
            f"UPDATE work_items SET status = 'completed', output = ?, {_CLEAR_LEASE}, "
            "updated_at = ?, position = ? WHERE work_item_id = ?",
            (_json(event.output), at, pos, event.work_item_id),
        )
    elif isinstance(event, WorkItemFailed | WorkItemLeaseExpired):
        if isinstance(event, WorkItemFailed):
            error = event.error
        else:
            error = f"lease of worker {event.worker!r} (token {event.token}) expired at {event.lease_expires_at}"
        conn.execute(
            f"UPDATE work_items SET status = ?, retry_count = retry_count + ?, error = ?, {_CLEAR_LEASE}, "
            "updated_at = ?, position = ? WHERE work_item_id = ?",
            (PENDING if event.retry else FAILED, int(event.retry), error, at, pos, event.work_item_id),
        )
    elif isinstance(event, WorkItemReleased):
        conn.execute(
            f"UPDATE work_items SET status = 'pending', {_CLEAR_LEASE}, updated_at = ?, position = ? "
            "WHERE work_item_id = ?",
            (at, pos, event.work_item_id),
        )
    elif isinstance(event, WorkItemCancelled):
        conn.execute(
            f"UPDATE work_items SET status = 'cancelled', error = ?, {_CLEAR_LEASE}, "
            "updated_at = ?, position = ? WHERE work_item_id = ?",
            (event.reason, at, pos, event.work_item_id),
        )


class _EnqueuedRow(msgspec.Struct, gc=False):
    work_item_id: str
    task_id: str
    kind: str
    priority: int
    max_retries: int
    input: msgspec.Raw = msgspec.Raw(b"null")


class _CompletedRow(msgspec.Struct, gc=False):
    work_item_id: str
    output: msgspec.Raw = msgspec.Raw(b"null")


class _ClaimedRow(msgspec.Struct, gc=False):
    work_item_id: str
    worker: str
    token: int
    lease_expires_at: int
    lease_ms: int | None = None


_ENQUEUED = WorkItemEnqueued.__event_type__
_CLAIMED = WorkItemClaimed.__event_type__
_COMPLETED = WorkItemCompleted.__event_type__
_enqueued = msgspec.json.Decoder(_EnqueuedRow).decode
_claimed = msgspec.json.Decoder(_ClaimedRow).decode
_completed = msgspec.json.Decoder(_CompletedRow).decode


# A ``work_items`` row being folded: mutable, fields in ``_COLUMNS`` order. It
# holds atoms only, so the garbage collector need not track it: a fold keeps
# one per item alive, and a collector walking them all at every full
# collection cost a fifth of a rebuild.
_Row: Any = msgspec.defstruct("_Row", [(name, Any) for name in WorkItem.__struct_fields__], array_like=True,
                              gc=False)


def _no_lease(row: Any) -> None:
    row.lease_holder = row.lease_acquired_at = row.lease_expires_at = row.lease_ms = row.heartbeat_at = None


class Fold:
    """The rebuild's bulk path: the rows ``apply`` would leave, folded in
    Python (one ``_Row`` per item) and written at the end
    into the empty table (by the building thread, while a second one
    writes the folds set aside). Must agree with ``apply`` exactly: rebuilt ==
    live is the property test that says so."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    def _enqueued(self, work_item_id: str, task_id: str, kind: str, priority: int, input: str | None,
                  max_retries: int, at: int, pos: int) -> None:
        if work_item_id in self.rows:
            raise apsw.ConstraintError("UNIQUE constraint failed: work_items.work_item_id")
        self.rows[work_item_id] = _Row(work_item_id, task_id, kind, priority, input, PENDING, 0, 0, max_retries, 0,
                                       None, None, None, None, None, None, None, at, at, pos, pos)

    def _claimed(self, row: Any, worker: str, token: int, lease_expires_at: int, lease_ms: int | None,
                 at: int, pos: int) -> None:
        row.status, row.attempt, row.token = IN_PROGRESS, row.attempt + 1, token
        row.lease_holder, row.lease_acquired_at, row.lease_expires_at = worker, at, lease_expires_at
        row.lease_ms = lease_expires_at - at if lease_ms is None else lease_ms
        row.heartbeat_at = None
        row.updated_at, row.position = at, pos

    def add_row(self, row: tuple[Any, ...]) -> bool:
        """Fold a journal row without building its Event, where that is the
        cheap way: an enqueue, a claim or a completion at the current
        schema, nested JSON copied as it is stored. False: use ``add``."""
        type_, schema = row[3], row[4]
        if type_ == _ENQUEUED and schema == WorkItemEnqueued.__event_schema__:
            e = _enqueued(row[5])
            self._enqueued(e.work_item_id, e.task_id, e.kind, e.priority, raw_json(e.input), e.max_retries, row[9],
                           row[0])
            return True
        if type_ == _CLAIMED and schema == WorkItemClaimed.__event_schema__:
            claim = _claimed(row[5])
            item = self.rows.get(claim.work_item_id)
            if item is not None:
                self._claimed(item, claim.worker, claim.token, claim.lease_expires_at, claim.lease_ms, row[9], row[0])
            return True
        if type_ == _COMPLETED and schema == WorkItemCompleted.__event_schema__:
            c = _completed(row[5])
            item = self.rows.get(c.work_item_id)
            if item is not None:
                item.status, item.output = COMPLETED, raw_json(c.output)
                _no_lease(item)
                item.updated_at, item.position = row[9], row[0]
            return True
        return False

    def add(self, recorded: Recorded, event: codec.Event) -> None:
        if isinstance(event, RowsForgotten):
            if event.table == NAME:
                for key in event.keys:
                    self.rows.pop(key, None)
            return
        at = recorded.recorded_at
        if isinstance(event, WorkItemEnqueued):
            self._enqueued(event.work_item_id, event.task_id, event.kind, event.priority, _json(event.input),
                           event.max_retries, at, recorded.position)
            return
        row = self.rows.get(event.work_item_id)  # type: ignore[attr-defined]
        if row is None:
            return  # as an UPDATE of no row
        if isinstance(event, WorkItemClaimed):
            self._claimed(row, event.worker, event.token, event.lease_expires_at, event.lease_ms, at,
                          recorded.position)
            return
        if isinstance(event, WorkItemLeaseExtended):
            row.lease_expires_at, row.heartbeat_at = event.lease_expires_at, at
            if event.lease_ms is not None:
                row.lease_ms = event.lease_ms
        elif isinstance(event, WorkItemCompleted):
            row.status, row.output = COMPLETED, _json(event.output)
            _no_lease(row)
        elif isinstance(event, WorkItemFailed | WorkItemLeaseExpired):
            if isinstance(event, WorkItemFailed):
                row.error = event.error
            else:
                row.error = (f"lease of worker {event.worker!r} (token {event.token}) expired at "
                             f"{event.lease_expires_at}")
            row.status = PENDING if event.retry else FAILED
            row.retry_count += int(event.retry)
            _no_lease(row)
        elif isinstance(event, WorkItemReleased):
            row.status = PENDING
            _no_lease(row)
        elif isinstance(event, WorkItemCancelled):
            row.status, row.error = CANCELLED, event.reason
            _no_lease(row)
        else:
            return
        row.updated_at, row.position = at, recorded.position

    def write(self, out: Writer) -> None:
        out.insert("work_items", _COLUMNS, map(astuple, self.rows.values()))


# --- queries --------------------------------------------------------------------


_item = loader(WorkItem, json=["input", "output"])


def get(conn: apsw.Connection, work_item_id: str) -> WorkItem | None:
    """One item by id."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM work_items WHERE work_item_id = ?", (work_item_id,)).fetchone()
    return None if row is None else _item(row)


QUEUE: Order = (("priority", True), ("enqueued_position", False))
"""Queue order: highest priority first, then oldest."""
DEADLINES: Order = (("lease_expires_at", False), ("enqueued_position", False))


def list(
    conn: apsw.Connection, *, status: str | None = None, task_id: str | None = None, limit: int | None = None,
    after: tuple[Any, ...] | None = None,
) -> builtins.list[WorkItem]:
    """Items in queue order (priority, then age) filtered by status and/or
    task, after the item whose (priority, enqueued_position) is ``after``."""
    where, args = where_equal(status=status, task_id=task_id)
    cursor, cursor_args = after_cursor(QUEUE, after)
    if cursor:
        where = f"{where} AND {cursor}" if where else f" WHERE {cursor}"
    sql = f"SELECT {_COLUMNS} FROM work_items{where} ORDER BY {order_by(QUEUE)} LIMIT ?"
    return [_item(row) for row in conn.execute(sql, (*args, *cursor_args, limit_of(limit)))]


def _kinds(kinds: tuple[str, ...] | None, task_id: str | None = None) -> tuple[str, builtins.list[Any]]:
    """The claim filters: of these kinds, of this task."""
    where, args = "", builtins.list(kinds or ())
    if kinds is not None:
        where = f" AND kind IN ({', '.join('?' * len(kinds))})"
    if task_id is not None:
        where += " AND task_id = ?"
        args.append(task_id)
    return where, args


def next_pending(
    conn: apsw.Connection, kinds: tuple[str, ...] | None = None, task_id: str | None = None
) -> WorkItem | None:
    """The pending item a claim takes first: highest priority, then oldest
    (of the given kinds, of the given task, if any)."""
    where, args = _kinds(kinds, task_id)
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM work_items WHERE status = 'pending'{where} "
        "ORDER BY priority DESC, enqueued_position LIMIT 1",
        args,
    ).fetchone()
    return None if row is None else _item(row)


def expired(
    conn: apsw.Connection, now: int, kinds: tuple[str, ...] | None = None, *, task_id: str | None = None,
    before: tuple[int, int] | None = None,
) -> builtins.list[WorkItem]:
    """In-progress items whose lease expired by ``now`` (of the given kinds),
    in queue order, that come before the item whose (priority,
    enqueued_position) is ``before`` in queue order: those a claim meets
    first."""
    where, args = _kinds(kinds, task_id)
    if before is not None:
        where += " AND (priority > ? OR (priority = ? AND enqueued_position < ?))"
        args += [before[0], before[0], before[1]]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM work_items WHERE status = 'in_progress' AND lease_expires_at <= ?{where} "
        f"ORDER BY {order_by(QUEUE)}",
        (now, *args),
    )
    return [_item(row) for row in rows]


def expiring(
    conn: apsw.Connection, before: int, *, limit: int | None = None, after: tuple[Any, ...] | None = None
) -> builtins.list[WorkItem]:
    """In-progress items whose lease ends at or before ``before``, soonest
    first, after the item whose (lease_expires_at, enqueued_position) is ``after``."""
    cursor, cursor_args = after_cursor(DEADLINES, after)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM work_items WHERE status = 'in_progress' AND lease_expires_at <= ?"
        f"{' AND ' + cursor if cursor else ''} ORDER BY {order_by(DEADLINES)} LIMIT ?",
        (before, *cursor_args, limit_of(limit)),
    )
    return [_item(row) for row in rows]


def next_deadline(conn: apsw.Connection, kinds: tuple[str, ...] | None = None, task_id: str | None = None) -> int | None:
    """The earliest deadline of a live lease (of these kinds, of this task):
    when a blocking claim may find an expired lease to take over."""
    where, args = _kinds(kinds, task_id)
    row = conn.execute(
        f"SELECT lease_expires_at FROM work_items WHERE status = 'in_progress'{where} "
        "ORDER BY lease_expires_at LIMIT 1",
        args,
    ).fetchone()
    return None if row is None else int(row[0])
