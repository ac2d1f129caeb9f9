"""Projection ``recovery``: attempts, failure patterns, explanations and
per-task counters."""

from __future__ import annotations

import builtins
import warnings
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.recovery import (
    AutoRecoverySet,
    FailureRecorded,
    RecoveryAttemptFinished,
    RecoveryAttemptStarted,
    RecoveryExplained,
)
from eventkernel.events.retention import RowsForgotten
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Order, Target, Writer, columns, limit_of, loader, order_by
from eventkernel.projections.rows import after as after_cursor

NAME = "recovery"
VERSION = 3  # 2: failure_patterns_top ends with the signature (a total order for cursors); 3: *_seen_at
HANDLES = frozenset(
    c.__event_type__
    for c in (FailureRecorded, RecoveryAttemptStarted, RecoveryAttemptFinished, RecoveryExplained, AutoRecoverySet)
) | {retention.FORGOTTEN}
SEVERITIES = ("low", "medium", "high", "critical")


class RecoveryAttempt(msgspec.Struct, frozen=True):
    attempt_id: str
    task_id: str
    strategy: str
    attempt_number: int
    started_at: int
    finished_at: int | None
    success: bool | None
    reasoning: str | None
    notes: str | None
    resolution_ms: int | None
    position: int


class FailurePattern(msgspec.Struct, frozen=True):
    pattern_signature: str
    failure_type: str
    error_message_hash: str
    example_message: str
    occurrence_count: int
    first_seen_at: int
    last_seen_at: int
    confidence: float
    position: int

    @property
    def first_seen(self) -> int:
        """Deprecated since 0.2.0: ``first_seen_at``."""
        _deprecated("FailurePattern.first_seen", "FailurePattern.first_seen_at")
        return self.first_seen_at

    @property
    def last_seen(self) -> int:
        """Deprecated since 0.2.0: ``last_seen_at``."""
        _deprecated("FailurePattern.last_seen", "FailurePattern.last_seen_at")
        return self.last_seen_at


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in 0.3.0; use {new}", DeprecationWarning, stacklevel=3)


class RecoveryExplanation(msgspec.Struct, frozen=True):
    task_id: str
    failure_summary: str
    root_cause: str
    retry_decision: str
    user_action_required: str | None
    severity: str
    created_at: int
    position: int


class RecoveryTask(msgspec.Struct, frozen=True):
    task_id: str
    failure_count: int
    recovery_count: int
    last_failure_type: str | None
    last_failure_at: int | None
    last_recovery_attempt_at: int | None
    auto_recovery_enabled: bool
    position: int


class RecoveryStats(msgspec.Struct, frozen=True, kw_only=True):
    """Over finished attempts: how many, how many succeeded, and the mean
    time from start to a successful finish."""

    attempts: int
    successes: int
    success_rate: float | None
    mean_time_to_recovery_ms: float | None


_ACOLS, _PCOLS = columns(RecoveryAttempt), columns(FailurePattern)
_ECOLS, _TCOLS = columns(RecoveryExplanation), columns(RecoveryTask)
_load_attempt = loader(RecoveryAttempt, flags=["success"])
_load_pattern = loader(FailurePattern)
_load_explanation = loader(RecoveryExplanation)
_load_task = loader(RecoveryTask, flags=["auto_recovery_enabled"])


