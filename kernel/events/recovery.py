"""Events of failures and recovery (stream ``recovery:<task_id>``)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class FailureRecorded(KernelEvent, tag="recovery.failure_recorded"):
    """A task failed; ``signature`` groups it with failures of the same shape."""

    task_id: str
    failure_type: str
    error_message: str
    error_hash: str
    signature: str
    context: dict[str, Any] | None = None


class RecoveryAttemptStarted(KernelEvent, tag="recovery.attempt_started"):
    attempt_id: str
    task_id: str
    strategy: str
    attempt_number: int
    reasoning: str | None = None


class RecoveryAttemptFinished(KernelEvent, tag="recovery.attempt_finished"):
    attempt_id: str
    task_id: str
    success: bool
    notes: str | None = None


class RecoveryExplained(KernelEvent, tag="recovery.explained"):
    """A human-readable account of a task's failure and what happens next."""

    task_id: str
    failure_summary: str
    root_cause: str
    retry_decision: str
    user_action_required: str | None = None
    severity: str = "medium"


class AutoRecoverySet(KernelEvent, tag="recovery.auto_recovery_set"):
    task_id: str
    enabled: bool
