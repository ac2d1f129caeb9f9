"""What every command shares: the write transaction, the clock, appending
with inline projections, and ``command_id`` deduplication."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

import apsw

from eventkernel import codec, journal
from eventkernel.clock import Clock
from eventkernel.codec import Event
from eventkernel.connection import Database, memory_connection
from eventkernel.errors import IdempotencyConflict, JournalError, NotFound
from eventkernel.events.commands import CommandRecorded
from eventkernel.journal import Appended, Recorded
from eventkernel.projector import Projector
from eventkernel.validate import MAX_TIME_MS, check_optional_text


R = TypeVar("R")


def after_row(
    where: str, after_key: str | None, lookup: Callable[[str], R | None], what: str, key: Callable[[R], tuple[Any, ...]]
) -> tuple[Any, ...] | None:
    """The sort key of the row a list's ``after_key`` names (None without a
    cursor): ``lookup`` finds the row, ``key`` takes its sort columns.
    Raises NotFound when it names no row."""
    if after_key is None:
        return None
    row = lookup(after_key)
    if row is None:
        raise NotFound(f"{where} refused: after_key {after_key!r} names no {what}")
    return key(row)


class Context:
    """The storage a service writes through."""

    def __init__(self, db: Database, projector: Projector, clock: Clock) -> None:
        self.db = db
        self.projector = projector
        self.clock = clock
        db.before_commit = projector.advance

    def now(self) -> int:
        """The clock's reading, checked."""
        t = self.clock()
        if type(t) is not int or not 0 <= t <= MAX_TIME_MS:
            raise JournalError(
                f"the kernel clock returned {t!r:.60}; a clock must return int ms since the epoch, "
                f"between 0 and {MAX_TIME_MS} (the end of year 9999)"
            )
        return t

    def stamp(self) -> int:
        """The time a write records: the clock's reading, but never below the
        journal head's ``recorded_at``, so that times never go backwards in a
        file even when a clock steps back (and deadlines derived from them
        never shrink). Call inside a write transaction."""
        db = self.db
        head = db.head_cache
        if head is None:
            head = db.head_cache = journal.head_row(db.conn)
        t = self.now()
        return max(t, head[2])

    def emit(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        recorded_at: int,
        expected_version: int | None = None,
        event_ids: Sequence[str | None] | None = None,
        correlation_id: str | None = None,
        meta: dict[str, Any] | None = None,
        meta_text: str | None = None,
        where: str = "append",
    ) -> Appended:
        """Append and apply every inline projection; call inside ``db.write()``."""
        db = self.db
        conn = db.conn
        head = db.head_cache
        appended = journal.append(
            conn,
            stream,
            events,
            recorded_at=recorded_at,
            expected_version=expected_version,
            event_ids=event_ids,
            correlation_id=correlation_id,
            meta=meta,
            where=where,
            known_head=None if head is None else (head[0], head[1]),
            meta_text=meta_text,
        )
        if not appended.replayed:
            last = appended.records[-1]
            db.head_cache = (last.position, last.hash, recorded_at)
            db.appended = True
            # projection_positions moves once, just before COMMIT (Database.before_commit).
            self.projector.apply(db.apply_cursor(), appended.records)
        return appended

    @contextmanager
    def folded(
        self, module: ModuleType, stream: str, until: int, *, records: Iterable[Recorded] | None = None
    ) -> Iterator[apsw.Connection]:
        """A private in-memory copy of ``module``'s tables holding only
        ``stream`` (or the given ``records``) folded up to position ``until``:
        how one thing looked right after an event (the answer to a repeated
        command_id)."""
        mem = memory_connection()
        try:
            mem.execute(self.projector.ddl(module))
            for r in journal.read(self.db.conn, stream=stream, until=until) if records is None else records:
                module.apply(mem, r, r.event)
            yield mem
        finally:
            mem.close()

    def command(self, name: str, command_id: str | None, args: dict[str, Any]) -> Command:
        """One command in one write transaction (a savepoint when nested):
        ``with ctx.command(...) as cmd:``."""
        check_optional_text(name, "command_id", command_id)
        return Command(self, name, command_id, args)


class Command:
    """A command in flight: its time, its events so far, and — when a
    ``command_id`` was used before — the events it appended then. A context
    manager: the write transaction (or savepoint) spans the ``with`` block."""

    def __init__(self, ctx: Context, name: str, command_id: str | None, args: dict[str, Any]) -> None:
        self.ctx = ctx
        self.name = name
        self.command_id = command_id
        self._args = args
        self.now = 0  # set when the transaction starts
        self._meta_text = ""
        self.records: list[Recorded] = []
        self.previous: list[Recorded] | None = None
        # Which of a command's answers that change nothing it gave (recorded
        # with the command id, so that a retry gives the same one).
        self.outcome: str | None = None
        self._meta: dict[str, Any] = {"command": name}
        self._write = ctx.db.write(name)

    def __enter__(self) -> Command:
        self._write.__enter__()
        try:
            self._start()
        except BaseException as e:
            self._write.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None and self.command_id is not None and self.previous is None and not self.records:
            # It changed nothing: record that, so the id stays bound to it.
            try:
                self.emit(f"command:{self.command_id}", [CommandRecorded(command=self.name, outcome=self.outcome)])
            except BaseException as e:
                self._write.__exit__(type(e), e, e.__traceback__)
                raise
        self._write.__exit__(exc_type, exc, tb)

    @property
    def noop(self) -> bool:
        """The first run of this command id changed nothing (see CommandRecorded)."""
        return self.previous is not None and isinstance(self.previous[-1].event, CommandRecorded)

    def _start(self) -> None:
        ctx, name, command_id, args = self.ctx, self.name, self.command_id, self._args
        self.now = ctx.stamp()
        if command_id is not None:
            digest = hashlib.sha256(codec.canonical_json(args)).hexdigest()[:32]
            self._meta.update(command_id=command_id, args=digest)
            found = journal.find_command(ctx.db.conn, command_id)
            if found:
                meta = found[0].meta or {}
                if meta.get("command") != name or meta.get("args") != digest:
                    raise IdempotencyConflict(
                        f"{name} refused: command_id {command_id!r} was already used at position "
                        f"{found[0].position} by {meta.get('command')} with other arguments; "
                        "a command id names one command forever"
                    )
                self.previous = found
        self._meta_text = codec.dump_json(self._meta)

    def emit(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int | None = None,
        correlation_id: str | None = None,
    ) -> list[Recorded]:
        ids = None
        if self.command_id is not None:
            n = len(self.records)
            ids = [journal.command_event_id(self.command_id, n + i) for i in range(len(events))]
        appended = self.ctx.emit(
            stream,
            events,
            recorded_at=self.now,
            expected_version=expected_version,
            event_ids=ids,
            correlation_id=correlation_id,
            meta=self._meta,
            meta_text=self._meta_text,
            where=self.name,
        )
        self.records.extend(appended.records)
        return appended.records