def _task_row(conn: Target, task_id: str, pos: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO recovery_tasks (task_id, failure_count, recovery_count, auto_recovery_enabled, position) "
        "VALUES (?, 0, 0, 1, ?)",
        (task_id, pos),
    )


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if retention.forget(conn, event, "recovery_attempts", "attempt_id") \
            or retention.forget(conn, event, "failure_patterns", "pattern_signature"):
        return
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, FailureRecorded):
        conn.execute(
            f"INSERT INTO failure_patterns ({_PCOLS}) VALUES (?, ?, ?, ?, 1, ?, ?, 0.5, ?) "
            "ON CONFLICT (pattern_signature) DO UPDATE SET occurrence_count = occurrence_count + 1, "
            "error_message_hash = excluded.error_message_hash, example_message = excluded.example_message, "
            "last_seen_at = excluded.last_seen_at, confidence = 1.0 - 1.0 / (2 + occurrence_count), "
            "position = excluded.position",
            (event.signature, event.failure_type, event.error_hash, event.error_message, at, at, pos),
        )
        _task_row(conn, event.task_id, pos)
        conn.execute(
            "UPDATE recovery_tasks SET failure_count = failure_count + 1, last_failure_type = ?, "
            "last_failure_at = ?, position = ? WHERE task_id = ?",
            (event.failure_type, at, pos, event.task_id),
        )
    elif isinstance(event, RecoveryAttemptStarted):
        conn.execute(
            f"INSERT INTO recovery_attempts ({_ACOLS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, NULL, NULL, ?)",
            (event.attempt_id, event.task_id, event.strategy, event.attempt_number, at, event.reasoning, pos),
        )
        _task_row(conn, event.task_id, pos)
        conn.execute(
            "UPDATE recovery_tasks SET recovery_count = recovery_count + 1, last_recovery_attempt_at = ?, "
            "position = ? WHERE task_id = ?",
            (at, pos, event.task_id),
        )
    elif isinstance(event, RecoveryAttemptFinished):
        conn.execute(
            "UPDATE recovery_attempts SET finished_at = ?, success = ?, notes = ?, resolution_ms = ? - started_at, "
            "position = ? WHERE attempt_id = ?",
            (at, int(event.success), event.notes, at, pos, event.attempt_id),
        )
    elif isinstance(event, RecoveryExplained):
        conn.execute(
            f"INSERT OR REPLACE INTO recovery_explanations ({_ECOLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event.task_id, event.failure_summary, event.root_cause, event.retry_decision,
             event.user_action_required, event.severity, at, pos),
        )
    elif isinstance(event, AutoRecoverySet):
        _task_row(conn, event.task_id, pos)
        conn.execute(
            "UPDATE recovery_tasks SET auto_recovery_enabled = ?, position = ? WHERE task_id = ?",
            (int(event.enabled), pos, event.task_id),
        )


class _FailureRow(msgspec.Struct, gc=False):
    """What the fold reads of a ``recovery.failure_recorded``."""

    task_id: str
    failure_type: str
    error_message: str
    error_hash: str
    signature: str


_FAILED = FailureRecorded.__event_type__
_failure_row = msgspec.json.Decoder(_FailureRow).decode


class Fold:
    """The rebuild's bulk path: the four tables' rows as ``apply`` leaves
    them, folded in Python and written with one ``executemany`` each. The
    confidence is computed as SQLite computes it (IEEE doubles)."""

    def __init__(self) -> None:
        self.attempts: dict[str, builtins.list[Any]] = {}
        self.patterns: dict[str, builtins.list[Any]] = {}
        self.explanations: dict[str, tuple[Any, ...]] = {}
        self.tasks: dict[str, builtins.list[Any]] = {}

    def add_row(self, row: tuple[Any, ...]) -> bool:
        """Fold a failure at the current schema from its stored JSON (its
        context, which no table keeps, skipped unread). False: use ``add``."""
        if row[3] != _FAILED or row[4] != FailureRecorded.__event_schema__:
            return False
        e = _failure_row(row[5])
        self._failed(e.signature, e.failure_type, e.error_hash, e.error_message, e.task_id, row[9], row[0])
        return True

    def _failed(self, signature: str, failure_type: str, error_hash: str, error_message: str, task_id: str,
                at: int, pos: int) -> None:
        p = self.patterns.get(signature)
        if p is None:
            self.patterns[signature] = [signature, failure_type, error_hash, error_message, 1, at, at, 0.5, pos]
        else:
            p[7] = 1.0 - 1.0 / (2 + p[4])
            p[2], p[3], p[4], p[6], p[8] = error_hash, error_message, p[4] + 1, at, pos
        task = self._task(task_id, pos)
        task[1] += 1
        task[3], task[4], task[7] = failure_type, at, pos

    def _task(self, task_id: str, pos: int) -> builtins.list[Any]:
        task = self.tasks.get(task_id)
        if task is None:
            task = self.tasks[task_id] = [task_id, 0, 0, None, None, None, 1, pos]
        return task

    def add(self, recorded: Recorded, event: Event) -> None:
        if isinstance(event, RowsForgotten):
            rows = {"recovery_attempts": self.attempts, "failure_patterns": self.patterns}.get(event.table)
            for key in event.keys if rows is not None else ():
                rows.pop(key, None)  # type: ignore[union-attr]
            return
        at, pos = recorded.recorded_at, recorded.position
        if isinstance(event, FailureRecorded):
            self._failed(event.signature, event.failure_type, event.error_hash, event.error_message, event.task_id,
                         at, pos)
        elif isinstance(event, RecoveryAttemptStarted):
            if event.attempt_id in self.attempts:
                raise apsw.ConstraintError("UNIQUE constraint failed: recovery_attempts.attempt_id")
            self.attempts[event.attempt_id] = [event.attempt_id, event.task_id, event.strategy, event.attempt_number,
                                               at, None, None, event.reasoning, None, None, pos]
            task = self._task(event.task_id, pos)
            task[2] += 1
            task[5], task[7] = at, pos
        elif isinstance(event, RecoveryAttemptFinished):
            a = self.attempts.get(event.attempt_id)
            if a is not None:
                a[5], a[6], a[8], a[9], a[10] = at, int(event.success), event.notes, at - a[4], pos
        elif isinstance(event, RecoveryExplained):
            self.explanations[event.task_id] = (
                event.task_id, event.failure_summary, event.root_cause, event.retry_decision,
                event.user_action_required, event.severity, at, pos,
            )
        elif isinstance(event, AutoRecoverySet):
            task = self._task(event.task_id, pos)
            task[6], task[7] = int(event.enabled), pos

    def write(self, out: Writer) -> None:
        out.insert("recovery_attempts", _ACOLS, self.attempts.values())
        out.insert("failure_patterns", _PCOLS, self.patterns.values())
        out.insert("recovery_explanations", _ECOLS, self.explanations.values())
        out.insert("recovery_tasks", _TCOLS, self.tasks.values())


