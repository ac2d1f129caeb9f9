"""Failures and recovery: failures grouped into patterns,
recovery attempts with their outcome and time to recovery, explanations, and
per-task counters."""

from __future__ import annotations

import builtins
import hashlib
import re
from typing import Any

from eventkernel import journal
from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound, TerminalState
from eventkernel.events.recovery import (
    AutoRecoverySet,
    FailureRecorded,
    RecoveryAttemptFinished,
    RecoveryAttemptStarted,
    RecoveryExplained,
)
from eventkernel.ids import new_id
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


class Recovery:
    """``k.recovery``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def record_failure(
        self, task_id: str, failure_type: str, error_message: str, *, context: dict[str, Any] | None = None,
        command_id: str | None = None,
    ) -> FailurePattern:
        """Record a failure; returns the pattern it was grouped into."""
        where = "recovery.record_failure"
        check_text(where, "task_id", task_id)
        check_text(where, "failure_type", failure_type)
        check_text(where, "error_message", error_message, max_len=65_536)
        check_json_dict(where, "context", context)
        sig = signature(failure_type, error_message)
        args = {"task_id": task_id, "failure_type": failure_type, "error_message": error_message, "context": context}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._pattern_as_of(sig, cmd.previous[-1].position)
            cmd.emit(
                f"recovery:{task_id}",
                [FailureRecorded(task_id=task_id, failure_type=failure_type, error_message=error_message,
                                 error_hash=_hash(error_message), signature=sig, context=context)],
                correlation_id=task_id,
            )
            found = recovery.pattern(self._ctx.db.conn, sig)
            assert found is not None
            return found

    def start_attempt(
        self, task_id: str, strategy: str, *, reasoning: str | None = None, attempt_id: str | None = None,
        command_id: str | None = None,
    ) -> RecoveryAttempt:
        """Begin a recovery attempt (numbered per task). Raises
        InvalidTransition while another attempt of the task is unfinished."""
        where = "recovery.start_attempt"
        check_text(where, "task_id", task_id)
        check_text(where, "strategy", strategy)
        check_optional_text(where, "reasoning", reasoning, max_len=65_536)
        check_optional_text(where, "attempt_id", attempt_id)
        args = {"task_id": task_id, "strategy": strategy, "reasoning": reasoning, "attempt_id": attempt_id}
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                earlier = recovery.attempts(conn, task_id)
                open_ = [a for a in earlier if a.finished_at is None]
                if open_:
                    raise InvalidTransition(
                        f"{where} refused: attempt {open_[0].attempt_id} of task {task_id} is still running; "
                        "finish it first"
                    )
                aid = attempt_id or new_id("ra", cmd.now)
                if attempt_id is not None and recovery.attempt(conn, aid) is not None:
                    raise InvalidArgument(f"{where} refused: attempt_id {aid!r} already exists")
                cmd.emit(
                    f"recovery:{task_id}",
                    [RecoveryAttemptStarted(attempt_id=aid, task_id=task_id, strategy=strategy,
                                            attempt_number=len(earlier) + 1, reasoning=reasoning)],
                    correlation_id=task_id,
                )
            else:
                aid = cmd.previous[0].event.attempt_id  # type: ignore[attr-defined]
                with self._ctx.folded(recovery, f"recovery:{task_id}", cmd.previous[-1].position) as mem:
                    found = recovery.attempt(mem, aid)
                assert found is not None
                return found
            found = recovery.attempt(conn, aid)
            assert found is not None
            return found

    def finish_attempt(
        self, attempt_id: str, *, success: bool, notes: str | None = None, command_id: str | None = None
    ) -> RecoveryAttempt:
        """Record an attempt's outcome. Raises NotFound, TerminalState."""
        where = "recovery.finish_attempt"
        check_text(where, "attempt_id", attempt_id)
        check_bool(where, "success", success)
        check_optional_text(where, "notes", notes, max_len=65_536)
        with self._ctx.command(where, command_id, {"attempt_id": attempt_id, "success": success, "notes": notes}) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is not None:
                last = cmd.previous[-1]
                with self._ctx.folded(recovery, last.stream, last.position) as mem:
                    found = recovery.attempt(mem, attempt_id)
                assert found is not None
                return found
            if cmd.previous is None:
                found = recovery.attempt(conn, attempt_id)
                if found is None:
                    raise NotFound(f"{where} refused: no recovery attempt {attempt_id!r}")
                if found.finished_at is not None:
                    outcome = "succeeded" if found.success else "failed"
                    raise TerminalState(f"{where} refused: attempt {attempt_id} already finished ({outcome})")
                cmd.emit(
                    f"recovery:{found.task_id}",
                    [RecoveryAttemptFinished(attempt_id=attempt_id, task_id=found.task_id, success=success, notes=notes)],
                    correlation_id=found.task_id,
                )
            found = recovery.attempt(conn, attempt_id)
            assert found is not None
            return found

    def explain(
        self,
        task_id: str,
        *,
        failure_summary: str,
        root_cause: str,
        retry_decision: str,
        user_action_required: str | None = None,
        severity: str = "medium",
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
        event = RecoveryExplained(task_id=task_id, failure_summary=failure_summary, root_cause=root_cause,
                                  retry_decision=retry_decision, user_action_required=user_action_required,
                                  severity=severity)
        with self._ctx.command(where, command_id, {"event": event}) as cmd:
            if cmd.previous is None:
                cmd.emit(f"recovery:{task_id}", [event], correlation_id=task_id)
                found = recovery.explanation(self._ctx.db.conn, task_id)
            else:
                with self._ctx.folded(recovery, f"recovery:{task_id}", cmd.previous[-1].position) as mem:
                    found = recovery.explanation(mem, task_id)
            assert found is not None
            return found

    def set_auto_recovery(self, task_id: str, enabled: bool, *, command_id: str | None = None) -> RecoveryTask:
        """Turn automatic recovery of a task on or off (a flag for the orchestrator)."""
        where = "recovery.set_auto_recovery"
        check_text(where, "task_id", task_id)
        check_bool(where, "enabled", enabled)
        with self._ctx.command(where, command_id, {"task_id": task_id, "enabled": enabled}) as cmd:
            if cmd.previous is not None:
                with self._ctx.folded(recovery, f"recovery:{task_id}", cmd.previous[-1].position) as mem:
                    found = recovery.task(mem, task_id)
            else:
                cmd.emit(f"recovery:{task_id}", [AutoRecoverySet(task_id=task_id, enabled=enabled)],
                         correlation_id=task_id)
                found = recovery.task(self._ctx.db.conn, task_id)
            assert found is not None
            return found

    def _pattern_as_of(self, sig: str, position: int) -> FailurePattern:
        """The failure pattern as it was right after ``position``: every
        failure of that signature, from any task, folded up to there."""
        conn = self._ctx.db.conn
        failures = [
            r for r in journal.read(conn, until=position, types=("recovery.failure_recorded",))
            if isinstance(r.event, FailureRecorded) and r.event.signature == sig
        ]
        with self._ctx.folded(recovery, "", position, records=failures) as mem:
            found = recovery.pattern(mem, sig)
        assert found is not None
        return found

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
                              lambda p: (p.occurrence_count, p.last_seen, p.pattern_signature))
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
