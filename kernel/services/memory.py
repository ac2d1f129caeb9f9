"""Versioned long-term memory.

Each memory is the stream ``memory:<namespace>/<key>``, and each of its
events is a version: put, delete (soft), restore, rollback (a new version
equal to an older one), expire (TTL) and publish (a copy arriving from
another namespace). A touch (a TTL counted again from now) is not a
version; it goes to ``memory_ttl:<namespace>/<key>``. ``get`` returns the newest version unless it is deleted
or expired; ``version=`` and ``as_of=`` read the version rows.
"""

from __future__ import annotations

import builtins
from typing import Any, TypeVar

import apsw

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound
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
from eventkernel.projections import memory_entries
from eventkernel.projections.memory_entries import TYPES, MemoryEntry
from eventkernel.services.base import Context
from eventkernel.services.runner import NOTHING, Args, Decision, Emit, Reads, Spec, emit, run
from eventkernel.validate import (
    check_bool,
    check_int,
    check_json_dict,
    check_json_value,
    check_limit,
    check_optional_text,
    check_text,
)

MAX_TTL_MS = 100 * 366 * 24 * 3600 * 1000
R = TypeVar("R")


def stream_of(namespace: str, key: str) -> str:
    return f"memory:{namespace}/{key}"


def ttl_stream_of(namespace: str, key: str) -> str:
    """The stream of a memory's touches, which are not versions."""
    return f"memory_ttl:{namespace}/{key}"


def _check_address(where: str, namespace: Any, key: Any, name: str = "namespace") -> None:
    check_text(where, name, namespace)
    if "/" in namespace:
        raise InvalidArgument(f"{where} refused: {name} {namespace!r} must not contain '/' (it separates the key)")
    check_text(where, "key", key)


def _check_type(where: str, memory_type: Any) -> None:
    if memory_type not in TYPES:
        raise InvalidArgument(f"{where} refused: memory_type must be one of {', '.join(TYPES)}, got {memory_type!r}")


# --- the rules ---------------------------------------------------------------------------


def decide_put(state: None, a: Args, now: int) -> Decision:
    """A new version; ``expected_version`` (checked by the journal) makes it compare-and-set."""
    ttl_ms = a["ttl_ms"]
    return emit(
        stream_of(a["namespace"], a["key"]),
        MemoryPut(namespace=a["namespace"], key=a["key"], value=a["value"], memory_type=a["memory_type"],
                  metadata=a["metadata"], actor=a["actor"], expires_at=None if ttl_ms is None else now + ttl_ms),
        expected_version=a["expected_version"], correlation_id=a.get("correlation_id"),
    )


def _existing(where: str, current: MemoryEntry | None, a: Args) -> MemoryEntry:
    if current is None:
        raise NotFound(f"{where} refused: no memory {a['namespace']}/{a['key']}")
    return current


def _mark(where: str, current: MemoryEntry | None, a: Args, *, live: bool) -> Decision:
    """Delete a live memory (``live``) or restore a deleted or expired one."""
    current = _existing(where, current, a)
    if current.is_deleted == live:
        state = f"already {current.operation}d" if current.is_deleted else "live (not deleted)"
        raise InvalidTransition(f"{where} refused: {a['namespace']}/{a['key']} is {state}")
    event = (MemoryDeleted if live else MemoryRestored)(namespace=a["namespace"], key=a["key"], actor=a["actor"])
    return emit(stream_of(a["namespace"], a["key"]), event, expected_version=current.version)


def decide_delete(current: MemoryEntry | None, a: Args, now: int) -> Decision:
    return _mark("memory.delete", current, a, live=True)


def decide_restore(current: MemoryEntry | None, a: Args, now: int) -> Decision:
    return _mark("memory.restore", current, a, live=False)


def decide_rollback(state: tuple[MemoryEntry | None, MemoryEntry | None], a: Args, now: int) -> Decision:
    """``state``: (the newest version, version ``to_version``). The new version equals the old one."""
    current, old = state
    current = _existing("memory.rollback", current, a)
    to_version = a["to_version"]
    if old is None or to_version >= current.version:
        raise NotFound(
            f"memory.rollback refused: {a['namespace']}/{a['key']} has no version {to_version} before its "
            f"current version {current.version}"
        )
    return emit(
        stream_of(a["namespace"], a["key"]),
        MemoryRolledBack(namespace=a["namespace"], key=a["key"], to_version=to_version, value=old.value,
                         memory_type=old.memory_type, metadata=old.metadata, actor=a["actor"]),
        expected_version=current.version,
    )


