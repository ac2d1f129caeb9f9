"""Google ADK's sessions and memory on the journal: ``EventKernelSessionService``, ``EventKernelMemoryService``.

    from eventkernel.integrations.adk import EventKernelSessionService

    runner = Runner(app_name="app", agent=agent, session_service=EventKernelSessionService(kernel))

ADK's ``BaseSessionService`` on the kernel's sessions domain: a session is
the kernel session ``adk:<app>/<user>/<id>`` (stream ``session:adk:…``),
each ADK event one ``session.event_appended`` whose content is the event as
ADK writes it to JSON (readable with ``json_extract``), its state delta
applied with ADK's scopes (``app:`` keys shared by the app, ``user:`` keys
by the user, ``temp:`` keys never stored). A session read from this service
carries its stream version, and ``append_event`` appends only at that
version: a writer holding an older copy gets ``StaleSessionError``, decided
by the journal, not by comparing float timestamps. ``delete_session`` is an
event. Any app name, user id and session id ADK accepts is accepted.

``EventKernelMemoryService`` keeps what ADK adds to memory (the events of a
session that have content) in the kernel's versioned memory, one memory per
event under ``adk:<app>.<user>``, and finds it by the keyword matching ADK's
``InMemoryMemoryService`` does; ``delete_memory`` is a soft delete that a
later ``add_session_to_memory`` does not undo.

Needs the ``adk`` extra (``google-adk``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.memory.base_memory_service import BaseMemoryService, SearchMemoryResponse
from google.adk.memory.memory_entry import MemoryEntry
from google.adk.platform import time as platform_time
from google.adk.platform import uuid as platform_uuid
from google.adk.sessions import _session_util
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic import BaseModel

from eventkernel.aio import AsyncKernel
from eventkernel.errors import ConcurrencyConflict, InvalidArgument, InvalidTransition, NotFound
from eventkernel.integrations import bind, catching_up
from eventkernel.kernel import Kernel
from eventkernel.projections.sessions import Session as KernelSession
from eventkernel.validate import MAX_ID_LEN
from eventkernel.view import KernelView

__all__ = ["EventKernelMemoryService", "EventKernelSessionService"]

T = TypeVar("T")

ROOT = "adk:"
"""The kernel session ids of ADK sessions start with this."""
_ESCAPE = re.compile("[%/#\x00\ud800-\udfff]")
_ESCAPED = re.compile("%(u[0-9A-F]{4}|[0-9A-F]{2})")
CACHED_EVENTS = 4096
"""How many built ``Event`` objects a session service keeps, by journal position."""
_STALE = ("the session was changed since this copy of it was read (its stream is at a later version); "
          "read it again with get_session")


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}"


def _escape(text: str) -> str:
    return _ESCAPE.sub(_escape_char, text) if text else "%"


def _unescape(text: str) -> str:
    return "" if text == "%" else _ESCAPED.sub(lambda m: chr(int(m.group(1).lstrip("u"), 16)), text)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _name(text: str) -> str:
    """An app name or user id as a kernel id: itself, escaped when it holds
    what ids cannot, named by its hash when that is too long."""
    escaped = _escape(text)
    return escaped if len(escaped) <= MAX_ID_LEN else "#" + _hash(escaped)


def session_key(app_name: str, user_id: str, session_id: str) -> str:
    """The kernel session id of an ADK session."""
    key = ROOT + "/".join(_escape(part) for part in (app_name, user_id, session_id))
    return key if len(key) <= MAX_ID_LEN else ROOT + "#" + _hash(key)


def _text(where: str, name: str, value: Any) -> str:
    if type(value) is not str:
        raise InvalidArgument(f"{where} refused: {name} must be a str, got {type(value).__name__} {value!r:.60}")
    return value


class EventKernelSessionService(BaseSessionService):
    """An ADK session service on an eventkernel journal (see the module's docstring)."""

    def __init__(self, kernel: Kernel | AsyncKernel | KernelView, *, erase_deleted: bool = False) -> None:
        """On a ``Kernel`` (any number of threads), an ``eventkernel.aio``
        kernel (calls run on its pool), or a view of the past
        (``k.at(position)``: the sessions as they were; appends raise ReadOnly).
        ``erase_deleted=True``: ``delete_session`` also erases the session's
        events from the journal (``k.erase``: no byte of them stays in the
        file, and the ``app:``/``user:`` values they set are forgotten too;
        the file is rewritten each time)."""
        self.erase_deleted = erase_deleted
        self.kernel, self._call = bind(kernel)
        self._catch_up = catching_up(self.kernel)
        # Building an Event from its JSON is most of a read (ADK's validators);
        # an event at a journal position never changes, so the built one is
        # kept (with its copy plan) and each read gets its own deep copy.
        self._built: OrderedDict[int, tuple[Event, Copier]] = OrderedDict()
        self._built_lock = threading.Lock()

    def _cached(self, positions: Sequence[int]) -> list[Event] | None:
        """Copies of the events kept at ``positions``, or None when one is not kept."""
        built = self._built
        with self._built_lock:
            try:
                kept = [built[p] for p in positions]
            except KeyError:
                return None
            for p in positions:
                built.move_to_end(p)
        return [copy_of(event) for event, copy_of in kept]

    def _event(self, position: int, content: Any) -> Event:
        with self._built_lock:
            found = self._built.get(position)
            if found is not None:
                self._built.move_to_end(position)
        if found is None:
            event = Event.model_validate(content)
            found = self._keep(position, event)
        event, copy_of = found
        copied: Event = copy_of(event)
        return copied

    def _keep(self, position: int, event: Event, copy_of: Copier | None = None) -> tuple[Event, Copier]:
        found = (event, _copier(_plan(event)) if copy_of is None else copy_of)
        with self._built_lock:
            self._built[position] = found
            if len(self._built) > CACHED_EVENTS:
                self._built.popitem(last=False)
        return found

    # --- ADK's interface (each call on a thread: the event loop never waits on SQLite) ---

    async def create_session(
        self, *, app_name: str, user_id: str, state: dict[str, Any] | None = None, session_id: str | None = None,
    ) -> Session:
        return await self._call(self.create_session_sync, app_name, user_id, state, session_id)  # type: ignore[no-any-return]

    async def get_session(
        self, *, app_name: str, user_id: str, session_id: str, config: GetSessionConfig | None = None,
    ) -> Session | None:
        return await self._call(self.get_session_sync, app_name, user_id, session_id, config)  # type: ignore[no-any-return]

    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        return await self._call(self.list_sessions_sync, app_name, user_id)  # type: ignore[no-any-return]

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        await self._call(self.delete_session_sync, app_name, user_id, session_id)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        return await self._call(self.get_user_state_sync, app_name, user_id)  # type: ignore[no-any-return]

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        await self._call(self._store_event, session, event)
        return self._commit_event_to_session(session, event)

    # --- the same, for callers without an event loop ------------------------------

    def create_session_sync(
        self, app_name: str, user_id: str, state: dict[str, Any] | None = None, session_id: str | None = None,
    ) -> Session:
        where = "adk.create_session"
        _text(where, "app_name", app_name)
        _text(where, "user_id", user_id)
        if session_id is None:
            session_id = platform_uuid.new_uuid()
        _text(where, "session_id", session_id)
        key = session_key(app_name, user_id, session_id)
        safe = _session_util.make_json_safe_state(state or {})
        created = platform_time.get_time()
        try:
            stored = self.kernel.sessions.create(
                _name(app_name), _name(user_id), session_id=key, state=safe,
                metadata={"adk": {"app_name": _escape(app_name), "user_id": _escape(user_id),
                                  "id": _escape(session_id), "created": created}},
            )
        except InvalidArgument:
            if self._stored(key) is not None:
                raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
            raise
        return self._session(stored, [], created)

    def get_session_sync(
        self, app_name: str, user_id: str, session_id: str, config: GetSessionConfig | None = None,
    ) -> Session | None:
        where = "adk.get_session"
        for name, value in (("app_name", app_name), ("user_id", user_id), ("session_id", session_id)):
            _text(where, name, value)
        key = session_key(app_name, user_id, session_id)
        self._catch_up()
        with self.kernel.reading():  # one snapshot: the session and its events agree
            stored = self._stored(key)
            if stored is None:
                return None
            recent = None if config is None else config.num_recent_events
            after_time = None if config is None else config.after_timestamp
            count = stored.event_count
            start = 0 if recent is None or after_time is not None else max(0, count - recent)
            if recent == 0:
                start = max(0, count - 1)  # the last event alone, for the session's update time
            events = self._cached(self.kernel.sessions.event_positions(key, after_seq=start)) if count else []
            if events is None:  # some not built yet: read their content
                events = [self._event(e.position, e.content) for e in self.kernel.sessions.events(key, after_seq=start)]
        updated = events[-1].timestamp if events else stored.metadata["adk"]["created"]  # type: ignore[index]
        if recent == 0:
            events = []
        if after_time is not None:
            events = [e for e in events if e.timestamp >= after_time]
            if recent is not None:
                events = events[-recent:] if recent else []
        return self._session(stored, events, updated)

    def list_sessions_sync(self, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        where = "adk.list_sessions"
        _text(where, "app_name", app_name)
        if user_id is not None:
            _text(where, "user_id", user_id)
        sessions = self.kernel.sessions
        self._catch_up()
        with self.kernel.reading():
            # (a session of the kernel's own API, not ADK's, is left out)
            listed = [s for s in sessions.list(_name(app_name), None if user_id is None else _name(user_id))
                      if s.session_id.startswith(ROOT)]
            last = sessions.last_events([s.session_id for s in listed if s.event_count])
        found = []
        for stored in listed:
            event = last.get(stored.session_id)
            created = stored.metadata["adk"]["created"]  # type: ignore[index]
            updated = event.content["timestamp"] if event is not None else created
            found.append(self._session(stored, [], updated))
        found.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=found)

    def delete_session_sync(self, app_name: str, user_id: str, session_id: str) -> None:
        where = "adk.delete_session"
        for name, value in (("app_name", app_name), ("user_id", user_id), ("session_id", session_id)):
            _text(where, name, value)
        key = session_key(app_name, user_id, session_id)
        try:
            self.kernel.sessions.delete(key)
        except NotFound:
            return  # deleting what is not there is not an error in ADK
        with self._built_lock:
            self._built.clear()  # no copy of a deleted session's events stays in memory either
        if self.erase_deleted and isinstance(self.kernel, Kernel):
            self.kernel.erase(stream=f"session:{key}", reason="ADK delete_session", actor="adk")

    def get_user_state_sync(self, app_name: str, user_id: str) -> dict[str, Any]:
        _text("adk.get_user_state", "app_name", app_name)
        _text("adk.get_user_state", "user_id", user_id)
        self._catch_up()
        shared = self.kernel.sessions.shared_state(_name(app_name), _name(user_id))
        return {k.removeprefix(State.USER_PREFIX): v for k, v in shared.items() if k.startswith(State.USER_PREFIX)}

    # --- inside ---------------------------------------------------------------------

    def _stored(self, key: str) -> KernelSession | None:
        try:
            return self.kernel.sessions.get(key)
        except NotFound:
            return None

    @staticmethod
    def _session(stored: KernelSession, events: list[Event], updated: float) -> Session:
        adk = stored.metadata["adk"]  # type: ignore[index]
        session = Session(app_name=_unescape(adk["app_name"]), user_id=_unescape(adk["user_id"]),
                          id=_unescape(adk["id"]), state=stored.state, events=events, last_update_time=updated)
        session._storage_update_marker = str(stored.version)
        return session

    def _store_event(self, session: Session, event: Event) -> None:
        """Append at the version the session was read at (or, for a session
        this service did not give out, at the stored one when it has every
        stored event), then advance the session's version."""
        key = session_key(session.app_name, session.user_id, session.id)
        marker = session._storage_update_marker
        if marker is not None and marker.isdigit():
            expected = int(marker)
        else:
            stored = self._stored(key)
            if stored is None:
                raise SessionNotFoundError(f"Session {session.id} not found.")
            last = self.kernel.sessions.events(key, after_seq=stored.event_count - 1) if stored.event_count else []
            if last and (not session.events or session.events[-1].id != last[0].content.get("id")):
                raise StaleSessionError(_STALE)
            expected = stored.version
        delta = event.actions.state_delta if event.actions and event.actions.state_delta else {}
        try:
            appended = self.kernel.sessions.append_event(
                key, actor=_name(event.author), content=event.model_dump(mode="json", exclude_none=True),
                state_delta=_session_util.make_json_safe_state(delta), expected_version=expected,
            )
        except NotFound:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        except ConcurrencyConflict:
            if self._stored(key) is None:
                raise SessionNotFoundError(f"Session {session.id} not found.") from None
            raise StaleSessionError(_STALE) from None
        session._storage_update_marker = str(expected + 1)
        session.last_update_time = event.timestamp
        copy_of = _copier(_plan(event))  # (the copy's too: a copy has the same parts)
        self._keep(appended.position, copy_of(event), copy_of)  # equal to the event built from its JSON


# --- copies of built events -------------------------------------------------------------
#
# A read hands out deep copies of the events kept, so that what a caller does
# to them never reaches the next reader. ``model_copy(deep=True)`` walks every
# field of every model on every copy; a kept event never changes, so where its
# mutable values are is found once (its plan), and a copier compiled for that
# shape (shared by every event of the same shape) copies only those.

_ATOMIC = frozenset({type(None), bool, int, float, str, bytes})
_set = object.__setattr__
_Plan = tuple[Any, ...]
_MODEL, _LIST, _DICT, _SET, _OTHER = 0, 1, 2, 3, 4
# Models copied as pydantic copies them (ADK's Event has a faster copier of
# the same result); one with a copier of its own is left to it.
_PLAIN_COPIES = (BaseModel.__deepcopy__, Event.__deepcopy__)
_NEW: Any = object.__new__  # a model made by object.__new__, as pydantic's are
_FLAT_DICT, _FLAT_SET, _WHOLE = (_DICT, ()), (_SET,), (_OTHER,)


def _plan(value: Any) -> _Plan:
    """Where ``value``'s mutable parts are: for a model, its fields that hold
    one (with theirs); for a list or a dict, its items'; a set of plain
    values is copied as a set; anything else is copied whole (``deepcopy``)."""
    cls = type(value)
    if cls is dict:
        if not value:
            return _FLAT_DICT
        items = []
        for key, v in value.items():
            if type(key) not in _ATOMIC:
                return _WHOLE
            if type(v) not in _ATOMIC:
                items.append((key, _plan(v)))
        return (_DICT, tuple(items)) if items else _FLAT_DICT
    if cls is list:
        return (_LIST, tuple([None if type(v) in _ATOMIC else _plan(v) for v in value]))
    if isinstance(value, BaseModel) and cls.__deepcopy__ in _PLAIN_COPIES and cls.__new__ is _NEW:
        fields = []
        for name, v in value.__dict__.items():
            if type(v) not in _ATOMIC:
                fields.append((name, _plan(v)))
        return (_MODEL, tuple(fields), cls)
    if cls is set:
        for v in value:
            if type(v) not in _ATOMIC:
                return _WHOLE
        return _FLAT_SET
    return _WHOLE


Copier = Callable[[Any], Any]
_COPIERS: dict[_Plan, Copier] = {}
_MAX_COPIERS = 1024  # shapes of events kept; past this the oldest compiled copier is dropped


def _copier(plan: _Plan) -> Copier:
    """A function making deep copies of values of this plan (equal to
    ``model_copy(deep=True)``): straight-line Python compiled once per shape
    of event, which copies several times faster than walking the plan."""
    found = _COPIERS.get(plan)
    if found is None:
        if len(_COPIERS) >= _MAX_COPIERS:
            del _COPIERS[next(iter(_COPIERS))]
        found = _COPIERS[plan] = _compile(plan)
    return found


def _compile(plan: _Plan) -> Copier:
    lines: list[str] = []
    constants: list[Any] = []  # field names and dict keys, never written into the source

    def const(value: Any) -> str:
        constants.append(value)
        return f"K[{len(constants) - 1}]"

    def copy_of(node: _Plan | None, value: str) -> str:
        """An expression copying ``value`` (a local name) by ``node``, defining helpers as needed."""
        if node is None:
            return value
        kind = node[0]
        if node is _FLAT_DICT or node == _FLAT_DICT:
            return f"{value}.copy()"
        if kind == _SET:
            return f"set({value})"
        if kind == _OTHER:
            return f"deepcopy({value})"
        name = f"f{len(lines)}"
        lines.append("")  # reserve this helper's place: helpers are defined before their callers
        body = [f"def {name}(v):"]
        if kind == _MODEL:  # as pydantic's __deepcopy__, its slots set through their descriptors
            body += [f"    c = new({const(node[2])})", "    d = v.__dict__.copy()"]
            for field, sub in node[1]:
                key = const(field)
                body.append(f"    d[{key}] = {copy_of(sub, f'd[{key}]')}")
            body += ["    put(c, '__dict__', d)",
                     "    e = v.__pydantic_extra__",
                     "    set_extra(c, None if e is None else deepcopy(e))",
                     "    set_fields_set(c, set(v.__pydantic_fields_set__))",
                     "    p = v.__pydantic_private__",
                     "    set_private(c, None if p is None else deepcopy(p))",
                     "    return c"]
        elif kind == _LIST:
            body.append(f"    return [{', '.join(copy_of(sub, f'v[{i}]') for i, sub in enumerate(node[1]))}]")
        else:  # a dict with some mutable values
            body.append("    d = v.copy()")
            for key_value, sub in node[1]:
                key = const(key_value)
                body.append(f"    d[{key}] = {copy_of(sub, f'd[{key}]')}")
            body.append("    return d")
        lines[int(name[1:])] = "\n".join(body)
        return f"{name}({value})"

    top = copy_of(plan, "v")
    source = "\n".join(lines) + f"\ndef copy_value(v):\n    return {top}\n"
    slots = BaseModel.__dict__
    namespace: dict[str, Any] = {
        "K": tuple(constants), "put": _set, "new": object.__new__, "deepcopy": copy.deepcopy,
        "set_extra": slots["__pydantic_extra__"].__set__, "set_fields_set": slots["__pydantic_fields_set__"].__set__,
        "set_private": slots["__pydantic_private__"].__set__,
    }
    exec(compile(source, "<eventkernel.integrations.adk copier>", "exec"), namespace)  # noqa: S102
    return namespace["copy_value"]  # type: ignore[no-any-return]


# --- memory ----------------------------------------------------------------------------

MAX_RESULTS = 10
"""A search returns at most this many memories, as ADK's in-memory service does."""
_DELETED = "adk:delete_memory"  # the actor of a delete_memory: what it deleted is never added again
_DROPPED = "adk:session_replaced"  # the actor of a memory its session no longer holds: it may come back
_DOT = re.compile("[%/#.\x00\ud800-\udfff]")


def memory_namespace(app_name: str, user_id: str) -> str:
    """The kernel memory namespace of one user's memories in an app."""
    ns = ROOT + ".".join(_DOT.sub(_escape_char, part) if part else "%" for part in (app_name, user_id))
    return ns if len(ns) <= MAX_ID_LEN else ROOT + "#" + _hash(ns)


def _memory_key(event_id: str) -> str:
    key = _escape(event_id)
    return key if len(key) <= MAX_ID_LEN else "#" + _hash(key)


def _words(text: str) -> set[str]:
    """The lowercase word tokens of ``text`` (NFC)."""
    return {word.lower() for word in re.findall(r"\w+", unicodedata.normalize("NFC", text))}


def _latin(c: str) -> bool:
    if c.isascii():
        return c.isalnum() or c == "_"
    return unicodedata.name(c, "").startswith("LATIN")


def _searchable(text: str) -> set[str]:
    """The words an event is found by: its tokens, and each run of one script
    inside a token that mixes Latin with another (Japanese or Chinese text
    holds Latin words without spaces)."""
    words = _words(text)
    for word in list(words):
        if not word.isascii():
            words.update("".join(run) for _, run in itertools.groupby(word, _latin))
    return words


def _text_of(event: Event) -> str:
    parts = event.content.parts if event.content and event.content.parts else []
    return " ".join(part.text for part in parts if part.text)


class EventKernelMemoryService(BaseMemoryService):
    """An ADK memory service on an eventkernel journal (see the module's docstring)."""

    def __init__(self, kernel: Kernel | AsyncKernel | KernelView) -> None:
        self.kernel, self._call = bind(kernel)
        self._catch_up = catching_up(self.kernel)

    async def add_session_to_memory(self, session: Session) -> None:
        """The session's events with content become its memories (replacing
        what an earlier call added for the session), except deleted ones."""
        await self._call(self.add_sync, session.app_name, session.user_id, list(session.events), session.id, True)

    async def add_events_to_memory(
        self, *, app_name: str, user_id: str, events: Sequence[Event], session_id: str | None = None,
        custom_metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Add events not yet in memory (by id), except deleted ones."""
        await self._call(self.add_sync, app_name, user_id, list(events), session_id, False)

    async def search_memory(self, *, app_name: str, user_id: str, query: str) -> SearchMemoryResponse:
        return await self._call(self.search_sync, app_name, user_id, query)  # type: ignore[no-any-return]

    async def delete_memory(self, *, app_name: str, user_id: str, memory_id: str | None = None) -> None:
        if memory_id:
            await self._call(self.delete_sync, app_name, user_id, memory_id)

    # --- the same, for callers without an event loop ------------------------------

    def add_sync(self, app_name: str, user_id: str, events: list[Event], session_id: str | None,
                 replace: bool) -> None:
        where = "adk.add_to_memory"
        _text(where, "app_name", app_name)
        _text(where, "user_id", user_id)
        ns = memory_namespace(app_name, user_id)
        memory = self.kernel.memory
        wanted = {}
        for event in events:
            if event.content and event.content.parts:
                wanted[_memory_key(event.id)] = {"session_id": session_id, "text": _text_of(event),
                                                 "event": event.model_dump(mode="json", exclude_none=True)}
        together = self.kernel.transaction() if isinstance(self.kernel, Kernel) else contextlib.nullcontext()
        with together:  # (what is known is read under the write lock: no other process changes it meanwhile)
            known = {e.key: e for e in memory.list(ns, include_deleted=True) if e.namespace == ns}
            for key, value in wanted.items():
                old = known.get(key)
                if old is not None and old.is_deleted and old.updated_by == _DELETED:
                    continue  # what delete_memory deleted stays deleted
                if old is not None and not old.is_deleted and (not replace or old.value == value):
                    continue  # a known event is added once
                memory.put(ns, key, value, memory_type="episodic", actor="adk")
            if replace and session_id is not None:
                for key, old in known.items():
                    if key not in wanted and not old.is_deleted and old.value.get("session_id") == session_id:
                        memory.delete(ns, key, actor=_DROPPED)  # the session no longer holds it

    def search_sync(self, app_name: str, user_id: str, query: str) -> SearchMemoryResponse:
        """The memories sharing the most words with ``query`` (at most ten;
        among equals, the earlier events first)."""
        where = "adk.search_memory"
        _text(where, "app_name", app_name)
        _text(where, "user_id", user_id)
        _text(where, "query", query)
        ns = memory_namespace(app_name, user_id)
        asked = _words(query)
        self._catch_up()
        scored = []
        for entry in self.kernel.memory.list(ns):
            if entry.namespace != ns:
                continue
            text = entry.value["text"]
            words = _searchable(text)
            if not words:
                continue
            lowered = unicodedata.normalize("NFC", text).lower()
            matched = sum(1 for w in asked if w in words or (not w.isascii() and w in lowered))
            if matched:
                scored.append((matched, entry.value["event"]))
        scored.sort(key=lambda s: (-s[0], s[1]["timestamp"], s[1]["id"]))
        return SearchMemoryResponse(memories=[
            MemoryEntry(id=e["id"], content=e["content"], author=e.get("author"),
                        timestamp=datetime.fromtimestamp(e["timestamp"]).isoformat())
            for _, e in scored[:MAX_RESULTS]
        ])

    def delete_sync(self, app_name: str, user_id: str, memory_id: str) -> None:
        ns, key = memory_namespace(app_name, user_id), _memory_key(memory_id)
        try:
            self.kernel.memory.delete(ns, key, actor=_DELETED)
        except (NotFound, InvalidTransition):
            pass  # nothing to delete, or already deleted
