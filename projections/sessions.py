"""Projection ``sessions``: sessions, their events, and shared app:/user: state."""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Sequence
from typing import Any

import apsw
import msgspec
from msgspec.structs import astuple

from eventkernel import codec
from eventkernel.codec import Event
from eventkernel.events.retention import RowsForgotten
from eventkernel.events.sessions import SessionCreated, SessionDeleted, SessionEventAppended, SessionStatusChanged
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import (
    Order,
    Target,
    Writer,
    columns,
    dump,
    limit_of,
    loader,
    order_by,
    raw_json,
    where_equal,
)
from eventkernel.projections.rows import after as after_cursor

NAME = "sessions"
VERSION = 4  # 2: updated_at, actor and recorded_at (were last_update_time, author and timestamp); 3: version,
# deletes; 4: the index of archived sessions
HANDLES = frozenset(
    c.__event_type__ for c in (SessionCreated, SessionEventAppended, SessionStatusChanged, SessionDeleted)
) | {retention.FORGOTTEN}

APP, USER, TEMP = "app:", "user:", "temp:"
STATUSES = ("created", "active", "paused", "terminated", "archived")


class Session(msgspec.Struct, frozen=True):
    """A session; ``state`` merges its own keys with the current ``app:`` and ``user:`` keys."""

    session_id: str
    app_name: str
    user_id: str
    project_id: str | None
    status: str
    state: dict[str, Any]
    metadata: dict[str, Any] | None
    event_count: int
    created_at: int
    updated_at: int
    terminated_at: int | None
    archived_at: int | None
    position: int
    version: int  # the stream's version after the session's last event: expected_version= of append_event

    @property
    def last_update_time(self) -> int:
        """Deprecated since 0.2.0: ``updated_at``."""
        _deprecated("Session.last_update_time", "Session.updated_at")
        return self.updated_at


class SessionEvent(msgspec.Struct, frozen=True):
    """One turn of the conversation: who said or did it (``actor``) and when."""

    session_id: str
    seq: int
    actor: str
    content: Any
    state_delta: dict[str, Any]
    recorded_at: int
    position: int

    @property
    def author(self) -> str:
        """Deprecated since 0.2.0: ``actor``."""
        _deprecated("SessionEvent.author", "SessionEvent.actor")
        return self.actor

    @property
    def timestamp(self) -> int:
        """Deprecated since 0.2.0: ``recorded_at``."""
        _deprecated("SessionEvent.timestamp", "SessionEvent.recorded_at")
        return self.recorded_at


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in 0.3.0; use {new}", DeprecationWarning, stacklevel=3)


