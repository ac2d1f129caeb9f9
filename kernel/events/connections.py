"""Events of connection tracking (streams ``connection:<connection id>``)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class ConnectionOpened(KernelEvent, tag="connection.opened"):
    """Client ``client_id`` (of ``user_id``) opened a ``connection_type``
    connection; its heartbeat counts from now."""

    connection_id: str
    client_id: str
    connection_type: str
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


class ConnectionHeartbeat(KernelEvent, tag="connection.heartbeat"):
    """The connection is alive as of this event (``metadata``, when given, replaces its metadata)."""

    connection_id: str
    metadata: dict[str, Any] | None = None


class ConnectionClosed(KernelEvent, tag="connection.closed"):
    """The connection ended: ``reason`` 'closed' (by its client) or 'timed_out'
    (the reaper: no heartbeat for ``timeout_ms``)."""

    connection_id: str
    reason: str
    timeout_ms: int | None = None