# --- queries ----------------------------------------------------------------------


def attempt(conn: apsw.Connection, attempt_id: str) -> RecoveryAttempt | None:
    row = conn.execute(f"SELECT {_ACOLS} FROM recovery_attempts WHERE attempt_id = ?", (attempt_id,)).fetchone()
    return None if row is None else _load_attempt(row)


def attempts(
    conn: apsw.Connection, task_id: str, *, limit: int | None = None, after: int = 0
) -> builtins.list[RecoveryAttempt]:
    """A task's attempts by number, after attempt number ``after``."""
    rows = conn.execute(
        f"SELECT {_ACOLS} FROM recovery_attempts WHERE task_id = ? AND attempt_number > ? ORDER BY attempt_number "
        "LIMIT ?",
        (task_id, after, limit_of(limit)),
    )
    return [_load_attempt(r) for r in rows]


def pattern(conn: apsw.Connection, signature: str) -> FailurePattern | None:
    row = conn.execute(f"SELECT {_PCOLS} FROM failure_patterns WHERE pattern_signature = ?", (signature,)).fetchone()
    return None if row is None else _load_pattern(row)


FREQUENT: Order = (("occurrence_count", True), ("last_seen_at", True), ("pattern_signature", False))


def patterns(
    conn: apsw.Connection, limit: int | None = None, *, after: tuple[Any, ...] | None = None
) -> builtins.list[FailurePattern]:
    """The most frequent patterns first, after the pattern whose
    (occurrence_count, last_seen_at, pattern_signature) is ``after``."""
    cursor, args = after_cursor(FREQUENT, after)
    rows = conn.execute(
        f"SELECT {_PCOLS} FROM failure_patterns{' WHERE ' + cursor if cursor else ''} ORDER BY {order_by(FREQUENT)} "
        "LIMIT ?",
        (*args, limit_of(limit)),
    )
    return [_load_pattern(r) for r in rows]


def explanation(conn: apsw.Connection, task_id: str) -> RecoveryExplanation | None:
    row = conn.execute(f"SELECT {_ECOLS} FROM recovery_explanations WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else _load_explanation(row)


def task(conn: apsw.Connection, task_id: str) -> RecoveryTask | None:
    row = conn.execute(f"SELECT {_TCOLS} FROM recovery_tasks WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else _load_task(row)


def stats(conn: apsw.Connection) -> RecoveryStats:
    row = conn.execute(
        "SELECT count(*), coalesce(sum(success), 0), avg(CASE WHEN success = 1 THEN resolution_ms END) "
        "FROM recovery_attempts WHERE finished_at IS NOT NULL"
    ).fetchone()
    assert row is not None  # an aggregate always returns a row
    finished, successes, mttr = row
    return RecoveryStats(
        attempts=finished,
        successes=successes,
        success_rate=None if finished == 0 else successes / finished,
        mean_time_to_recovery_ms=mttr,
    )
