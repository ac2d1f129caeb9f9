"""Events of conversation sessions (stream ``session:<session_id>``).

State keys prefixed ``app:`` are shared by an app's sessions, ``user:`` keys
by one user's sessions of that app; ``temp:`` keys never reach an event.
"""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class SessionCreated(KernelEvent, tag="session.created"):
    session_id: str
    app_name: str
    user_id: str
    project_id: str | None = None
    state: dict[str, Any] = {}
    metadata: dict[str, Any] | None = None


class SessionEventAppended(KernelEvent, tag="session.event_appended"):
    """One turn of the conversation, with the state changes it made."""

    session_id: str
    seq: int
    author: str
    content: Any = None
    state_delta: dict[str, Any] = {}


class SessionStatusChanged(KernelEvent, tag="session.status_changed"):
    session_id: str
    status: str


class SessionDeleted(KernelEvent, tag="session.deleted"):
    """The session and its conversation leave every read; the app's and the
    user's shared keys stay. Its id may be used again by a new session."""

    session_id: str
