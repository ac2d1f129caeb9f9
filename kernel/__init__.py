"""eventkernel: an embedded, event-sourced persistence kernel for AI-agent
orchestration. Every state change is an event in a SQLite journal; every
table is a projection rebuilt from it.

    import kernel
    with kernel.open("agents.db") as k:
        item_id = k.work.enqueue("task-1", {"prompt": "hi"})
        k.memory.put("user:alice", "lang", "fr")
"""

from kernel.clock import FrozenClock, system_clock
from kernel.codec import Event, register_upcaster
from kernel.errors import (
    CodecError,
    CommandRejected,
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidArgument,
    InvalidTransition,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    JournalFull,
    KernelError,
    LeaseNotHeld,
    NotFound,
    ReadOnly,
    TerminalState,
    UnknownEventType,
)
from kernel.journal import Recorded
from kernel.kernel import Kernel, open
from kernel.services.checkpoints import Resume
from kernel.services.idempotency import IdempotencyResult
from kernel.verify import VerifyReport
from projections.checkpoints import Checkpoint
from projections.idempotency_keys import IdempotencyKey
from projections.memory_entries import MemoryEntry
from projections.recovery import FailurePattern, RecoveryAttempt, RecoveryExplanation, RecoveryStats, RecoveryTask
from projections.sessions import Session, SessionEvent
from projections.tasks import Agent, Task, ToolExecution, Workflow, WorkflowTask
from projections.work_items import WorkItem

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Checkpoint",
    "CodecError",
    "CommandRejected",
    "CommitOutcomeUnknown",
    "ConcurrencyConflict",
    "Event",
    "FailurePattern",
    "FrozenClock",
    "IdempotencyConflict",
    "IdempotencyKey",
    "IdempotencyResult",
    "InvalidArgument",
    "InvalidTransition",
    "JournalBusy",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "Kernel",
    "KernelError",
    "LeaseNotHeld",
    "MemoryEntry",
    "NotFound",
    "ReadOnly",
    "Recorded",
    "RecoveryAttempt",
    "RecoveryExplanation",
    "RecoveryStats",
    "RecoveryTask",
    "Resume",
    "Session",
    "SessionEvent",
    "Task",
    "TerminalState",
    "ToolExecution",
    "UnknownEventType",
    "VerifyReport",
    "WorkItem",
    "Workflow",
    "WorkflowTask",
    "open",
    "register_upcaster",
    "system_clock",
]
