"""Conversation sessions.

Lifecycle: created → active ⇄ paused → terminated → archived (created and
paused may also be terminated). The first event makes a created session
active; events are refused while paused, terminated or archived. State keys
``app:``/``user:`` are shared by the app's / the user's sessions; ``temp:``
keys are dropped before anything is written.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import apsw

from eventkernel import journal
from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound
from eventkernel.events.sessions import SessionCreated, SessionDeleted, SessionEventAppended, SessionStatusChanged
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import sessions
from eventkernel.projections.sessions import STATUSES, TEMP, Session, SessionEvent
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import NOTHING, Args, Decision, Reads, Spec, emit, run
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


def decide_create(state: tuple[str, bool, int], a: Args, now: int) -> Decision:
    """``state``: (the session's id, whether one with that id exists, its
    stream's version: above 0 when a deleted session had the id)."""
    sid, exists, version = state
    if exists:
        raise InvalidArgument(f"sessions.create refused: session_id {sid!r} already exists")
    return emit(
        f"session:{sid}",
        SessionCreated(session_id=sid, app_name=a["app_name"], user_id=a["user_id"], project_id=a["project_id"],
                       state=a["state"], metadata=a["metadata"]),
        expected_version=version,
    )


def decide_append_event(session: Session | None, a: Args, now: int) -> Decision:
    """Events go to created or active sessions (the first makes it active)."""
    sid = a["session_id"]
    if session is None:
        raise NotFound(f"sessions.append_event refused: no session {sid!r}")
    if session.status not in ("created", "active"):
        hint = "; set_status(…, 'active') first" if session.status == "paused" else ""
        raise InvalidTransition(f"sessions.append_event refused: session {sid} is {session.status}{hint}")
    return emit(
        f"session:{sid}",
        SessionEventAppended(session_id=sid, seq=session.event_count + 1, author=a["actor"], content=a["content"],
                             state_delta=a["state_delta"]),
        correlation_id=a.get("correlation_id"), expected_version=a.get("expected_version"),
    )


def decide_delete(session: Session | None, a: Args, now: int) -> Decision:
    sid = a["session_id"]
    if session is None:
        raise NotFound(f"sessions.delete refused: no session {sid!r}")
    return emit(f"session:{sid}", SessionDeleted(session_id=sid), expected_version=session.version)


def decide_set_status(session: Session | None, a: Args, now: int) -> Decision:
    """The lifecycle of TRANSITIONS; the same status again changes nothing."""
    sid, status = a["session_id"], a["status"]
    if session is None:
        raise NotFound(f"sessions.set_status refused: no session {sid!r}")
    if session.status == status:
        return NOTHING
    if status not in TRANSITIONS[session.status]:
        allowed = ", ".join(TRANSITIONS[session.status]) or "nothing (archived is final)"
        raise InvalidTransition(
            f"sessions.set_status refused: session {sid} cannot go from {session.status} to {status}; "
            f"from {session.status} it may go to {allowed}"
        )
    return emit(f"session:{sid}", SessionStatusChanged(session_id=sid, status=status))


def _load_create(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool, int]:
    given = a["session_id"]
    if given is None:
        return new_id("ses", now), False, 0
    if sessions.get_own(conn, given) is not None:
        return given, True, 0
    return given, False, journal.stream_version(conn, f"session:{given}")


def _load_own(conn: apsw.Connection, a: Args, now: int) -> Session | None:
    return sessions.get_own(conn, a["session_id"])


def _session(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Session:
    """The session with its shared app:/user: keys, as of the answer's position."""
    sid = a["session_id"] if a.get("session_id") is not None else records[0].event.session_id  # type: ignore[attr-defined]
    own = sessions.get_own(reads.conn, sid)
    assert own is not None
    # Shared keys keep a row per position: the live table answers as of any position.
    return sessions.with_shared(reads.live, own, as_of=reads.as_of)


def _event(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> SessionEvent:
    # An event never changes once appended, but a delete removes it: a retry reads the session's past.
    found = sessions.event(reads.conn, a["session_id"], records[0].event.seq)  # type: ignore[attr-defined]
    assert found is not None
    return found


def _scope(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    sid = a["session_id"] if a.get("session_id") is not None else records[0].event.session_id  # type: ignore[attr-defined]
    return [f"session:{sid}"]


CREATE: Spec[tuple[str, bool, int], Session] = Spec(
    "sessions.create", _load_create, decide_create, _session, sessions, _scope)
APPEND_EVENT: Spec[Session | None, SessionEvent] = Spec(
    "sessions.append_event", _load_own, decide_append_event, _event, sessions, _scope)
SET_STATUS: Spec[Session | None, Session] = Spec(
    "sessions.set_status", _load_own, decide_set_status, _session, sessions, _scope)
DELETE: Spec[Session | None, None] = Spec(
    "sessions.delete", _load_own, decide_delete, lambda reads, a, records, outcome: None)


_T = TypeVar("_T")

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
        actor: str | None = None,
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
        args = {"app_name": app_name, "user_id": user_id, "session_id": session_id, "project_id": project_id,
                "state": _persisted(state), "metadata": metadata}
        return run(self._ctx, CREATE, args, command_id=command_id, actor=actor)

    def append_event(
        self,
        session_id: str,
        *,
        actor: str | None = None,
        content: Any,
        state_delta: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        command_id: str | None = None,
        author: str | None = None,
        expected_version: int | None = None,
    ) -> SessionEvent:
        """Add one turn to the conversation, said or done by ``actor``, and
        apply its state delta. ``correlation_id`` (a task id) files the turn
        under that task, so ``checkpoints.resume(task)`` includes it.
        ``expected_version`` (a ``Session.version`` read earlier) makes it
        compare-and-set: ConcurrencyConflict if the session changed since.
        ``author=`` is the deprecated name of ``actor=``. Raises NotFound,
        InvalidTransition (paused, terminated, archived)."""
        where = "sessions.append_event"
        if author is not None:
            warnings.warn("sessions.append_event(author=…) is deprecated and will be removed in 0.3.0; use actor=",
                          DeprecationWarning, stacklevel=2)
            if actor is None:
                actor = author
        check_text(where, "session_id", session_id)
        check_text(where, "actor", actor)
        check_json_value(where, "content", content)
        check_json_dict(where, "state_delta", state_delta)
        check_optional_text(where, "correlation_id", correlation_id)
        args = {"session_id": session_id, "actor": actor, "content": content, "state_delta": _persisted(state_delta)}
        if correlation_id is not None:
            args["correlation_id"] = correlation_id
        if expected_version is not None:
            args["expected_version"] = check_int(where, "expected_version", expected_version, minimum=1)
        return run(self._ctx, APPEND_EVENT, args, command_id=command_id, actor=actor)

    def delete(self, session_id: str, *, actor: str | None = None, command_id: str | None = None) -> None:
        """Delete the session: it and its conversation leave every read (the
        app's and the user's shared keys stay), and its id may be used again.
        The events that held it stay in the journal. Raises NotFound."""
        check_text("sessions.delete", "session_id", session_id)
        check_optional_text("sessions.delete", "actor", actor)
        run(self._ctx, DELETE, {"session_id": session_id}, command_id=command_id, actor=actor)

    def shared_state(self, app_name: str, user_id: str | None = None) -> dict[str, Any]:
        """The current ``app:`` keys of the app and, given a user, that user's
        ``user:`` keys there (prefixes kept), without a session."""
        where = "sessions.shared_state"
        check_text(where, "app_name", app_name)
        check_optional_text(where, "user_id", user_id)
        with self._ctx.db.read(where) as conn:
            found = sessions.shared_state(conn, app_name, "" if user_id is None else user_id)
        return found

    def set_status(
        self, session_id: str, status: str, *, actor: str | None = None, command_id: str | None = None
    ) -> Session:
        """Move the session through its lifecycle; the same status again is a
        no-op. Raises NotFound, InvalidArgument, InvalidTransition."""
        where = "sessions.set_status"
        check_text(where, "session_id", session_id)
        if status not in STATUSES:
            raise InvalidArgument(f"{where} refused: status must be one of {', '.join(STATUSES)}, got {status!r}")
        return run(self._ctx, SET_STATUS, {"session_id": session_id, "status": status}, command_id=command_id,
                   actor=actor)

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
                              lambda s: (s.updated_at, s.session_id))
            return sessions.list(conn, app_name, user_id, limit=limit, after=after)

    def events(self, session_id: str, *, after_seq: int = 0, limit: int | None = None) -> builtins.list[SessionEvent]:
        """The conversation in order, after ``after_seq``. Raises NotFound."""
        return self._conversation("sessions.events", sessions.events, session_id, after_seq, limit)

    def event_positions(self, session_id: str, *, after_seq: int = 0, limit: int | None = None) -> builtins.list[int]:
        """The journal positions of the conversation's events after
        ``after_seq``, in order (each ``SessionEvent.position``): all a cache
        of events kept by position needs, since the event at a position never
        changes. Raises NotFound."""
        return self._conversation("sessions.event_positions", sessions.event_positions, session_id, after_seq,
                                  limit)

    def last_events(self, session_ids: Sequence[str]) -> dict[str, SessionEvent]:
        """The last event of each of these sessions, by session id, in one
        read (a listing's "last message" without a read per session); a
        session without events, or that does not exist, is left out."""
        where = "sessions.last_events"
        if isinstance(session_ids, str) or not isinstance(session_ids, Iterable):
            raise InvalidArgument(f"{where} refused: session_ids must be a list of str, got {session_ids!r:.60}")
        ids = builtins.list(session_ids)
        for session_id in ids:
            check_text(where, "session_ids item", session_id)
        with self._ctx.db.read(where) as conn:
            return sessions.last_events(conn, ids)

    def _conversation(self, where: str, query: Callable[..., _T], session_id: str, after_seq: int,
                      limit: int | None) -> _T:
        """``query`` of a session's events, its arguments checked; NotFound without the session."""
        check_text(where, "session_id", session_id)
        check_int(where, "after_seq", after_seq, minimum=0)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            if sessions.get_own(conn, session_id) is None:
                raise NotFound(f"{where} refused: no session {session_id!r}")
            return query(conn, session_id, after_seq=after_seq, limit=limit)

