"""eventkernel: an embedded, event-sourced persistence kernel for AI-agent
orchestration. Every state change is an event in a SQLite journal; every
table is a projection rebuilt from it.

    import eventkernel
    with eventkernel.open("agents.db") as k:
        item_id = k.work.enqueue("task-1", {"prompt": "hi"})
        k.memory.put("user:alice", "lang", "fr")
"""

from eventkernel.clock import FrozenClock, system_clock
from eventkernel.codec import Erased, Event, register_upcaster
from eventkernel.errors import (
    CodecError,
    CommandRejected,
    CommitFull,
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidArgument,
    InvalidTransition,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    JournalFull,
    KernelClosed,
    KernelError,
    LeaseNotHeld,
    NotAJournal,
    NotFound,
    ProjectionFailed,
    ReadOnly,
    SecretKeyError,
    TerminalState,
    UnknownEventType,
    WrongProcess,
)
from eventkernel.backup import restore
from eventkernel.journal import Recorded
from eventkernel.compaction import Compaction
from eventkernel.kernel import Erasure, Kernel, open
from eventkernel.projections.checkpoints import Checkpoint
from eventkernel.projections.configurations import ConfigEntry, ConfigVersion
from eventkernel.projections.connections import Connection
from eventkernel.projections.document_index import Document
from eventkernel.projections.idempotency_keys import IdempotencyKey
from eventkernel.projections.memory_entries import MemoryEntry
from eventkernel.projections.recovery import (
    FailurePattern,
    RecoveryAttempt,
    RecoveryExplanation,
    RecoveryStats,
    RecoveryTask,
)
from eventkernel.projections.sessions import Session, SessionEvent
from eventkernel.projections.tasks import Agent, Task, ToolExecution, Workflow, WorkflowTask
from eventkernel.projections.work_items import WorkItem
from eventkernel.services.checkpoints import Resume
from eventkernel.services.documents import DocumentHit
from eventkernel.services.idempotency import IdempotencyResult
from eventkernel.services.metrics import Health, Summary as MetricSummary, Window as MetricWindow
from eventkernel.secrets import generate_key
from eventkernel.services.retention import RETENTION_RULES, SEED_DEFAULTS as RETENTION_DEFAULTS, RetentionReport
from eventkernel.events.retention import Policy
from eventkernel.snapshots import Snapshot
from eventkernel.verify import VerifyReport
from eventkernel.version import VERSION

__version__ = VERSION

__all__ = [
    "Agent",
    "Checkpoint",
    "CodecError",
    "CommandRejected",
    "CommitFull",
    "CommitOutcomeUnknown",
    "Compaction",
    "ConcurrencyConflict",
    "ConfigEntry",
    "ConfigVersion",
    "Connection",
    "Document",
    "DocumentHit",
    "Erased",
    "Erasure",
    "Event",
    "FailurePattern",
    "FrozenClock",
    "Health",
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
    "KernelClosed",
    "KernelError",
    "LeaseNotHeld",
    "MemoryEntry",
    "MetricSummary",
    "MetricWindow",
    "NotAJournal",
    "NotFound",
    "Policy",
    "ProjectionFailed",
    "RETENTION_DEFAULTS",
    "RETENTION_RULES",
    "ReadOnly",
    "Recorded",
    "RecoveryAttempt",
    "RecoveryExplanation",
    "RecoveryStats",
    "RecoveryTask",
    "Resume",
    "RetentionReport",
    "SecretKeyError",
    "Session",
    "SessionEvent",
    "Snapshot",
    "Task",
    "TerminalState",
    "ToolExecution",
    "UnknownEventType",
    "VerifyReport",
    "WorkItem",
    "Workflow",
    "WorkflowTask",
    "WrongProcess",
    "generate_key",
    "open",
    "register_upcaster",
    "restore",
    "system_clock",
]
