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

from eventkernel import codec
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
from eventkernel.events.retention import RowsForgotten
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Order, Target, limit_of, loader, order_by, raw_json, where_equal
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


class _EnqueuedRow(msgspec.Struct):
    work_item_id: str
    task_id: str
    kind: str
    priority: int
    max_retries: int
    input: msgspec.Raw = msgspec.Raw(b"null")


class _CompletedRow(msgspec.Struct):
    work_item_id: str
    output: msgspec.Raw = msgspec.Raw(b"null")


_ENQUEUED = WorkItemEnqueued.__event_type__
_COMPLETED = WorkItemCompleted.__event_type__
_enqueued = msgspec.json.Decoder(_EnqueuedRow).decode
_completed = msgspec.json.Decoder(_CompletedRow).decode


class Fold:
    """The rebuild's bulk path: the rows ``apply`` would leave, folded in
    Python (one list per item, in ``_COLUMNS`` order) and written with one
    ``executemany`` into the empty table. Must agree with ``apply`` exactly:
    rebuilt == live is the property test that says so."""

    def __init__(self) -> None:
        self.rows: dict[str, builtins.list[Any]] = {}

    def add_row(self, row: tuple[Any, ...]) -> bool:
        """Fold a journal row without building its Event, where that is the
        cheap way: an enqueue or a completion at the current schema, whose
        nested JSON is copied as it is stored. False: use ``add``."""
        type_, schema = row[3], row[4]
        if type_ == _ENQUEUED and schema == WorkItemEnqueued.__event_schema__:
            e = _enqueued(row[5])
            if e.work_item_id in self.rows:
                raise apsw.ConstraintError("UNIQUE constraint failed: work_items.work_item_id")
            at, pos = row[9], row[0]
            self.rows[e.work_item_id] = [
                e.work_item_id, e.task_id, e.kind, e.priority, raw_json(e.input), PENDING, 0, 0,
                e.max_retries, 0, None, None, None, None, None, None, None, at, at, pos, pos,
            ]
            return True
        if type_ == _COMPLETED and schema == WorkItemCompleted.__event_schema__:
            c = _completed(row[5])
            item = self.rows.get(c.work_item_id)
            if item is not None:
                item[5], item[15] = COMPLETED, raw_json(c.output)
                item[10:15] = [None] * 5
                item[18], item[20] = row[9], row[0]
            return True
        return False

    def add(self, recorded: Recorded, event: codec.Event) -> None:
        if isinstance(event, RowsForgotten):
            if event.table == NAME:
                for key in event.keys:
                    self.rows.pop(key, None)
            return
        at = recorded.recorded_at
        pos = recorded.position
        if isinstance(event, WorkItemEnqueued):
            if event.work_item_id in self.rows:
                raise apsw.ConstraintError("UNIQUE constraint failed: work_items.work_item_id")
            self.rows[event.work_item_id] = [
                event.work_item_id, event.task_id, event.kind, event.priority, _json(event.input), PENDING, 0, 0,
                event.max_retries, 0, None, None, None, None, None, None, None, at, at, pos, pos,
            ]
            return
        row = self.rows.get(event.work_item_id)  # type: ignore[attr-defined]
        if row is None:
            return  # as an UPDATE of no row
        if isinstance(event, WorkItemClaimed):
            lease_ms = event.lease_expires_at - at if event.lease_ms is None else event.lease_ms
            row[5], row[6], row[9] = IN_PROGRESS, row[6] + 1, event.token
            row[10:15] = [event.worker, at, event.lease_expires_at, lease_ms, None]
        elif isinstance(event, WorkItemLeaseExtended):
            row[12], row[14] = event.lease_expires_at, at
            if event.lease_ms is not None:
                row[13] = event.lease_ms
        elif isinstance(event, WorkItemCompleted):
            row[5], row[15] = COMPLETED, _json(event.output)
            row[10:15] = [None] * 5
        elif isinstance(event, WorkItemFailed | WorkItemLeaseExpired):
            if isinstance(event, WorkItemFailed):
                row[16] = event.error
            else:
                row[16] = (f"lease of worker {event.worker!r} (token {event.token}) expired at "
                           f"{event.lease_expires_at}")
            row[5] = PENDING if event.retry else FAILED
            row[7] += int(event.retry)
            row[10:15] = [None] * 5
        elif isinstance(event, WorkItemReleased):
            row[5] = PENDING
            row[10:15] = [None] * 5
        elif isinstance(event, WorkItemCancelled):
            row[5], row[16] = CANCELLED, event.reason
            row[10:15] = [None] * 5
        else:
            return
        row[18], row[20] = at, pos

    def write(self, conn: apsw.Connection) -> None:
        conn.executemany(f"INSERT INTO work_items ({_COLUMNS}) VALUES ({', '.join('?' * 21)})", self.rows.values())


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
