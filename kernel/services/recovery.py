"""Failures and recovery: failures grouped into patterns,
recovery attempts with their outcome and time to recovery, explanations, and
per-task counters."""

from __future__ import annotations

import builtins
import hashlib
import re
from typing import Any

import apsw

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound, TerminalState
from eventkernel.events.recovery import (
    AutoRecoverySet,
    FailureRecorded,
    RecoveryAttemptFinished,
    RecoveryAttemptStarted,
    RecoveryExplained,
)
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import recovery
from eventkernel.projections.recovery import (
    SEVERITIES,
    FailurePattern,
    RecoveryAttempt,
    RecoveryExplanation,
    RecoveryStats,
    RecoveryTask,
)
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import Args, Decision, Reads, Spec, emit, run, streams_of
from eventkernel.validate import check_bool, check_json_dict, check_limit, check_optional_text, check_text

# Masked before grouping, so "timeout after 3012 ms on req 9f3c…" and
# "timeout after 2950 ms on req 1a7b…" are one pattern.
_MASKS = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d+"), "#"),
]


def _of_task(attempt: RecoveryAttempt | None, task_id: str) -> RecoveryAttempt | None:
    return attempt if attempt is not None and attempt.task_id == task_id else None


def normalise(message: str) -> str:
    for pattern, mask in _MASKS:
        message = pattern.sub(mask, message)
    return " ".join(message.split())


def signature(failure_type: str, error_message: str) -> str:
    """The pattern a failure belongs to: a hash of its type and masked message."""
    return hashlib.sha256(f"{failure_type}\n{normalise(error_message)}".encode()).hexdigest()[:16]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the rules ---------------------------------------------------------------------------


def decide_record_failure(state: None, a: Args, now: int) -> Decision:
    return emit(
        f"recovery:{a['task_id']}",
        FailureRecorded(task_id=a["task_id"], failure_type=a["failure_type"], error_message=a["error_message"],
                        error_hash=_hash(a["error_message"]), signature=a["signature"], context=a["context"]),
        correlation_id=a["task_id"],
    )


def decide_start_attempt(state: tuple[str, bool, builtins.list[RecoveryAttempt]], a: Args, now: int) -> Decision:
    """``state``: (the attempt's id, whether one with that id exists, the
    task's attempts so far). One attempt of a task runs at a time."""
    aid, exists, earlier = state
    task_id = a["task_id"]
    running = [x for x in earlier if x.finished_at is None]
    if running:
        raise InvalidTransition(
            f"recovery.start_attempt refused: attempt {running[0].attempt_id} of task {task_id} is still running; "
            "finish it first"
        )
    if exists:
        raise InvalidArgument(f"recovery.start_attempt refused: attempt_id {aid!r} already exists")
    return emit(
        f"recovery:{task_id}",
        RecoveryAttemptStarted(attempt_id=aid, task_id=task_id, strategy=a["strategy"],
                               attempt_number=len(earlier) + 1, reasoning=a["reasoning"]),
        correlation_id=task_id,
    )


def decide_finish_attempt(attempt: RecoveryAttempt | None, a: Args, now: int) -> Decision:
    where, aid = "recovery.finish_attempt", a["attempt_id"]
    if attempt is None:
        raise NotFound(f"{where} refused: no recovery attempt {aid!r}")
    if attempt.finished_at is not None:
        outcome = "succeeded" if attempt.success else "failed"
        raise TerminalState(f"{where} refused: attempt {aid} already finished ({outcome})")
    return emit(
        f"recovery:{attempt.task_id}",
        RecoveryAttemptFinished(attempt_id=aid, task_id=attempt.task_id, success=a["success"], notes=a["notes"]),
        correlation_id=attempt.task_id,
    )


def decide_explain(state: None, a: Args, now: int) -> Decision:
    return emit(f"recovery:{a['task_id']}", RecoveryExplained(**a), correlation_id=a["task_id"])


