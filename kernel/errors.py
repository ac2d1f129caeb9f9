"""The errors eventkernel raises. Every one derives from :class:`KernelError`.

::

    KernelError
    ├── CommandRejected            a command broke a rule; nothing was appended
    │   ├── NotFound               (also LookupError) no such work item, stream, …
    │   ├── InvalidTransition      the state machine does not allow that move
    │   │   └── TerminalState      the thing is completed/failed/cancelled for good
    │   ├── LeaseNotHeld           heartbeat/complete/fail without the live lease
    │   ├── ConcurrencyConflict    expected_version did not match the stream
    │   ├── IdempotencyConflict    an event id or command id reused for other content
    │   ├── ReadOnly               a write through a read-only view
    │   ├── ProjectionFailed       a projection raised while applying the command's events
    │   ├── SecretKeyError         a secret value without the key it needs (never shows the value)
    │   └── InvalidArgument        (also ValueError) bad input refused at the door
    ├── KernelClosed               the kernel was closed (also wakes waiting subscribers)
    ├── WrongProcess               a kernel used in another process than the one that opened it
    ├── JournalError               the storage failed, not a rule
    │   ├── NotAJournal            the file is not an eventkernel journal (or is a newer one)
    │   ├── JournalBusy            (also TimeoutError) another writer held the lock too long
    │   ├── JournalFull            the disk or the database size limit is full
    │   │   └── CommitFull         ... found by COMMIT itself (also a CommitOutcomeUnknown)
    │   ├── JournalCorrupt         the file is not a sound database / journal
    │   └── CommitOutcomeUnknown   COMMIT failed; the batch may or may not be durable
    └── CodecError                 an event could not be encoded or decoded
        └── UnknownEventType       no Event class is registered for a stored type

Messages say what was attempted, why it was refused, and the values involved.
``apsw`` exceptions never cross the public API; the cause is kept as
``__cause__``.
"""

from __future__ import annotations


class KernelError(Exception):
    """Root of every error eventkernel raises."""


class CommandRejected(KernelError):
    """A command was refused by a rule; the journal and tables are unchanged."""


class NotFound(CommandRejected, LookupError):
    """The command or query names something that does not exist."""


class InvalidTransition(CommandRejected):
    """The requested state change is not allowed from the current state."""


class TerminalState(InvalidTransition):
    """The target is in a terminal state (completed, failed, cancelled)."""


class LeaseNotHeld(CommandRejected):
    """heartbeat/complete/fail by a worker that does not hold the live lease."""

    def __init__(
        self,
        action: str,
        work_item_id: str,
        worker: str,
        token: int,
        holder: str | None,
        live_token: int | None,
        reason: str,
    ) -> None:
        self.action = action
        self.work_item_id = work_item_id
        self.worker = worker
        self.token = token
        self.holder = holder
        self.live_token = live_token
        self.reason = reason
        super().__init__(
            f"cannot {action} {work_item_id}: worker {worker!r} presented token {token}, {reason}"
        )


class ConcurrencyConflict(CommandRejected):
    """An append's expected_version did not match the stream's current version."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"cannot append to {stream!r}: expected version {expected}, "
            f"the stream is at version {actual}"
        )


class IdempotencyConflict(CommandRejected):
    """An event id or command id was reused with different content."""


class ReadOnly(CommandRejected):
    """A write was attempted through a read-only view or connection."""


class ProjectionFailed(CommandRejected):
    """A projection raised while applying a command's events: the command was
    refused and nothing was written. The projection's own exception is the
    ``__cause__``."""

    def __init__(self, projection: str, event_type: str, position: int, error: BaseException) -> None:
        self.projection = projection
        self.event_type = event_type
        self.position = position
        super().__init__(
            f"projection {projection!r} failed on {event_type} (position {position}): "
            f"{type(error).__name__}: {error}; nothing was written"
        )


class SecretKeyError(CommandRejected):
    """A secret configuration value was set or read without the secret key
    it needs (none given, another key, or a key that is not one). The
    message names the key ids, never a key or a value."""


class InvalidArgument(CommandRejected, ValueError):
    """An argument was refused at the door; nothing was written."""


class KernelClosed(KernelError):
    """The kernel was closed: every later use raises this, and a subscription
    or a blocking claim waiting at the time wakes up with it."""


class WrongProcess(KernelError):
    """A kernel used after fork() in the child, or unpickled in another
    process: SQLite connections do not cross processes; open one per process."""


class JournalError(KernelError):
    """The storage layer failed (I/O, locking, corruption), not a rule."""


class NotAJournal(JournalError):
    """The file is not an eventkernel journal, or was made by a newer eventkernel;
    it was refused before anything was written to it."""

    def __init__(self, path: str, found: str, *, doing: str = "open") -> None:
        self.path = path
        self.found = found
        super().__init__(f"{doing} refused: {path!r} is not an eventkernel journal this version can open: {found}")


class JournalBusy(JournalError, TimeoutError):
    """The database stayed locked by another writer past the busy timeout."""


class JournalFull(JournalError):
    """The disk, or the database's size limit, is full; nothing was written."""


class JournalCorrupt(JournalError):
    """The file is not a sound SQLite database or not an eventkernel journal."""


class CommitOutcomeUnknown(JournalError):
    """COMMIT reported an error: the transaction may or may not be durable.

    Retry the same command with the same ``command_id`` (or the same
    ``event_ids``): a retry of something that did commit returns the original
    result and appends nothing. The kernel has already reopened its
    connection, because after a failed fsync the OS may have dropped dirty
    pages.
    """


class CommitFull(JournalFull, CommitOutcomeUnknown):
    """COMMIT itself hit a full disk. As a :class:`JournalFull`, free some
    space; as a :class:`CommitOutcomeUnknown`, retry with the same
    ``command_id``: the write of the commit may have reached the file before
    the disk filled up, so the outcome is not known."""


class CodecError(KernelError):
    """An event could not be encoded or decoded."""


class UnknownEventType(CodecError, LookupError):
    """A stored event type has no registered Event class in this process."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(
            f"cannot decode event type {type_name!r}: no Event class is registered "
            "with that tag in this process (import the module that defines it)"
        )
