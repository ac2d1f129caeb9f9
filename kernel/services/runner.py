"""One shape for every command, one runner for all of them.

A command is **load → decide → emit**:

- ``load(conn, args, now)`` reads what the rules need (and makes any new id);
- ``decide(state, args, now)`` is a pure function: it applies the rules and
  returns a :class:`Decision` — the events to append, or raises a
  :class:`CommandRejected` — so the rules are tested without SQLite;
- the runner appends the events, which applies every inline projection, and
  ``answer(reads, args, records, outcome)`` reads the result.

The runner owns the write transaction (inside a larger one, a savepoint
where the command could fail after writing), the
kernel's clock, the command's metadata, and ``command_id``: a retry with the
same id answers what the first call answered, as of the first call, and
appends nothing. It is the only path by which a command writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

import apsw
import msgspec

from eventkernel import codec, journal
from eventkernel.codec import Event
from eventkernel.connection import memory_connection
from eventkernel.errors import IdempotencyConflict, JournalError
from eventkernel.events.commands import CommandRecorded
from eventkernel.journal import Recorded
from eventkernel.services.base import Context
from eventkernel.validate import check_optional_text

S = TypeVar("S")
R = TypeVar("R")
Args = Mapping[str, Any]


class Emit(msgspec.Struct, frozen=True):
    """Events to append to one stream."""

    stream: str
    events: Sequence[Event]
    expected_version: int | None = None
    correlation_id: str | None = None


class Decision(msgspec.Struct, frozen=True):
    """What a command decided: the events to append (none: it changes
    nothing), and for a command that changed nothing, which of its answers
    it gave (``outcome``, recorded with a command id)."""

    emits: tuple[Emit, ...] = ()
    outcome: str | None = None


NOTHING = Decision()


def emit(
    stream: str, *events: Event, expected_version: int | None = None, correlation_id: str | None = None
) -> Decision:
    """A decision to append ``events`` to one stream."""
    return Decision(emits=(Emit(stream, events, expected_version, correlation_id),))


class Reads(msgspec.Struct, frozen=True):
    """What an answer reads: the projection tables (live, or as they were
    right after the first call, for a retry), the live connection, and the
    position the answer is as of (None: now)."""

    conn: apsw.Connection
    live: apsw.Connection
    as_of: int | None = None


@dataclass(frozen=True)
class Spec(Generic[S, R]):
    """A command. ``projection`` is the read model its answer reads; to answer
    a retry the runner folds, into a private database, that projection's
    events up to the first call (``scope``: only these streams — enough for
    commands whose answer depends on them alone)."""

    name: str
    load: Callable[[apsw.Connection, Args, int], S]
    decide: Callable[[S, Args, int], Decision]
    answer: Callable[[Reads, Args, list[Recorded], str | None], R]
    projection: ModuleType | None = None
    scope: Callable[[Args, list[Recorded]], Iterable[str]] | None = None


def run(
    ctx: Context, spec: Spec[S, R], args: Args, *, command_id: str | None = None, actor: str | None = None,
    record_noop: bool = True,
) -> R:
    """Run one command: in the next group commit with other threads'
    commands (or alone, without group commit), or inside this thread's open
    transaction (see ``_execute`` for when it takes a savepoint). ``record_noop=False``: an attempt that
    changes nothing does not bind ``command_id`` yet (a blocking claim's
    attempts before its deadline)."""
    name = spec.name
    check_optional_text(name, "command_id", command_id)
    check_optional_text(name, "actor", actor)
    db = ctx.db
    if db.owns_write():  # this thread's transaction: the command joins it
        db.check(name)
        if db.aborted is not None:
            raise JournalError(f"{name} refused: {db.aborted}")
        return _execute(ctx, spec, args, command_id, actor, record_noop, True)
    if db.group is not None:
        db.check(name)
        result: R = db.group.run(name, lambda: _execute(ctx, spec, args, command_id, actor, record_noop, True))
        return result
    with db.write(name):
        return _execute(ctx, spec, args, command_id, actor, record_noop, False)


def identity(args: Args) -> dict[str, Any]:
    """What names a command's arguments for ``command_id``: every argument
    but those whose name starts with ``_`` (what a call derives afresh each
    time, e.g. a ciphertext under a random nonce, or key material, which
    must never reach the journal, not even as a digest)."""
    return {k: v for k, v in args.items() if not k.startswith("_")}


def _execute(
    ctx: Context, spec: Spec[S, R], args: Args, command_id: str | None, actor: str | None, record_noop: bool,
    nested: bool,
) -> R:
    """The command itself, inside a write transaction this thread holds.

    Inside a larger transaction (a ``k.transaction()``, a group commit) a
    refused command must undo only itself. Reading and deciding write
    nothing, so a refusal there needs no savepoint. Writing takes one only
    where the command could fail after its first write: several appends, or
    an event that one of the application's projections folds. Otherwise a
    failure after writing (an I/O error, a bug) rolls back the whole
    transaction (``Database.abort``), as does a storage error anywhere in
    it: after one, SQLite may have ended the transaction itself."""
    if not nested:
        return _command(ctx, spec, args, command_id, actor, record_noop, False)
    try:
        return _command(ctx, spec, args, command_id, actor, record_noop, True)
    except apsw.Error as e:
        raise ctx.db.abort(spec.name, e) from e


def _command(
    ctx: Context, spec: Spec[S, R], args: Args, command_id: str | None, actor: str | None, record_noop: bool,
    nested: bool,
) -> R:
    name = spec.name
    db = ctx.db
    conn = db.conn
    now = ctx.stamp()
    meta: dict[str, Any] = {"command": name}
    if actor is not None:
        meta["actor"] = actor
    if command_id is not None:
        digest = hashlib.sha256(codec.canonical_json(identity(args))).hexdigest()[:32]
        meta.update(command_id=command_id, args=digest)
        previous = journal.find_command(conn, command_id)
        if previous:
            first = previous[0].meta or {}
            if first.get("command") != name or first.get("args") != digest:
                raise IdempotencyConflict(
                    f"{name} refused: command_id {command_id!r} was already used at position "
                    f"{previous[0].position} by {first.get('command')} with other arguments; "
                    "a command id names one command forever"
                )
            return _replay(ctx, spec, args, previous)
    decision = spec.decide(spec.load(conn, args, now), args, now)
    count = sum(len(e.events) for e in decision.emits)
    if count > 1:  # so that a reader of the journal knows where each command ends (k.metrics.health)
        meta["events"] = count
    meta_text = codec.dump_json(meta)
    if not nested:
        return _write(ctx, spec, args, command_id, record_noop, decision, now, meta, meta_text)
    if len(decision.emits) > 1 or ctx.projector.folds_user_events(e for em in decision.emits for e in em.events):
        with db.write(name):  # a savepoint
            return _write(ctx, spec, args, command_id, record_noop, decision, now, meta, meta_text)
    head = db.head_cache  # the journal's head moves with the first row written
    try:
        return _write(ctx, spec, args, command_id, record_noop, decision, now, meta, meta_text)
    except Exception as e:
        if db.head_cache == head and not isinstance(e, apsw.Error):
            raise  # refused before it wrote a row (an append's own checks): nothing to undo
        raise db.abort(name, e) from e
    except BaseException as e:  # KeyboardInterrupt …: itself, but the transaction is lost all the same
        db.abort(name, e)
        raise


def _write(
    ctx: Context, spec: Spec[S, R], args: Args, command_id: str | None, record_noop: bool, decision: Decision,
    now: int, meta: dict[str, Any], meta_text: str,
) -> R:
    """Append what the command decided (or, with a command id, that it
    changed nothing) and answer."""
    name = spec.name
    conn = ctx.db.conn
    records: list[Recorded] = []
    for e in decision.emits:
        ids = None
        if command_id is not None:
            ids = [journal.command_event_id(command_id, len(records) + i) for i in range(len(e.events))]
        appended = ctx.emit(
            e.stream, e.events, recorded_at=now, expected_version=e.expected_version, event_ids=ids,
            correlation_id=e.correlation_id, meta=meta, meta_text=meta_text, where=name,
        )
        records += appended.records
    if command_id is not None and not records and record_noop:
        # It changed nothing: record that, so that the id stays bound to this answer.
        ctx.emit(
            f"command:{command_id}", [CommandRecorded(command=name, outcome=decision.outcome)],
            recorded_at=now, event_ids=[journal.command_event_id(command_id, 0)], meta=meta,
            meta_text=meta_text, where=name,
        )
    return spec.answer(Reads(conn, conn), args, records, decision.outcome)


def _replay(ctx: Context, spec: Spec[S, R], args: Args, previous: list[Recorded]) -> R:
    """The first call's answer: read from the projection as it was right
    after the first call's last event."""
    last = previous[-1]
    outcome = last.event.outcome if isinstance(last.event, CommandRecorded) else None
    records = [] if isinstance(last.event, CommandRecorded) else previous
    live = ctx.db.conn
    if spec.projection is None:
        return spec.answer(Reads(live, live, last.position), args, records, outcome)
    module = spec.projection
    base = journal.base(live)
    if base is not None:  # the events before the base are in an archive: start from the projections there
        from eventkernel import snapshots

        mem = snapshots.load(live, base[0])
    else:
        mem = memory_connection()
    try:
        if base is None:
            mem.execute(ctx.projector.ddl(module))
        if spec.scope is not None:
            rows: Iterable[Recorded] = (
                r for stream in sorted(set(spec.scope(args, records)))
                for r in journal.read(live, stream=stream, until=last.position)
            )
            rows = sorted(rows, key=lambda r: r.position)
        else:
            rows = journal.read(live, until=last.position, types=sorted(module.HANDLES))
        for r in rows:
            module.apply(mem, r, r.event)
        return spec.answer(Reads(mem, live, last.position), args, records, outcome)
    finally:
        mem.close()


def streams_of(args: Args, records: list[Recorded]) -> list[str]:
    """The scope of a command whose answer depends only on the streams it wrote."""
    return [r.stream for r in records]