def decide_set_auto_recovery(state: None, a: Args, now: int) -> Decision:
    return emit(f"recovery:{a['task_id']}", AutoRecoverySet(task_id=a["task_id"], enabled=a["enabled"]),
                correlation_id=a["task_id"])


def _nothing(conn: apsw.Connection, a: Args, now: int) -> None:
    return None


def _load_start(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool, builtins.list[RecoveryAttempt]]:
    given = a["attempt_id"]
    earlier = recovery.attempts(conn, a["task_id"])
    if given is None:
        return new_id("ra", now), False, earlier
    return given, recovery.attempt(conn, given) is not None, earlier


def _pattern(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> FailurePattern:
    found = recovery.pattern(reads.conn, a["signature"])
    assert found is not None
    return found


def _attempt(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> RecoveryAttempt:
    found = recovery.attempt(reads.conn, records[-1].event.attempt_id)  # type: ignore[attr-defined]
    assert found is not None
    return found


def _explanation(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> RecoveryExplanation:
    found = recovery.explanation(reads.conn, a["task_id"])
    assert found is not None
    return found


def _task(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> RecoveryTask:
    found = recovery.task(reads.conn, a["task_id"])
    assert found is not None
    return found


# A failure pattern gathers failures of every task: a retry's answer folds the whole domain.
RECORD_FAILURE: Spec[None, FailurePattern] = Spec(
    "recovery.record_failure", _nothing, decide_record_failure, _pattern, recovery)
START_ATTEMPT: Spec[Any, RecoveryAttempt] = Spec(
    "recovery.start_attempt", _load_start, decide_start_attempt, _attempt, recovery, streams_of)
FINISH_ATTEMPT: Spec[RecoveryAttempt | None, RecoveryAttempt] = Spec(
    "recovery.finish_attempt", lambda conn, a, now: recovery.attempt(conn, a["attempt_id"]), decide_finish_attempt,
    _attempt, recovery, streams_of)
EXPLAIN: Spec[None, RecoveryExplanation] = Spec(
    "recovery.explain", _nothing, decide_explain, _explanation, recovery, streams_of)
SET_AUTO_RECOVERY: Spec[None, RecoveryTask] = Spec(
    "recovery.set_auto_recovery", _nothing, decide_set_auto_recovery, _task, recovery, streams_of)


class Recovery:
    """``k.recovery``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def record_failure(
        self, task_id: str, failure_type: str, error_message: str, *, context: dict[str, Any] | None = None,
        actor: str | None = None, command_id: str | None = None,
    ) -> FailurePattern:
        """Record a failure; returns the pattern it was grouped into."""
        where = "recovery.record_failure"
        check_text(where, "task_id", task_id)
        check_text(where, "failure_type", failure_type)
        check_text(where, "error_message", error_message, max_len=65_536)
        check_json_dict(where, "context", context)
        args = {"task_id": task_id, "failure_type": failure_type, "error_message": error_message, "context": context,
                "signature": signature(failure_type, error_message)}
        return run(self._ctx, RECORD_FAILURE, args, command_id=command_id, actor=actor)

    def start_attempt(
        self, task_id: str, strategy: str, *, reasoning: str | None = None, attempt_id: str | None = None,
        actor: str | None = None, command_id: str | None = None,
    ) -> RecoveryAttempt:
        """Begin a recovery attempt (numbered per task). Raises
        InvalidTransition while another attempt of the task is unfinished."""
        where = "recovery.start_attempt"
        check_text(where, "task_id", task_id)
        check_text(where, "strategy", strategy)
        check_optional_text(where, "reasoning", reasoning, max_len=65_536)
        check_optional_text(where, "attempt_id", attempt_id)
        args = {"task_id": task_id, "strategy": strategy, "reasoning": reasoning, "attempt_id": attempt_id}
        return run(self._ctx, START_ATTEMPT, args, command_id=command_id, actor=actor)

    def finish_attempt(
        self, attempt_id: str, *, success: bool, notes: str | None = None, actor: str | None = None,
        command_id: str | None = None,
    ) -> RecoveryAttempt:
        """Record an attempt's outcome. Raises NotFound, TerminalState."""
        where = "recovery.finish_attempt"
        check_text(where, "attempt_id", attempt_id)
        check_bool(where, "success", success)
        check_optional_text(where, "notes", notes, max_len=65_536)
        return run(self._ctx, FINISH_ATTEMPT, {"attempt_id": attempt_id, "success": success, "notes": notes},
                   command_id=command_id, actor=actor)

    def explain(
        self,
        task_id: str,
        *,
        failure_summary: str,
        root_cause: str,
        retry_decision: str,
        user_action_required: str | None = None,
        severity: str = "medium",
        actor: str | None = None,
        command_id: str | None = None,
    ) -> RecoveryExplanation:
        """Record the task's explanation (the latest one is kept in the table)."""
        where = "recovery.explain"
        check_text(where, "task_id", task_id)
        for name, value in (("failure_summary", failure_summary), ("root_cause", root_cause),
                            ("retry_decision", retry_decision)):
            check_text(where, name, value, max_len=65_536)
        check_optional_text(where, "user_action_required", user_action_required, max_len=65_536)
        if severity not in SEVERITIES:
            raise InvalidArgument(f"{where} refused: severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        args = {"task_id": task_id, "failure_summary": failure_summary, "root_cause": root_cause,
                "retry_decision": retry_decision, "user_action_required": user_action_required, "severity": severity}
        return run(self._ctx, EXPLAIN, args, command_id=command_id, actor=actor)

    def set_auto_recovery(
        self, task_id: str, enabled: bool, *, actor: str | None = None, command_id: str | None = None
    ) -> RecoveryTask:
        """Turn automatic recovery of a task on or off (a flag for the orchestrator)."""
        where = "recovery.set_auto_recovery"
        check_text(where, "task_id", task_id)
        check_bool(where, "enabled", enabled)
        return run(self._ctx, SET_AUTO_RECOVERY, {"task_id": task_id, "enabled": enabled}, command_id=command_id,
                   actor=actor)

    # --- queries --------------------------------------------------------------------

    def stats(self) -> RecoveryStats:
        """Finished attempts, successes, success rate and mean time to recovery."""
        with self._ctx.db.read("recovery.stats") as conn:
            return recovery.stats(conn)

    def patterns(self, limit: int | None = 10, *, after_key: str | None = None) -> builtins.list[FailurePattern]:
        """The most frequent failure patterns first; at most ``limit``, after
        the pattern ``after_key`` (the signature of the last pattern of the previous page)."""
        where = "recovery.patterns"
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: recovery.pattern(conn, i), "failure pattern",
                              lambda p: (p.occurrence_count, p.last_seen_at, p.pattern_signature))
            return recovery.patterns(conn, limit, after=after)

    def attempts(
        self, task_id: str, *, limit: int | None = None, after_key: str | None = None
    ) -> builtins.list[RecoveryAttempt]:
        """A task's recovery attempts by number; at most ``limit``, after the attempt ``after_key``."""
        where = "recovery.attempts"
        check_text(where, "task_id", task_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: _of_task(recovery.attempt(conn, i), task_id),
                              f"attempt of task {task_id!r}", lambda a: (a.attempt_number,))
            return recovery.attempts(conn, task_id, limit=limit, after=0 if after is None else after[0])

    def explanation(self, task_id: str) -> RecoveryExplanation | None:
        check_text("recovery.explanation", "task_id", task_id)
        with self._ctx.db.read("recovery.explanation") as conn:
            return recovery.explanation(conn, task_id)

    def task(self, task_id: str) -> RecoveryTask | None:
        """The task's counters, or None if nothing was recorded for it."""
        check_text("recovery.task", "task_id", task_id)
        with self._ctx.db.read("recovery.task") as conn:
            return recovery.task(conn, task_id)
