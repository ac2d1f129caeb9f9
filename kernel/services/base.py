"""What every service shares: the storage a command writes through (the
clock, appending with inline projections) and the cursors of list queries.
Commands themselves run through :mod:`eventkernel.services.runner`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eventkernel import journal
from eventkernel.clock import Clock
from eventkernel.codec import Event
from eventkernel.connection import Database
from eventkernel.errors import JournalError, NotFound
from eventkernel.journal import Appended
from eventkernel.projector import Projector
from eventkernel.secrets import Keyring
from eventkernel.validate import MAX_TIME_MS

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

    def __init__(self, db: Database, projector: Projector, clock: Clock, keyring: Keyring | None = None) -> None:
        self.db = db
        self.projector = projector
        self.clock = clock
        self.keyring = keyring  # the secret keys of configuration secrets (None: none given)
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
        if not db.appended:  # the transaction's first append: first what other processes appended
            if head is None:
                head = db.head_cache = journal.head_row(conn)
            if db.committed_version != (conn, conn.data_version()):  # (else no one wrote since our last commit)
                self.projector.overtake(conn, head[0])
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
            # projection_positions is set, if at all, once just before COMMIT (Database.before_commit).
            self.projector.apply(db.apply_cursor(), appended.records)
        return appended