def _expiry(entry: MemoryEntry) -> Emit:
    assert entry.expires_at is not None
    event = MemoryExpired(namespace=entry.namespace, key=entry.key, expires_at=entry.expires_at)
    return Emit(stream_of(entry.namespace, entry.key), (event,), expected_version=entry.version)


def decide_touch(current: MemoryEntry | None, a: Args, now: int) -> Decision:
    """A live memory with a TTL gets a new deadline, its TTL from now; any other: nothing."""
    if current is None or current.is_deleted or current.ttl_ms is None:
        return NOTHING
    return emit(
        ttl_stream_of(a["namespace"], a["key"]),
        MemoryTouched(namespace=a["namespace"], key=a["key"], expires_at=now + current.ttl_ms),
    )


def decide_expire(due: builtins.list[MemoryEntry], a: Args, now: int) -> Decision:
    """Every live memory whose TTL ran out."""
    return Decision(emits=tuple(_expiry(entry) for entry in due))


def decide_publish(source: MemoryEntry | None, a: Args, now: int) -> Decision:
    """A copy of the live memory, as a new version under ``to_namespace``."""
    source = _existing("memory.publish", source, a)
    if source.is_deleted:
        raise NotFound(f"memory.publish refused: {a['namespace']}/{a['key']} is {source.operation}d; nothing to publish")
    return emit(
        stream_of(a["to_namespace"], a["key"]),
        MemoryPublished(namespace=a["to_namespace"], key=a["key"], from_namespace=a["namespace"],
                        from_version=source.version, value=source.value, memory_type=source.memory_type,
                        metadata=source.metadata, actor=a["actor"]),
    )


def _load_latest(conn: apsw.Connection, a: Args, now: int) -> MemoryEntry | None:
    return memory_entries.latest(conn, a["namespace"], a["key"])


def _load_rollback(conn: apsw.Connection, a: Args, now: int) -> tuple[MemoryEntry | None, MemoryEntry | None]:
    return (memory_entries.latest(conn, a["namespace"], a["key"]),
            memory_entries.version(conn, a["namespace"], a["key"], a["to_version"]))