_SCOLS = columns(Session)
_ECOLS = columns(SessionEvent)
_load_session = loader(Session, json=["state", "metadata"])
_load_event = loader(SessionEvent, json=["content", "state_delta"])


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(own, app, user) keys; temp: keys are dropped."""
    own, app, user = {}, {}, {}
    for k, v in state.items():
        if k.startswith(APP):
            app[k] = v
        elif k.startswith(USER):
            user[k] = v
        elif not k.startswith(TEMP):
            own[k] = v
    return own, app, user


def _share(conn: Target, app_name: str, user_id: str, app: dict[str, Any], user: dict[str, Any], pos: int) -> None:
    for scope_user, values in (("", app), (user_id, user)):
        for k, v in values.items():
            conn.execute(
                "INSERT OR REPLACE INTO session_shared_state (app_name, user_id, key, position, value) VALUES (?, ?, ?, ?, ?)",
                (app_name, scope_user, k, pos, codec.dump_json(v)),
            )


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if retention.forget(conn, event, "sessions", "session_id", "session_events"):
        return  # the app:/user: state they shared is the app's and the user's: kept
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, SessionCreated):
        own, app, user = _split(event.state)
        conn.execute(
            f"INSERT INTO sessions ({_SCOLS}) VALUES (?, ?, ?, ?, 'created', ?, ?, 0, ?, ?, NULL, NULL, ?, ?)",
            (event.session_id, event.app_name, event.user_id, event.project_id, codec.dump_json(own),
             dump(event.metadata), at, at, pos, recorded.version),
        )
        _share(conn, event.app_name, event.user_id, app, user, pos)
    elif isinstance(event, SessionEventAppended):
        row = conn.execute(
            "SELECT app_name, user_id, state FROM sessions WHERE session_id = ?", (event.session_id,)
        ).fetchone()
        if row is None:
            return
        app_name, user_id, state_text = row
        own, app, user = _split(event.state_delta)
        state = codec.decode_json(state_text)
        state.update(own)
        conn.execute(
            f"INSERT INTO session_events ({_ECOLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.session_id, event.seq, event.author, dump(event.content), codec.dump_json(event.state_delta), at, pos),
        )
        conn.execute(
            "UPDATE sessions SET state = ?, event_count = ?, updated_at = ?, position = ?, version = ?, "
            "status = CASE status WHEN 'created' THEN 'active' ELSE status END WHERE session_id = ?",
            (codec.dump_json(state), event.seq, at, pos, recorded.version, event.session_id),
        )
        _share(conn, app_name, user_id, app, user, pos)
    elif isinstance(event, SessionStatusChanged):
        conn.execute(
            "UPDATE sessions SET status = ?, updated_at = ?, position = ?, version = ?, "
            "terminated_at = CASE WHEN ? = 'terminated' THEN ? ELSE terminated_at END, "
            "archived_at = CASE WHEN ? = 'archived' THEN ? ELSE archived_at END WHERE session_id = ?",
            (event.status, at, pos, recorded.version, event.status, at, event.status, at, event.session_id),
        )
    elif isinstance(event, SessionDeleted):
        conn.execute("DELETE FROM session_events WHERE session_id = ?", (event.session_id,))
        conn.execute("DELETE FROM sessions WHERE session_id = ?", (event.session_id,))


# A ``sessions`` row being folded, fields in ``_SCOLS`` order, its state a
# dict (encoded once, at the end). Untracked by the garbage collector: it
# cannot be part of a cycle.
_Session: Any = msgspec.defstruct("_Session", [(name, Any) for name in Session.__struct_fields__],
                                  array_like=True, gc=False)


class _AppendedRow(msgspec.Struct, gc=False):
    """What the fold reads of a ``session.event_appended`` (its content and
    delta as stored)."""

    session_id: str
    seq: int
    author: str
    content: msgspec.Raw = msgspec.Raw(b"null")
    state_delta: msgspec.Raw = msgspec.Raw(b"{}")


_APPENDED = SessionEventAppended.__event_type__
_appended_row = msgspec.json.Decoder(_AppendedRow).decode


class Fold:
    """The rebuild's bulk path: sessions with their state kept as a dict
    (encoded once, at the end, instead of decoded and encoded per event),
    their events (an append at the current schema read from the stored
    JSON, its content and delta copied as stored), written at the fold's
    flushes once ``out.held`` are waiting (a deleted session's are deleted
    from the build again), and the shared state, written at the end."""

    ASIDE = True  # its rows may be written by a build's second thread (projector._Aside)

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.events: dict[str, builtins.list[tuple[Any, ...]]] = {}  # per session, its events not yet written
        self.shared: dict[tuple[str, str, str, int], str] = {}
        self.waiting: dict[str, None] = {}  # sessions with events not yet written, in order
        self.held = 0  # about how many
        self.written: set[str] = set()  # sessions with events in the build
        self.dropped: builtins.list[str] = []  # sessions deleted after some of their events were written

    def add_row(self, row: tuple[Any, ...]) -> bool:
        if row[3] != _APPENDED or row[4] != SessionEventAppended.__event_schema__:
            return False
        e = _appended_row(row[5])
        delta = str(e.state_delta, "utf-8")
        self._appended(e.session_id, e.seq, e.author, raw_json(e.content),
                       {} if delta == "{}" else codec.decode_json(delta), delta, row[9], row[0], row[2])
        return True

    def _share(self, app_name: str, user_id: str, app: dict[str, Any], user: dict[str, Any], pos: int) -> None:
        for scope_user, values in (("", app), (user_id, user)):
            for k, v in values.items():
                self.shared[(app_name, scope_user, k, pos)] = codec.dump_json(v)

    def _appended(self, session_id: str, seq: int, author: str, content: str | None, delta: dict[str, Any],
                  delta_text: str, at: int, pos: int, version: int) -> None:
        s = self.sessions.get(session_id)
        if s is None:
            return
        self.events[session_id].append((session_id, seq, author, content, delta_text, at, pos))
        self.waiting[session_id] = None
        self.held += 1
        s.event_count, s.updated_at, s.position, s.version = seq, at, pos, version
        if s.status == "created":
            s.status = "active"
        if delta:
            own, app, user = _split(delta)
            s.state.update(own)
            if app or user:
                self._share(s.app_name, s.user_id, app, user, pos)

    def add(self, recorded: Recorded, event: Event) -> None:
        if isinstance(event, RowsForgotten):
            for key in event.keys if event.table == "sessions" else ():
                self._drop(key)
            return
        at, pos = recorded.recorded_at, recorded.position
        if isinstance(event, SessionCreated):
            if event.session_id in self.sessions:
                raise apsw.ConstraintError("UNIQUE constraint failed: sessions.session_id")
            own, app, user = _split(event.state)
            self.sessions[event.session_id] = _Session(
                event.session_id, event.app_name, event.user_id, event.project_id, "created", own,
                dump(event.metadata), 0, at, at, None, None, pos, recorded.version,
            )
            self.events[event.session_id] = []
            self._share(event.app_name, event.user_id, app, user, pos)
        elif isinstance(event, SessionEventAppended):
            self._appended(event.session_id, event.seq, event.author, dump(event.content), event.state_delta,
                           codec.dump_json(event.state_delta), at, pos, recorded.version)
        elif isinstance(event, SessionStatusChanged):
            s = self.sessions.get(event.session_id)
            if s is None:
                return
            s.status, s.updated_at, s.position, s.version = event.status, at, pos, recorded.version
            if event.status == "terminated":
                s.terminated_at = at
            elif event.status == "archived":
                s.archived_at = at
        elif isinstance(event, SessionDeleted):
            self._drop(event.session_id)

    def _drop(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self.events.pop(session_id, None)
        self.waiting.pop(session_id, None)
        if session_id in self.written:
            self.written.discard(session_id)
            self.dropped.append(session_id)

    def flush(self, out: Writer) -> None:
        """Once about ``out.held`` events wait, write them."""
        if self.held >= out.held:
            self._write_events(out)

    def _write_events(self, out: Writer) -> None:
        if self.dropped:
            out.delete("session_events", "session_id", self.dropped)
            self.dropped = []
        events = self.events
        out.insert("session_events", _ECOLS, (row for session_id in self.waiting for row in events[session_id]))
        for session_id in self.waiting:
            events[session_id] = []
        self.written.update(self.waiting)
        self.waiting = {}
        self.held = 0

    def write(self, out: Writer) -> None:
        out.insert("sessions", _SCOLS,
                   ((*t[:5], codec.dump_json(t[5]), *t[6:]) for t in map(astuple, self.sessions.values())))
        self._write_events(out)
        out.insert("session_shared_state", "app_name, user_id, key, position, value",
                   ((*k, v) for k, v in self.shared.items()))


# --- queries ----------------------------------------------------------------------


def _shared_rows(conn: apsw.Connection, app_name: str, user_id: str, as_of: int | None) -> builtins.list[Any]:
    """(key, JSON text) of the app: keys of ``app_name`` and the user: keys
    of ``user_id`` there, as of a journal position (default: now)."""
    limit = (1 << 63) - 1 if as_of is None else as_of
    return [row for scope_user in ("", user_id) for row in conn.execute(
        "SELECT key, value FROM session_shared_state s WHERE app_name = ? AND user_id = ? AND position = "
        "(SELECT max(position) FROM session_shared_state WHERE app_name = s.app_name "
        "AND user_id = s.user_id AND key = s.key AND position <= ?)",
        (app_name, scope_user, limit),
    )]


def shared_state(conn: apsw.Connection, app_name: str, user_id: str, *, as_of: int | None = None) -> dict[str, Any]:
    """The app: keys of ``app_name`` and the user: keys of ``user_id`` there,
    as of a journal position (default: now)."""
    return {key: codec.decode_json(value) for key, value in _shared_rows(conn, app_name, user_id, as_of)}


def with_shared(conn: apsw.Connection, session: Session, *, as_of: int | None = None,
                shared: builtins.list[Any] | None = None) -> Session:
    """The session, its state merged with the shared keys (``shared``: their
    rows, read already for another session of the same app and user)."""
    state = dict(session.state)
    for key, value in _shared_rows(conn, session.app_name, session.user_id, as_of) if shared is None else shared:
        state[key] = codec.decode_json(value)  # (decoded for each session: no two share a value)
    return msgspec.structs.replace(session, state=state)


def get_own(conn: apsw.Connection, session_id: str) -> Session | None:
    """The row alone: ``state`` holds only the session's own keys."""
    row = conn.execute(f"SELECT {_SCOLS} FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    return None if row is None else _load_session(row)


# The session row and its current shared keys in one statement (atomic by
# itself, so a reader needs no transaction around it). The shared values
# are stored JSON text, spliced into one JSON object unchanged.
_GET = (
    f"SELECT {_SCOLS}, (SELECT '{{' || group_concat(json_quote(x.key) || ':' || x.value, ',') || '}}' "
    "FROM session_shared_state x WHERE x.app_name = s.app_name AND x.user_id IN ('', s.user_id) "
    "AND x.position = (SELECT max(position) FROM session_shared_state "
    "WHERE app_name = x.app_name AND user_id = x.user_id AND key = x.key)) "
    "FROM sessions s WHERE session_id = ?"
)


def get(conn: apsw.Connection, session_id: str) -> Session | None:
    """The session with ``state`` merged with the current app: and user: keys."""
    row = conn.execute(_GET, (session_id,)).fetchone()
    if row is None:
        return None
    session = _load_session(row[:-1])
    if row[-1] is None:
        return session
    state = dict(session.state)
    state.update(codec.decode_json(row[-1]))
    return msgspec.structs.replace(session, state=state)


RECENT: Order = (("updated_at", True), ("session_id", False))


def list(
    conn: apsw.Connection, app_name: str, user_id: str | None = None, *, limit: int | None = None,
    after: tuple[Any, ...] | None = None,
) -> builtins.list[Session]:
    """An app's sessions (one user's, if given), most recently updated first,
    after the session whose (updated_at, session_id) is ``after``."""
    where, args = where_equal(app_name=app_name, user_id=user_id)
    cursor, cursor_args = after_cursor(RECENT, after)
    if cursor:
        where += f" AND {cursor}"
    rows = conn.execute(
        f"SELECT {_SCOLS} FROM sessions{where} ORDER BY {order_by(RECENT)} LIMIT ?",
        (*args, *cursor_args, limit_of(limit)),
    )
    found = [_load_session(r) for r in rows.fetchall()]
    shared: dict[tuple[str, str], builtins.list[Any]] = {}  # read once per app and user, not once per session
    for s in found:
        if (s.app_name, s.user_id) not in shared:
            shared[s.app_name, s.user_id] = _shared_rows(conn, s.app_name, s.user_id, None)
    return [with_shared(conn, s, shared=shared[s.app_name, s.user_id]) for s in found]


def last_events(conn: apsw.Connection, session_ids: Sequence[str]) -> dict[str, SessionEvent]:
    """The last event of each of these sessions that has one, by session id:
    primary-key lookups, one statement per 200 sessions."""
    out: dict[str, SessionEvent] = {}
    ids = builtins.list(dict.fromkeys(session_ids))
    for start in range(0, len(ids), 200):
        chunk = ids[start:start + 200]
        rows = conn.execute(
            f"SELECT {', '.join('e.' + c for c in _ECOLS.split(', '))} FROM sessions s "
            "JOIN session_events e ON e.session_id = s.session_id AND e.seq = s.event_count "
            f"WHERE s.session_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for row in rows:
            event = _load_event(row)
            out[event.session_id] = event
    return out


def events(conn: apsw.Connection, session_id: str, *, after_seq: int = 0, limit: int | None = None) -> builtins.list[SessionEvent]:
    rows = conn.execute(
        f"SELECT {_ECOLS} FROM session_events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (session_id, after_seq, -1 if limit is None else limit),
    )
    return [_load_event(r) for r in rows]


def event_positions(conn: apsw.Connection, session_id: str, *, after_seq: int = 0,
                    limit: int | None = None) -> builtins.list[int]:
    """The journal positions of the session's events after ``after_seq``, in order."""
    rows = conn.execute(
        "SELECT position FROM session_events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (session_id, after_seq, -1 if limit is None else limit),
    )
    return [p for (p,) in rows]


def event(conn: apsw.Connection, session_id: str, seq: int) -> SessionEvent | None:
    row = conn.execute(f"SELECT {_ECOLS} FROM session_events WHERE session_id = ? AND seq = ?", (session_id, seq)).fetchone()
    return None if row is None else _load_event(row)
