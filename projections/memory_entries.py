"""Projection ``memory_entries``: every version of every memory.

A touch (``memory.touched``) is not a version: it moves the deadline
(``expires_at``) of the newest version in place, when that version is live
and has a TTL."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.memory import (
    MemoryDeleted,
    MemoryExpired,
    MemoryPublished,
    MemoryPut,
    MemoryRestored,
    MemoryRolledBack,
    MemoryTouched,
)
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Order, Target, Writer, columns, dump, limit_of, loader, raw_json
from eventkernel.projections.rows import after as after_cursor
from eventkernel.validate import prefix_upper

NAME = "memory_entries"
VERSION = 3  # 2: ttl_ms, and touches; 3: the index memory_recent
HANDLES = frozenset(
    c.__event_type__
    for c in (MemoryPut, MemoryDeleted, MemoryRestored, MemoryRolledBack, MemoryExpired, MemoryPublished, MemoryTouched)
)
TYPES = ("semantic", "episodic", "procedural")


class MemoryEntry(msgspec.Struct, frozen=True):
    """One version of a memory."""

    namespace: str
    key: str
    version: int
    value: Any
    memory_type: str
    is_deleted: bool
    operation: str
    metadata: dict[str, Any] | None
    created_by: str | None
    updated_by: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    ttl_ms: int | None  # the TTL a touch counts again from its time (None: no TTL)
    position: int


_COLS = columns(MemoryEntry)
_load = loader(MemoryEntry, json=["value", "metadata"], flags=["is_deleted"])
_OPS = {
    MemoryPut: "put",
    MemoryDeleted: "delete",
    MemoryRestored: "restore",
    MemoryRolledBack: "rollback",
    MemoryExpired: "expire",
    MemoryPublished: "publish",
}
HANDLED = frozenset((*_OPS, MemoryTouched))


def _version(prev: Sequence[Any] | None, recorded: Recorded, event: Event) -> builtins.list[Any] | None:
    """The row (in ``_COLS`` order) of the version ``event`` makes, given the
    key's latest version ``prev`` (None: the key has none); None when the
    event makes no version (a delete, restore or expiry of nothing)."""
    op = _OPS.get(type(event))
    if op is None:
        return None
    at = recorded.recorded_at
    if isinstance(event, MemoryPut | MemoryRolledBack | MemoryPublished):
        return _valued(prev, event.namespace, event.key, dump(event.value), event.memory_type, dump(event.metadata),
                       event.actor, event.expires_at if isinstance(event, MemoryPut) else None, op, recorded.version,
                       at, recorded.position)
    if prev is None:
        return None
    value, memory_type, metadata, expires_at, ttl_ms = prev[3], prev[4], prev[7], prev[12], prev[13]
    actor = getattr(event, "actor", None)
    deleted = 0 if isinstance(event, MemoryRestored) else 1
    if isinstance(event, MemoryRestored) and prev[6] == "expire":
        expires_at = ttl_ms = None  # restored after its TTL: it lives on without one
    return [event.namespace, event.key, recorded.version, value, memory_type, deleted, op,  # type: ignore[attr-defined]
            metadata, prev[8], actor, prev[10], at, expires_at, ttl_ms, recorded.position]


def _valued(
    prev: Sequence[Any] | None, namespace: str, key: str, value: str | None, memory_type: str, metadata: str | None,
    actor: str | None, expires_at: int | None, op: str, version: int, at: int, position: int,
) -> builtins.list[Any]:
    """The row of a version that sets a value (a put, rollback or publish;
    ``value`` and ``metadata`` as JSON text)."""
    ttl_ms = None if expires_at is None else expires_at - at  # the put's deadline is its time plus its TTL
    created_by, created_at = (prev[8], prev[10]) if prev is not None else (actor, at)
    return [namespace, key, version, value, memory_type, 0, op, metadata, created_by, actor, created_at, at,
            expires_at, ttl_ms, position]


def _touches(row: Sequence[Any] | None) -> bool:
    """Whether a touch moves the deadline of the newest version ``row``: live, with a TTL."""
    return row is not None and row[5] == 0 and row[13] is not None


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if type(event) is MemoryTouched:
        conn.execute(
            "UPDATE memory_entries SET expires_at = ? WHERE namespace = ? AND key = ? AND is_latest = 1 "
            "AND is_deleted = 0 AND ttl_ms IS NOT NULL",
            (event.expires_at, event.namespace, event.key),
        )
        return
    if type(event) not in _OPS:
        return
    ns, key = event.namespace, event.key  # type: ignore[attr-defined]
    prev = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE namespace = ? AND key = ? AND is_latest = 1", (ns, key)
    ).fetchone()
    row = _version(prev, recorded, event)
    if row is None:
        return
    if prev is not None:
        conn.execute("UPDATE memory_entries SET is_latest = 0 WHERE namespace = ? AND key = ? AND is_latest = 1", (ns, key))
    conn.execute(f"INSERT INTO memory_entries ({_COLS}, is_latest) VALUES ({', '.join('?' * 16)})", (*row, 1))


class _PutRow(msgspec.Struct, gc=False):
    """What the fold reads of a ``memory.put`` (its JSON values as stored)."""

    namespace: str
    key: str
    memory_type: str
    value: msgspec.Raw = msgspec.Raw(b"null")
    metadata: msgspec.Raw = msgspec.Raw(b"null")
    actor: str | None = None
    expires_at: int | None = None


_PUT = MemoryPut.__event_type__
_put_row = msgspec.json.Decoder(_PutRow).decode


class Fold:
    """The rebuild's bulk path: every version ``apply`` would insert, made as
    ``_version`` makes it (the latest version of each key found through a
    dict, not a query; a put at the current schema read from the stored
    JSON, its value copied as stored) and written, the
    superseded versions now and then (:meth:`flush`), the rest at the end.
    Versions are kept as tuples (which the garbage collector stops
    tracking), which were superseded as a set of their indexes."""

    ASIDE = True  # its rows may be written by a build's second thread (projector._Aside)

    def __init__(self) -> None:
        self.rows: builtins.list[tuple[Any, ...]] = []
        self.latest: dict[tuple[str, str], int] = {}
        self.superseded: set[int] = set()

    def add_row(self, row: tuple[Any, ...]) -> bool:
        if row[3] != _PUT or row[4] != MemoryPut.__event_schema__:
            return False
        e = _put_row(row[5])
        name = (e.namespace, e.key)
        i = self.latest.get(name)
        self._add(name, i, _valued(None if i is None else self.rows[i], e.namespace, e.key, raw_json(e.value),
                                   e.memory_type, raw_json(e.metadata), e.actor, e.expires_at, "put", row[2], row[9],
                                   row[0]))
        return True

    def add(self, recorded: Recorded, event: Event) -> None:
        if type(event) not in HANDLED:
            return
        name = (event.namespace, event.key)  # type: ignore[attr-defined]
        i = self.latest.get(name)
        prev = None if i is None else self.rows[i]
        if type(event) is MemoryTouched:
            if _touches(prev):
                self.rows[i] = (*prev[:12], event.expires_at, *prev[13:])  # type: ignore[index]
            return
        row = _version(prev, recorded, event)
        if row is not None:
            self._add(name, i, row)

    def _add(self, name: tuple[str, str], superseded: int | None, row: builtins.list[Any]) -> None:
        if superseded is not None:
            self.superseded.add(superseded)
        self.latest[name] = len(self.rows)
        self.rows.append(tuple(row))

    def write(self, out: Writer) -> None:
        superseded = self.superseded
        out.insert("memory_entries", f"{_COLS}, is_latest",
                   ((*row, int(i not in superseded)) for i, row in enumerate(self.rows)))

    def flush(self, out: Writer) -> None:
        """Once ``out.held`` were superseded, and at least as many as there
        are keys (the latest versions are listed again), write the versions a
        later one superseded and forget them: such a version is never changed
        again (a touch changes the latest, the next version reads the
        latest). The latest of each key stay, in order."""
        superseded = self.superseded
        if len(superseded) < max(out.held, len(self.latest)):
            return
        rows = self.rows
        out.insert("memory_entries", f"{_COLS}, is_latest", ((*rows[i], 0) for i in sorted(superseded)))
        kept = sorted(self.latest.items(), key=lambda item: item[1])
        self.rows = [rows[i] for _, i in kept]
        self.latest = {name: j for j, (name, _) in enumerate(kept)}
        self.superseded = set()


# --- queries ----------------------------------------------------------------------


_LATEST = f"SELECT {_COLS} FROM memory_entries WHERE namespace = ? AND key = ? AND is_latest = 1"
_VERSION = f"SELECT {_COLS} FROM memory_entries WHERE namespace = ? AND key = ? AND version = ?"


def latest(conn: apsw.Connection, namespace: str, key: str) -> MemoryEntry | None:
    """The newest version, deleted or not."""
    row = conn.execute(_LATEST, (namespace, key)).fetchone()
    return None if row is None else _load(row)


def version(conn: apsw.Connection, namespace: str, key: str, version: int) -> MemoryEntry | None:
    row = conn.execute(_VERSION, (namespace, key, version)).fetchone()
    return None if row is None else _load(row)


def as_of(conn: apsw.Connection, namespace: str, key: str, position: int) -> MemoryEntry | None:
    """The newest version written at or before journal ``position``."""
    row = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE namespace = ? AND key = ? AND position <= ? "
        "ORDER BY version DESC LIMIT 1",
        (namespace, key, position),
    ).fetchone()
    return None if row is None else _load(row)


def history(
    conn: apsw.Connection, namespace: str, key: str, *, after: int = 0, limit: int | None = None
) -> builtins.list[MemoryEntry]:
    """Every version written after journal position ``after``, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE namespace = ? AND key = ? AND position > ? ORDER BY version "
        "LIMIT ?",
        (namespace, key, after, limit_of(limit)),
    )
    return [_load(r) for r in rows]