def _written(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> MemoryEntry:
    """The version the command wrote: version rows never change, so the live row is the first answer."""
    last = records[-1]
    found = memory_entries.version(reads.live, last.event.namespace, last.event.key, last.version)  # type: ignore[attr-defined]
    assert found is not None
    return found


PUT: Spec[None, MemoryEntry] = Spec("memory.put", lambda conn, a, now: None, decide_put, _written)
DELETE: Spec[MemoryEntry | None, MemoryEntry] = Spec("memory.delete", _load_latest, decide_delete, _written)
RESTORE: Spec[MemoryEntry | None, MemoryEntry] = Spec("memory.restore", _load_latest, decide_restore, _written)
ROLLBACK: Spec[Any, MemoryEntry] = Spec("memory.rollback", _load_rollback, decide_rollback, _written)
PUBLISH: Spec[MemoryEntry | None, MemoryEntry] = Spec("memory.publish", _load_latest, decide_publish, _written)
TOUCH: Spec[MemoryEntry | None, MemoryEntry | None] = Spec(
    # A touch changes the newest version in place: a retry reads it as it was right after the first call.
    "memory.touch", _load_latest, decide_touch,
    lambda reads, a, records, outcome: memory_entries.latest(reads.conn, a["namespace"], a["key"]) if records else None,
    memory_entries, lambda a, records: [stream_of(a["namespace"], a["key"]), ttl_stream_of(a["namespace"], a["key"])],
)
EXPIRE: Spec[builtins.list[MemoryEntry], int] = Spec(
    "memory.expire", lambda conn, a, now: memory_entries.due(conn, now, a["prefix"]), decide_expire,
    lambda reads, a, records, outcome: sum(isinstance(r.event, MemoryExpired) for r in records),
)


class Memory:
    """``k.memory``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        memory_type: str = "semantic",
        metadata: dict[str, Any] | None = None,
        actor: str | None = None,
        ttl_ms: int | None = None,
        expected_version: int | None = None,
        correlation_id: str | None = None,
        command_id: str | None = None,
    ) -> MemoryEntry:
        """Write a new version. ``expected_version`` (the current version, 0
        for a new memory) makes it compare-and-set: ConcurrencyConflict otherwise.
        ``ttl_ms`` sets ``expires_at``; ``expire()`` records the expiry.
        ``correlation_id`` (a task id) files the write under that task, so
        ``checkpoints.resume(task)`` and ``k.read(correlation_id=…)`` include it."""
        where = "memory.put"
        _check_address(where, namespace, key)
        check_json_value(where, "value", value)
        _check_type(where, memory_type)
        check_json_dict(where, "metadata", metadata)
        check_optional_text(where, "actor", actor)
        if ttl_ms is not None:
            check_int(where, "ttl_ms", ttl_ms, minimum=1, maximum=MAX_TTL_MS)
        if expected_version is not None:
            check_int(where, "expected_version", expected_version, minimum=0)
        check_optional_text(where, "correlation_id", correlation_id)
        args = {"namespace": namespace, "key": key, "value": value, "memory_type": memory_type,
                "metadata": metadata, "actor": actor, "ttl_ms": ttl_ms, "expected_version": expected_version}
        if correlation_id is not None:
            args["correlation_id"] = correlation_id
        return run(self._ctx, PUT, args, command_id=command_id, actor=actor)

    def get(
        self, namespace: str, key: str, *, version: int | None = None, as_of: int | None = None
    ) -> MemoryEntry | None:
        """The newest live version; or version ``version``; or the newest as of
        journal position ``as_of``. None when there is none or it is deleted/expired."""
        where = "memory.get"
        _check_address(where, namespace, key)
        if version is not None and as_of is not None:
            raise InvalidArgument(f"{where} refused: give version= or as_of=, not both")
        with self._ctx.db.statement(where) as conn:
            if version is not None:
                check_int(where, "version", version, minimum=1)
                found = memory_entries.version(conn, namespace, key, version)
            elif as_of is not None:
                check_int(where, "as_of", as_of, minimum=0)
                found = memory_entries.as_of(conn, namespace, key, as_of)
            else:
                found = memory_entries.latest(conn, namespace, key)
        return None if found is None or found.is_deleted else found

    def history(
        self, namespace: str, key: str, *, after: int = 0, limit: int | None = None
    ) -> builtins.list[MemoryEntry]:
        """Every version, oldest first (deletes and expiries included); at most
        ``limit``, written after journal position ``after``."""
        where = "memory.history"
        _check_address(where, namespace, key)
        check_int(where, "after", after, minimum=0)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            return memory_entries.history(conn, namespace, key, after=after, limit=limit)

    def list(
        self, prefix: str = "", *, memory_type: str | None = None, include_deleted: bool = False,
        limit: int | None = None, after_key: tuple[str, str] | None = None,
    ) -> builtins.list[MemoryEntry]:
        """The newest version of each memory whose namespace starts with
        ``prefix``, in (namespace, key) order; at most ``limit``, after
        ``after_key`` (the (namespace, key) of the last entry of the previous page)."""
        where = "memory.list"
        if prefix != "":
            check_text(where, "prefix", prefix)
        if memory_type is not None:
            _check_type(where, memory_type)
        check_bool(where, "include_deleted", include_deleted)
        check_limit(where, limit)
        after = None
        if after_key is not None:
            if not isinstance(after_key, tuple | list) or len(after_key) != 2:
                raise InvalidArgument(
                    f"{where} refused: after_key must be a (namespace, key) pair, got {after_key!r:.60}"
                )
            check_text(where, "after_key namespace", after_key[0])
            check_text(where, "after_key key", after_key[1])
            after = (after_key[0], after_key[1])
        with self._ctx.db.read(where) as conn:
            return memory_entries.list(conn, prefix, memory_type=memory_type, include_deleted=include_deleted,
                                       limit=limit, after=after)

    def recent(
        self, prefix: str = "", *, namespace: str | None = None, memory_type: str | None = None,
        include_deleted: bool = False, limit: int | None = None, before: int | None = None,
    ) -> builtins.list[MemoryEntry]:
        """The newest version of each memory whose namespace starts with
        ``prefix`` (or is exactly ``namespace``), the most recently written
        first; at most ``limit``, written before journal position ``before``
        (the ``position`` of the last entry of the previous page)."""
        where = "memory.recent"
        if prefix != "":
            check_text(where, "prefix", prefix)
        if namespace is not None:
            check_text(where, "namespace", namespace)
            if prefix != "":
                raise InvalidArgument(f"{where} refused: give a prefix or a namespace, not both")
        if memory_type is not None:
            _check_type(where, memory_type)
        check_bool(where, "include_deleted", include_deleted)
        check_limit(where, limit)
        if before is not None:
            check_int(where, "before", before, minimum=1)
        with self._ctx.db.read(where) as conn:
            return memory_entries.recent(conn, prefix, namespace=namespace, memory_type=memory_type,
                                         include_deleted=include_deleted, limit=limit, before=before)

    def delete(
        self, namespace: str, key: str, *, actor: str | None = None, command_id: str | None = None
    ) -> MemoryEntry:
        """Soft-delete: a new version that ``get`` does not return. Raises NotFound, InvalidTransition."""
        return self._address(DELETE, namespace, key, actor, command_id)

    def restore(
        self, namespace: str, key: str, *, actor: str | None = None, command_id: str | None = None
    ) -> MemoryEntry:
        """Undo a delete or an expiry: a new, live version with the last value."""
        return self._address(RESTORE, namespace, key, actor, command_id)

    def rollback(
        self, namespace: str, key: str, to_version: int, *, actor: str | None = None, command_id: str | None = None
    ) -> MemoryEntry:
        """Write a new version equal to version ``to_version`` (live). Raises NotFound."""
        where = "memory.rollback"
        _check_address(where, namespace, key)
        check_int(where, "to_version", to_version, minimum=1)
        check_optional_text(where, "actor", actor)
        args = {"namespace": namespace, "key": key, "to_version": to_version, "actor": actor}
        return run(self._ctx, ROLLBACK, args, command_id=command_id, actor=actor)

    def expire(self, prefix: str = "", *, actor: str | None = None, command_id: str | None = None) -> int:
        """Record the expiry of every live memory whose TTL has run out, in the
        namespaces starting with ``prefix`` (the reaper; until it runs, such a
        memory is still returned, and a touch keeps it). Returns the count."""
        if prefix != "":
            check_text("memory.expire", "prefix", prefix)
        check_optional_text("memory.expire", "actor", actor)
        return run(self._ctx, EXPIRE, {"prefix": prefix}, command_id=command_id, actor=actor)

    def touch(
        self, namespace: str, key: str, *, actor: str | None = None, command_id: str | None = None
    ) -> MemoryEntry | None:
        """Count a live memory's TTL again from now (its ``expires_at`` moves;
        a refresh on read). Not a version: the event goes to the stream
        ``memory_ttl:<namespace>/<key>`` and the newest version keeps its
        number. A memory that is missing, deleted, expired or without a TTL is
        left alone (nothing is written; returns None); otherwise returns the
        newest version with its new deadline."""
        return self._address(TOUCH, namespace, key, actor, command_id)

    def namespaces(self, prefix: str = "", *, limit: int | None = None) -> builtins.list[str]:
        """Every namespace that holds a live memory and starts with ``prefix``, in order."""
        where = "memory.namespaces"
        if prefix != "":
            check_text(where, "prefix", prefix)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            return memory_entries.namespaces(conn, prefix, limit=limit)

    def publish(
        self, namespace: str, key: str, to_namespace: str, *, actor: str | None = None, command_id: str | None = None
    ) -> MemoryEntry:
        """Copy the live memory to ``to_namespace`` (same key) as a new version
        there, e.g. from a session's namespace to the user's. Raises NotFound."""
        where = "memory.publish"
        _check_address(where, namespace, key)
        _check_address(where, to_namespace, key, "to_namespace")
        if to_namespace == namespace:
            raise InvalidArgument(f"{where} refused: to_namespace is the same as namespace ({namespace!r})")
        check_optional_text(where, "actor", actor)
        args = {"namespace": namespace, "key": key, "to_namespace": to_namespace, "actor": actor}
        return run(self._ctx, PUBLISH, args, command_id=command_id, actor=actor)

    def _address(
        self, spec: Spec[MemoryEntry | None, R], namespace: str, key: str, actor: str | None,
        command_id: str | None,
    ) -> R:
        _check_address(spec.name, namespace, key)
        check_optional_text(spec.name, "actor", actor)
        return run(self._ctx, spec, {"namespace": namespace, "key": key, "actor": actor}, command_id=command_id,
                   actor=actor)
