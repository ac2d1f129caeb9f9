"""Events of versioned memory (stream ``memory:<namespace>/<key>``).

Every event of the stream is a version: memory version n is stream version n.
A TTL refresh (``MemoryTouched``) is not a version: it is recorded on the
memory's own second stream, ``memory_ttl:<namespace>/<key>``.
"""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class MemoryPut(KernelEvent, tag="memory.put"):
    namespace: str
    key: str
    value: Any
    memory_type: str
    metadata: dict[str, Any] | None = None
    actor: str | None = None
    expires_at: int | None = None


class MemoryDeleted(KernelEvent, tag="memory.deleted"):
    """Soft delete: the value stays in history; ``get`` returns None."""

    namespace: str
    key: str
    actor: str | None = None


class MemoryRestored(KernelEvent, tag="memory.restored"):
    """A deleted or expired memory is live again, with its last value."""

    namespace: str
    key: str
    actor: str | None = None


class MemoryRolledBack(KernelEvent, tag="memory.rolled_back"):
    """A new version equal to an older one (``to_version``)."""

    namespace: str
    key: str
    to_version: int
    value: Any
    memory_type: str
    metadata: dict[str, Any] | None = None
    actor: str | None = None


class MemoryExpired(KernelEvent, tag="memory.expired"):
    """The memory's TTL ran out (recorded by ``expire()``)."""

    namespace: str
    key: str
    expires_at: int


class MemoryPublished(KernelEvent, tag="memory.published"):
    """A copy of another namespace's memory arrived here (e.g. session → user)."""

    namespace: str
    key: str
    from_namespace: str
    from_version: int
    value: Any
    memory_type: str
    metadata: dict[str, Any] | None = None
    actor: str | None = None


class MemoryTouched(KernelEvent, tag="memory.touched"):
    """The live memory's TTL deadline moved to ``expires_at`` (its TTL counted
    again from now, as a store that refreshes on read does); not a version."""

    namespace: str
    key: str
    expires_at: int