KEYS: Order = (("namespace", False), ("key", False))


def _latest_where(
    prefix: str, namespace: str | None, memory_type: str | None, include_deleted: bool,
    cursor: tuple[str, builtins.list[Any]],
) -> tuple[str, builtins.list[Any]]:
    """The WHERE of a listing of newest versions: under ``prefix`` (or in
    ``namespace``), of a type, deleted ones or not, past a page's cursor."""
    where, args = ["is_latest = 1"], builtins.list(cursor[1])
    if cursor[0]:
        where.append(cursor[0])
    if namespace is not None:
        where.append("namespace = ?")
        args.append(namespace)
    ranged, ranged_args = _prefix(prefix)
    where += ranged
    args += ranged_args
    if memory_type is not None:
        where.append("memory_type = ?")
        args.append(memory_type)
    if not include_deleted:
        where.append("is_deleted = 0")
    return " AND ".join(where), args


def list(
    conn: apsw.Connection, prefix: str = "", *, memory_type: str | None = None, include_deleted: bool = False,
    limit: int | None = None, after: tuple[str, str] | None = None,
) -> builtins.list[MemoryEntry]:
    """The newest version of each memory whose namespace starts with
    ``prefix``, in (namespace, key) order, after the (namespace, key) ``after``."""
    where, args = _latest_where(prefix, None, memory_type, include_deleted, after_cursor(KEYS, after))
    rows = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE {where} ORDER BY namespace, key LIMIT ?",
        (*args, limit_of(limit)),
    )
    return [_load(r) for r in rows]


