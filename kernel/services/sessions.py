"""Conversation sessions.

Lifecycle: created → active ⇄ paused → terminated → archived (created and
paused may also be terminated). The first event makes a created session
active; events are refused while paused, terminated or archived. State keys
``app:``/``user:`` are shared by the app's / the user's sessions; ``temp:``
keys are dropped before anything is written.
"""

from __future__ import annotations

import builtins
from typing import Any

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound
from eventkernel.events.sessions import SessionCreated, SessionEventAppended, SessionStatusChanged
from eventkernel.ids import new_id
from eventkernel.projections import sessions
from eventkernel.projections.sessions import STATUSES, TEMP, Session, SessionEvent
from eventkernel.services.base import Context, after_row
from eventkernel.validate import (
    check_int,
    check_json_dict,
    check_json_value,
    check_limit,
    check_optional_text,
    check_text,
)

TRANSITIONS = {
    "created": ("active", "terminated"),
    "active": ("paused", "terminated"),
    "paused": ("active", "terminated"),
    "terminated": ("archived",),
    "archived": (),
}


def _persisted(state: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (state or {}).items() if not k.startswith(TEMP)}


class Sessions:
    """``k.sessions``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def create(
        self,
        app_name: str,
        user_id: str,
        *,
        session_id: str | None = None,
        project_id: str | None = None,
        state: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        command_id: str | None = None,
    ) -> Session:
        """Start a session (status ``created``). Raises InvalidArgument."""
        where = "sessions.create"
        check_text(where, "app_name", app_name)
        check_text(where, "user_id", user_id)
        check_optional_text(where, "session_id", session_id)
        check_optional_text(where, "project_id", project_id)
        check_json_dict(where, "state", state)
        check_json_dict(where, "metadata", metadata)
        kept = _persisted(state)
        args = {"app_name": app_name, "user_id": user_id, "session_id": session_id, "project_id": project_id,
                "state": kept, "metadata": metadata}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._as_of(cmd.previous[0].event.session_id, cmd.previous[-1].position)  # type: ignore[attr-defined]
            sid = session_id or new_id("ses", cmd.now)
            if session_id is not None and sessions.get_own(self._ctx.db.conn, sid) is not None:
                raise InvalidArgument(f"{where} refused: session_id {sid!r} already exists")
            cmd.emit(
                f"session:{sid}",
                [SessionCreated(session_id=sid, app_name=app_name, user_id=user_id, project_id=project_id,
                                state=kept, metadata=metadata)],
                expected_version=0,
            )
            return self._current(sid)

    def append_event(
        self,
        session_id: str,
        *,
        author: str,
        content: Any,
        state_delta: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        command_id: str | None = None,
    ) -> SessionEvent:
        """Add one turn to the conversation and apply its state delta.
        ``correlation_id`` (a task id) files the turn under that task, so
        ``checkpoints.resume(task)`` includes it. Raises NotFound,
        InvalidTransition (paused, terminated, archived)."""
        where = "sessions.append_event"
        check_text(where, "session_id", session_id)
        check_text(where, "author", author)
        check_json_value(where, "content", content)
        check_json_dict(where, "state_delta", state_delta)
        check_optional_text(where, "correlation_id", correlation_id)
        delta = _persisted(state_delta)
        args = {"session_id": session_id, "author": author, "content": content, "state_delta": delta}
        if correlation_id is not None:
            args["correlation_id"] = correlation_id
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                s = self._existing(where, session_id)
                if s.status not in ("created", "active"):
                    hint = "; set_status(…, 'active') first" if s.status == "paused" else ""
                    raise InvalidTransition(f"{where} refused: session {session_id} is {s.status}{hint}")
                seq = s.event_count + 1
                cmd.emit(
                    f"session:{session_id}",
                    [SessionEventAppended(session_id=session_id, seq=seq, author=author, content=content,
                                          state_delta=delta)],
                    correlation_id=correlation_id,
                )
            else:
                seq = cmd.previous[0].event.seq  # type: ignore[attr-defined]
            found = sessions.event(conn, session_id, seq)
            assert found is not None
            return found

    def set_status(self, session_id: str, status: str, *, command_id: str | None = None) -> Session:
        """Move the session through its lifecycle; the same status again is a
        no-op. Raises NotFound, InvalidArgument, InvalidTransition."""
        where = "sessions.set_status"
        check_text(where, "session_id", session_id)
        if status not in STATUSES:
            raise InvalidArgument(f"{where} refused: status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._ctx.command(where, command_id, {"session_id": session_id, "status": status}) as cmd:
            if cmd.previous is not None:
                return self._as_of(session_id, cmd.previous[-1].position)
            s = self._existing(where, session_id)
            if s.status == status:
                return self._current(session_id)
            if status not in TRANSITIONS[s.status]:
                allowed = ", ".join(TRANSITIONS[s.status]) or "nothing (archived is final)"
                raise InvalidTransition(
                    f"{where} refused: session {session_id} cannot go from {s.status} to {status}; "
                    f"from {s.status} it may go to {allowed}"
                )
            cmd.emit(f"session:{session_id}", [SessionStatusChanged(session_id=session_id, status=status)])
            return self._current(session_id)

    def get(self, session_id: str) -> Session:
        """The session, its state merged with the current app: and user: keys. Raises NotFound."""
        check_text("sessions.get", "session_id", session_id)
        with self._ctx.db.statement("sessions.get") as conn:
            found = sessions.get(conn, session_id)
        if found is None:
            raise NotFound(f"sessions.get refused: no session {session_id!r}")
        return found

    def list(
        self, app_name: str, user_id: str | None = None, *, limit: int | None = None, after_key: str | None = None
    ) -> builtins.list[Session]:
        """An app's sessions, or one user's, most recently updated first; at
        most ``limit``, after the session ``after_key`` (the id of the last
        session of the previous page; a session updated meanwhile moves to the front)."""
        where = "sessions.list"
        check_text(where, "app_name", app_name)
        check_optional_text(where, "user_id", user_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: sessions.get_own(conn, i), "session",
                              lambda s: (s.last_update_time, s.session_id))
            return sessions.list(conn, app_name, user_id, limit=limit, after=after)

    def events(self, session_id: str, *, after_seq: int = 0, limit: int | None = None) -> builtins.list[SessionEvent]:
        """The conversation in order, after ``after_seq``. Raises NotFound."""
        where = "sessions.events"
        check_text(where, "session_id", session_id)
        check_int(where, "after_seq", after_seq, minimum=0)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            if sessions.get_own(conn, session_id) is None:
                raise NotFound(f"{where} refused: no session {session_id!r}")
            return sessions.events(conn, session_id, after_seq=after_seq, limit=limit)

    # --- helpers ------------------------------------------------------------------

    def _existing(self, where: str, session_id: str) -> Session:
        found = sessions.get_own(self._ctx.db.conn, session_id)
        if found is None:
            raise NotFound(f"{where} refused: no session {session_id!r}")
        return found

    def _current(self, session_id: str) -> Session:
        found = sessions.get(self._ctx.db.conn, session_id)
        assert found is not None
        return found

    def _as_of(self, session_id: str, position: int) -> Session:
        """The session as it was right after ``position`` (a repeated command_id)."""
        with self._ctx.folded(sessions, f"session:{session_id}", position) as mem:
            own = sessions.get_own(mem, session_id)
        assert own is not None
        return sessions.with_shared(self._ctx.db.conn, own, as_of=position)
