"""Reading the journal, and views of the past: ``k.at(position)``."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import apsw

from eventkernel import journal, snapshots
from eventkernel.backup import fsync, link_new
from eventkernel.clock import Clock
from eventkernel.connection import Database, translating
from eventkernel.errors import InvalidArgument, JournalError
from eventkernel.journal import LogEntry, Recorded
from eventkernel.projector import Progress, Projector
from eventkernel.registry import Services
from eventkernel.secrets import Keyring
from eventkernel.services.base import Context
from eventkernel.validate import check_int, check_optional_text, check_text

_T = TypeVar("_T")

_PAGE = 1000


def type_names(where: str, types: object) -> tuple[str, ...]:
    """A type filter: one name, or a list or tuple of names (None or empty: all)."""
    if types is None:
        return ()
    if isinstance(types, str):
        types = (types,)
    if not isinstance(types, list | tuple | frozenset | set):
        raise InvalidArgument(f"{where} refused: types must be a list of event type names, got {types!r:.60}")
    for t in types:
        check_text(where, "types[]", t)
    return tuple(types)


class JournalReader:
    """The journal's read surface, whatever the engine: ``head``, ``read``,
    ``log`` and ``stream_version``, each page of rows one statement through
    ``_statement`` (an engine's connection for this thread)."""

    def _statement(self, doing: str) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self, doing: str, fn: Callable[[Any], _T]) -> _T:
        """``fn`` of the connection ``_statement`` gives: one read (which an
        engine may repeat on a new connection when the last one was dropped)."""
        with self._statement(doing) as conn:
            return fn(conn)

    @property
    def head(self) -> int:
        """The position of the last committed event (this thread's own
        transaction included); 0 when the journal is empty."""
        return self._read("reading the head", lambda conn: journal.head(conn)[0])

    def read(
        self,
        stream: str | None = None,
        after: int = 0,
        limit: int | None = None,
        types: Sequence[str] = (),
        correlation_id: str | None = None,
    ) -> Iterator[Recorded]:
        """Events in position order: of one stream, after a position, of some
        types, of one correlation id. Lazily fetched in pages."""
        where = "read"
        check_optional_text(where, "stream", stream, max_len=journal.MAX_STREAM_LEN)
        check_int(where, "after", after, minimum=0)
        if limit is not None:
            check_int(where, "limit", limit, minimum=0)
        types = type_names(where, types)
        check_optional_text(where, "correlation_id", correlation_id)
        for row in self._pages(where, after, limit, stream=stream, types=types, correlation_id=correlation_id):
            yield journal.record_from_row(row)

    def log(
        self,
        *,
        stream: str | None = None,
        stream_prefix: str | None = None,
        types: Sequence[str] = (),
        correlation_id: str | None = None,
        after: int = 0,
        before: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> Iterator[LogEntry]:
        """Journal rows with their JSON decoded, for any event type (known to
        this process or not): what debugging tools show. ``before`` is an
        exclusive position bound, ``since_ms``/``until_ms`` inclusive times."""
        where = "log"
        check_optional_text(where, "stream", stream, max_len=journal.MAX_STREAM_LEN)
        check_optional_text(where, "stream_prefix", stream_prefix, max_len=journal.MAX_STREAM_LEN)
        check_optional_text(where, "correlation_id", correlation_id)
        check_int(where, "after", after, minimum=0)
        for name, value in (("before", before), ("since_ms", since_ms), ("until_ms", until_ms), ("limit", limit)):
            if value is not None:
                check_int(where, name, value, minimum=0)
        rows = self._pages(
            where, after, limit, stream=stream, stream_prefix=stream_prefix, types=type_names(where, types),
            correlation_id=correlation_id, until=None if before is None else before - 1, since_ms=since_ms,
            until_ms=until_ms,
        )
        for row in rows:
            yield journal.entry_from_row(row)

    def _pages(self, where: str, after: int, limit: int | None, **filters: Any) -> Iterator[tuple[Any, ...]]:
        """Journal rows a page at a time, each page one statement through the
        connection of whichever thread is iterating (an iterator may move
        between threads), none holding a read transaction open between pages."""
        remaining = limit
        while remaining is None or remaining > 0:
            n = _PAGE if remaining is None else min(_PAGE, remaining)

            def page(conn: Any, after: int = after, n: int = n) -> list[tuple[Any, ...]]:
                return list(journal.read_rows(conn, after=after, limit=n, page=n, **filters))

            rows = self._read(where, page)
            yield from rows
            if len(rows) < n:
                return
            after = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_text("stream_version", "stream", stream, max_len=journal.MAX_STREAM_LEN)
        return self._read("reading a stream version", lambda conn: journal.stream_version(conn, stream))


class Reader(JournalReader, Services):
    """What the live kernel and a view of the past both answer: every
    domain's service (the registry's :class:`Services`) and the journal."""

    _db: Database
    _projector: Projector

    def _statement(self, doing: str) -> AbstractContextManager[Any]:
        return self._db.statement(doing)

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """Make every read of this thread inside the block see one snapshot
        (one read transaction): reads that must agree with each other, such
        as a session and then its events. Inside this thread's transaction,
        that transaction's view. Commands of other threads are not held up."""
        with self._db.read("reading"):
            yield self

    def _fresh(self, doing: str) -> None:
        """Before a read of projection tables that must agree with the
        journal: nothing here (a view of the past is built whole)."""

    def table(self, name: str) -> tuple[list[str], list[tuple[object, ...]]]:
        """(columns, rows) of one projection table, by primary key. On the
        live kernel an application projection first folds what other
        processes appended without it (ProjectionFailed or JournalError
        when it cannot, as before a command); on PostgreSQL the replica
        first folds what the server holds (see ``Kernel.catch_up``)."""
        known = {t for names in self._projector.tables.values() for t in names}
        if name not in known:
            raise InvalidArgument(f"table refused: {name!r} is not a projection table; known: {', '.join(sorted(known))}")
        self._fresh(f"reading {name}")
        with self._db.read(f"reading {name}") as conn:  # a name from a projection's DDL
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
            return columns, conn.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()

    def table_names(self) -> list[str]:
        """The names of every projection table, in projection order."""
        return [t for names in self._projector.tables.values() for t in names]



class KernelView(Reader):
    """Every projection as it was when the journal's head was ``position``:
    the same read methods as the live kernel; commands raise ReadOnly.
    A context manager; built in a private in-memory database from the
    nearest snapshot at or before ``position`` and the events after it (or
    by replaying the journal from position 1 when there is none)."""

    def __init__(self, source: Database, projector: Projector, clock: Clock, position: int,
                 progress: Progress | None = None, keyring: Keyring | None = None) -> None:
        mem, upto = snapshots.build(source, projector, position, progress)
        try:
            with translating(f"opening a view as of position {upto}"):
                _bounded_journal(source, mem, upto)
        except BaseException:
            mem.close()
            raise
        self.position = upto
        self._projector = projector
        self._db = Database.adopt(mem, read_only=f"this is a read-only view of the journal as of position {upto}")
        self._attach(Context(self._db, projector, clock, keyring))

    def save(self, path: str) -> None:
        """Write every projection table as of this position into a new,
        standalone SQLite file (for analytics tools). Refuses an existing
        file. The file is written under a temporary name and appears under
        ``path`` only once complete and synced, so an interrupted save
        leaves no half file."""
        check_text("save", "path", path, max_len=4096)
        path = os.path.abspath(path)
        if os.path.lexists(path):
            raise InvalidArgument(f"save refused: {path!r} already exists")
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise InvalidArgument(f"save refused: the directory {directory!r} does not exist")
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            with translating(f"saving the view to {path!r}"):
                self._db.conn.execute("VACUUM main INTO ?", (tmp,))
            try:
                fsync(tmp)
                link_new("save", tmp, path)
                fsync(directory)
            except OSError as e:
                raise JournalError(f"saving the view to {path!r} failed: {e}") from e
        finally:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self._db.conn.close()

    def __enter__(self) -> KernelView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KernelView as of position {self.position}>"


def _bounded_journal(source: Database, mem: apsw.Connection, upto: int) -> None:
    """Give ``mem`` a ``journal`` holding exactly positions 1..upto: the file
    attached read-only behind a view, or, for an in-memory kernel, a copy."""
    if source.in_memory:
        row = source.conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'journal'").fetchone()
        assert row is not None  # the journal table exists once the kernel is open
        ddl = str(row[0])
        mem.execute(ddl.replace("CREATE TABLE journal", "CREATE TEMP TABLE journal", 1))
        mem.executemany(
            f"INSERT INTO temp.journal VALUES ({', '.join('?' * 11)})",
            journal.read_rows(source.conn, until=upto, page=10_000),
        )
        return
    # Through the file's own VFS, not that of the view's database (a snapshot's pages).
    vfs = source.vfs if source.vfs is not None else apsw.vfs_names()[0]
    uri = "file:" + quote(source.path) + "?mode=ro" + ("&immutable=1" if source.immutable else "") \
        + "&vfs=" + quote(vfs)
    mem.execute("ATTACH ? AS journal_file", (uri,))
    mem.execute(f"CREATE TEMP VIEW journal AS SELECT * FROM journal_file.journal WHERE position <= {int(upto)}")
    if mem.execute("SELECT 1 FROM journal_file.sqlite_schema WHERE name = 'journal_base'").fetchone():
        mem.execute("CREATE TEMP VIEW base_payloads AS SELECT * FROM journal_file.base_payloads")
        mem.execute("CREATE TEMP VIEW journal_base AS SELECT * FROM journal_file.journal_base")