def recent(
    conn: apsw.Connection, prefix: str = "", *, namespace: str | None = None, memory_type: str | None = None,
    include_deleted: bool = False, limit: int | None = None, before: int | None = None,
) -> builtins.list[MemoryEntry]:
    """The newest version of each memory whose namespace starts with
    ``prefix`` (or is ``namespace``), the most recently written first (by
    journal position), written before journal position ``before``."""
    cursor = ("", []) if before is None else ("position < ?", [before])
    where, args = _latest_where(prefix, namespace, memory_type, include_deleted, cursor)
    # The page's rows found first by rowid, then read: the sort holds two integers per candidate, not whole rows.
    rows = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE rowid IN (SELECT rowid FROM memory_entries WHERE {where} "
        "ORDER BY position DESC LIMIT ?) ORDER BY position DESC",
        (*args, limit_of(limit)),
    )
    return [_load(r) for r in rows]


def due(conn: apsw.Connection, now: int, prefix: str = "") -> builtins.list[MemoryEntry]:
    """Live memories whose TTL ran out at or before ``now``, in namespaces starting with ``prefix``."""
    where, args = _prefix(prefix)
    rows = conn.execute(
        f"SELECT {_COLS} FROM memory_entries WHERE is_latest = 1 AND is_deleted = 0 AND expires_at IS NOT NULL "
        f"AND expires_at <= ? {''.join(' AND ' + w for w in where)} ORDER BY expires_at, namespace, key",
        (now, *args),
    )
    return [_load(r) for r in rows]


def namespaces(conn: apsw.Connection, prefix: str = "", *, limit: int | None = None) -> builtins.list[str]:
    """Every namespace holding a live memory that starts with ``prefix``, in order."""
    where, args = _prefix(prefix)
    rows = conn.execute(
        "SELECT DISTINCT namespace FROM memory_entries INDEXED BY memory_latest WHERE is_latest = 1 AND is_deleted = 0"
        f"{''.join(' AND ' + w for w in where)} ORDER BY namespace LIMIT ?",
        (*args, limit_of(limit)),
    )
    return [r[0] for r in rows]


def _prefix(prefix: str) -> tuple[builtins.list[str], builtins.list[str]]:
    """The condition on ``namespace`` for namespaces starting with ``prefix``: a range the index can use."""
    if not prefix:
        return [], []
    upper = prefix_upper(prefix)
    if upper is None:
        return ["namespace >= ?"], [prefix]
    return ["namespace >= ? AND namespace < ?"], [prefix, upper]
