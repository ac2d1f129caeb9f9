"""eventkernel: an embedded, event-sourced persistence kernel for AI-agent
orchestration. Every state change is an event in a SQLite journal; every
table is a projection rebuilt from it.

    import kernel
    with kernel.open("agents.db") as k:
        item_id = k.work.enqueue("task-1", {"prompt": "hi"})
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
from kernel.verify import VerifyReport
from projections.work_items import WorkItem

__version__ = "0.1.0"

__all__ = [
    "CodecError",
    "CommandRejected",
    "CommitOutcomeUnknown",
    "ConcurrencyConflict",
    "Event",
    "FrozenClock",
    "IdempotencyConflict",
    "InvalidArgument",
    "InvalidTransition",
    "JournalBusy",
    "JournalCorrupt",
    "JournalError",
    "JournalFull",
    "Kernel",
    "KernelError",
    "LeaseNotHeld",
    "NotFound",
    "ReadOnly",
    "Recorded",
    "TerminalState",
    "UnknownEventType",
    "VerifyReport",
    "WorkItem",
    "open",
    "register_upcaster",
    "system_clock",
]
