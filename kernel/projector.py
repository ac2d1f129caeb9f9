"""The projection engine: inline application inside the append transaction,
catch-up on open, rebuild through a private in-memory database swapped in
one transaction, and row-for-row comparison of live tables with a rebuild.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property, lru_cache
from typing import Any, cast

import apsw
import msgspec

from eventkernel import codec, journal, migrations
from eventkernel.codec import Event
from eventkernel.connection import Database, SharedMemory, memory_connection, translating
from eventkernel.errors import CommandRejected, InvalidArgument, JournalError, ProjectionFailed
from eventkernel.journal import Recorded
from eventkernel.projections import rows as _rows
from eventkernel.projections.rows import Inserter, Target, Writer

log = logging.getLogger("eventkernel")

Projection = Any
"""A projection: a module or object with ``NAME``, ``VERSION``, ``HANDLES``
(event type names), ``apply(conn, recorded, event)`` and, unless it is a
built-in one whose SQL is in schema/projections/, ``DDL``."""

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` during long work."""

_BATCH = 10_000


_POSITIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS projection_positions ("
    " name TEXT PRIMARY KEY, version INTEGER NOT NULL, position INTEGER NOT NULL) STRICT"
)
AT_HEAD = -1
"""The position a projection records when it has applied every event of the
journal, whatever its head (format 7): the commits of a process that applies
every projection of the file then write nothing to ``projection_positions``.
A projection is recorded at a number only while it lags: when a process
without it appends (:meth:`Projector.overtake`, :meth:`Projector.hold`), or
while it is made or caught up."""


REPORT_ROWS = 4096
"""How often (in journal rows, a power of two) a fold reports its progress."""

FLUSH_ROWS = 16 * 4096
"""How many journal rows a build folds between the writes of the folds'
rows that can be written before the end (a multiple of ``REPORT_ROWS``)."""


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


ASIDE_EVENTS = 100_000
"""The fewest journal rows a build hands to a second thread by default:
under it, starting the thread and copying its tables cost about what it
saves (on the benchmark's journal, 20,000 events: 0.12 s against 0.116
alone; 100,000: 0.58 against 0.60; 400,000: 2.28 against 2.45)."""

_JSONB_EACH = tuple(int(n) for n in apsw.sqlite_lib_version().split(".")[:2]) >= (3, 45)
"""Whether this SQLite has ``jsonb_each`` (3.45): what :class:`_Aside` inserts with."""


class _Aside:
    """A build's second thread: it writes the rows of the folds set aside
    (a ``Fold`` with ``ASIDE``, its tables of TEXT and INTEGER columns
    only) into a database of its own while the building thread folds the
    journal and writes the other folds' rows; the tables are then copied
    into the build (SQLite's transfer of stored records). Batches wait in
    an unbounded queue: at worst it holds what the folds would have held
    had they kept their rows.

    Rows cross as JSON text, and each call's rows are inserted by one
    statement (``INSERT … SELECT value->>0, … FROM jsonb_each(?)``): SQLite
    parses and inserts them without Python, so this thread runs without
    the GIL while the other folds. JSON keeps what these columns hold
    exactly: text (any character, NUL included), 64-bit integers, NULL.
    Measured on the 1,000,027-event benchmark journal with two cores: the
    checkpoints, memory versions and sessions written beside the fold,
    a build in 5.82–5.95 s instead of 6.24–6.31 on one thread."""

    SCHEMA = "ek_aside"

    def __init__(self, upto: int) -> None:
        self.upto = upto  # the build's last position: where a refusal is reported
        self.db = SharedMemory()
        self.db.pragma("journal_mode", "off")  # a private, throwaway database
        self.db.pragma("synchronous", "OFF")
        self.tables: dict[str, str] = {}  # table → the projection it is of
        self.jobs: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self.failed: tuple[str, BaseException] | None = None
        self.stopping = False
        self.thread: threading.Thread | None = None

    def take(self, name: str, ddl: str) -> bool:
        """Create projection ``name``'s tables here, if every column is TEXT
        or INTEGER (what JSON carries exactly); False: leave them to the
        building thread."""
        self.db.execute("SAVEPOINT aside")
        self.db.execute(ddl)
        added = [(kind, t) for kind, t in self.db.execute("SELECT type, name FROM sqlite_schema WHERE type != 'index'")
                 if t not in self.tables]
        if all(kind == "table" and row[2] in ("TEXT", "INTEGER") for kind, t in added
               for row in self.db.execute(f'PRAGMA table_info("{t}")')):
            self.db.execute("RELEASE aside")
            self.tables.update((t, name) for _, t in added)
            return True
        self.db.execute("ROLLBACK TO aside")
        self.db.execute("RELEASE aside")
        return False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="eventkernel-build", daemon=True)
        self.thread.start()

    def writer(self, name: str) -> Writer:
        """Where projection ``name``'s fold writes: rows handed to this thread."""
        return _AsideWriter(self, name)

    def put(self, name: str, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.failed is not None:
            raise _ApplyFailed(self.failed[0], self.upto) from self.failed[1]
        values = ", ".join(f"value->>{i}" for i in range(columns.count(",") + 1))
        sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM jsonb_each(?)"
        chunk: list[Sequence[Any]] = []
        for row in rows:  # in chunks: the JSON text and SQLite's parse of it stay small
            chunk.append(row)
            if len(chunk) == _CHUNK:
                self.jobs.put((name, sql, _encode(chunk).decode()))
                chunk = []
        if chunk:
            self.jobs.put((name, sql, _encode(chunk).decode()))

    def drop(self, name: str, table: str, column: str, keys: Iterable[Any]) -> None:
        if self.failed is not None:
            raise _ApplyFailed(self.failed[0], self.upto) from self.failed[1]
        self.jobs.put((name, f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))",
                       _encode(list(keys)).decode()))

    def _run(self) -> None:
        # Each call's rows in one statement, committed alone (no journal to write: a failure fails the build).
        while (job := self.jobs.get()) is not None:
            if self.failed is None and not self.stopping:
                try:
                    self.db.execute(job[1], (job[2],))
                except BaseException as e:  # noqa: BLE001 -- whatever it is, the building thread reports it
                    self.failed = (job[0], e)

    def finish(self) -> None:
        """Wait for every row to be written; a projection whose rows were
        refused is reported as failing at the build's last position (a
        fold's own writes are, too)."""
        self._stop()
        if self.failed is not None:
            raise _ApplyFailed(self.failed[0], self.upto) from self.failed[1]

    def _stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None

    def copy_into(self, mem: apsw.Connection) -> None:
        """Copy every table into ``mem`` (its twins there empty), outside a
        transaction of ``mem``: attached by name, or row by row when it
        cannot be (logged)."""
        try:
            mem.execute(f"ATTACH ? AS {self.SCHEMA}", (self.db.uri,))
        except apsw.CantOpenError:
            log.warning("attaching a build's second database by name failed; copying its rows", exc_info=True)
            with mem:
                for table in self.tables:
                    marks = ", ".join("?" * len(self.db.execute(f'PRAGMA table_info("{table}")').fetchall()))
                    mem.executemany(f'INSERT INTO "{table}" VALUES ({marks})',
                                    self.db.execute(f'SELECT * FROM "{table}"'))
            return
        try:
            with mem:
                for table in self.tables:
                    # Both tables made by the same DDL, the target empty: SQLite copies the stored records.
                    mem.execute(f'INSERT INTO main."{table}" SELECT * FROM {self.SCHEMA}."{table}"')
        finally:
            mem.execute(f"DETACH {self.SCHEMA}")

    def close(self) -> None:
        self.stopping = True
        self._stop()
        self.db.close()


class _AsideWriter:
    """A fold's :class:`Writer` on a build's second thread."""

    __slots__ = ("aside", "name")

    def __init__(self, aside: _Aside, name: str) -> None:
        self.aside = aside
        self.name = name

    @property
    def held(self) -> int:
        """Rows handed over a few thousand at a time: this thread writes
        them while the building thread folds on."""
        return min(_rows.HELD_ROWS, 4096)

    def insert(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        self.aside.put(self.name, table, columns, rows)

    def delete(self, table: str, column: str, keys: Iterable[Any]) -> None:
        self.aside.drop(self.name, table, column, keys)


_encode = msgspec.json.Encoder().encode
_CHUNK = 16_384


class _ApplyFailed(Exception):
    """A projection's tables refused an event while folding the journal (or
    the rows its fold made: ``event_type`` None, at the build's last
    position). Caught where a projection can be rebuilt instead; a build
    reports it as :class:`ProjectionFailed` (:func:`_reported`)."""

    def __init__(self, name: str, position: int, event_type: str | None = None) -> None:
        super().__init__(f"projection {name} failed to apply the event at position {position}")
        self.name = name
        self.position = position
        self.event_type = event_type


@contextmanager
def _reported() -> Iterator[None]:
    """A build's or a rebuild's :class:`_ApplyFailed` as the KernelError a
    caller can catch: a projection whose tables refuse what the journal
    holds (e.g. a new version's stricter DDL)."""
    try:
        yield
    except _ApplyFailed as e:
        cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
        raise ProjectionFailed(e.name, e.event_type or "the rows its fold made", e.position, cause) from e


class TableDiff(msgspec.Struct, frozen=True, kw_only=True):
    """How one projection table changed between two positions."""

    table: str
    columns: list[str]
    added: list[tuple[Any, ...]]
    removed: list[tuple[Any, ...]]
    changed: list[tuple[tuple[Any, ...], tuple[Any, ...]]]  # (before, after)


def _keyed(conn: apsw.Connection, table: str) -> tuple[list[str], list[str], dict[tuple[Any, ...], tuple[Any, ...]]]:
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    columns = [str(row[1]) for row in info]
    pk = [str(row[1]) for row in sorted(info, key=lambda r: cast(int, r[5])) if row[5]] or columns
    idx = [columns.index(c) for c in pk]
    rows = {tuple(r[i] for i in idx): tuple(r) for r in conn.execute(f'SELECT * FROM "{table}"')}
    return columns, pk, rows


class _Shadow:
    """The rebuilt tables made visible to the live connection, for the swap.

    Outside a transaction, the in-memory build is ATTACHed to the live
    connection, so each table is copied by one ``INSERT … SELECT`` inside
    SQLite (several times faster than moving rows through Python): a
    :class:`SharedMemory` build by its name, where it is (a build of a
    1,000,027-event journal holds 96 MiB: copying it out and in again took
    0.35 s and as much memory twice), any other as a copy. Inside a
    caller's transaction ATTACH is not allowed, so rows are moved with
    ``executemany`` instead.
    """

    SCHEMA = "ek_rebuilt"

    def __init__(self, db: Database, mem: apsw.Connection) -> None:
        self.db = db
        self.mem = mem
        self.attached = False
        self.by_name = False  # attached where it is: read through the live connection only

    def __enter__(self) -> _Shadow:
        if not self.db.in_transaction:
            with translating("attaching the rebuilt projections"):
                conn = self.db._fresh()  # (the connection the transaction after it will use)
                if any(row[1] == self.SCHEMA for row in conn.execute("PRAGMA database_list")):
                    conn.execute(f"DETACH {self.SCHEMA}")  # left by a rebuild the disk interrupted
                uri = self.mem.uri if isinstance(self.mem, SharedMemory) else None
                try:
                    conn.execute(f"ATTACH ? AS {self.SCHEMA}", (uri or ":memory:",))
                except apsw.CantOpenError:
                    if uri is None:
                        raise
                    log.warning("attaching the rebuilt projections by name failed; copying them", exc_info=True)
                    uri = None
                    conn.execute(f"ATTACH ':memory:' AS {self.SCHEMA}")
                self.attached = True
                try:
                    self.by_name = uri is not None and self._tables(conn, f"{self.SCHEMA}.") == self._tables(self.mem, "")
                    if not self.by_name:
                        conn.deserialize(self.SCHEMA, self.mem.serialize("main"))
                except BaseException:
                    self.__exit__()
                    raise
        return self

    @staticmethod
    def _tables(conn: apsw.Connection, schema: str) -> list[tuple[Any, ...]]:
        """What the schema holds (the check that a name reached the build)."""
        return conn.execute(f"SELECT type, name, sql FROM {schema}sqlite_schema ORDER BY name").fetchall()

    def copy(self, conn: apsw.Connection, table: str, *, virtual: bool = False) -> None:
        """Copy one table. A virtual table (FTS5 …) is copied through itself,
        rowids included, and rebuilds its own shadow tables; from a copy it
        is read from the private build, as a virtual table need not open in
        a copy attached. A build attached by name is read through ``conn``
        alone: ``conn``'s transaction holds a lock on it that a read by
        ``mem`` would wait for. Table names come from the projections' DDL,
        not from input."""
        inside = self.by_name or (self.attached and not virtual)  # copied by SQLite, from the attached build
        info = (conn.execute(f'PRAGMA {self.SCHEMA}.table_info("{table}")') if inside else
                self.mem.execute(f'PRAGMA table_info("{table}")')).fetchall()
        columns = [f'"{row[1]}"' for row in info]
        if virtual:
            columns.insert(0, "rowid")
        listed = ", ".join(columns)
        if inside:
            if not virtual and conn.execute(f'PRAGMA main.table_info("{table}")').fetchall() == info:
                # The same columns, types and constraints in the same order, into an empty table: SQLite
                # copies each row's record and key as they are, without decoding them (its "transfer
                # optimization", which a column list rules out): a third of the time on a large build.
                conn.execute(f'INSERT INTO main."{table}" SELECT * FROM {self.SCHEMA}."{table}"')
            else:
                conn.execute(f'INSERT INTO main."{table}" ({listed}) SELECT {listed} FROM {self.SCHEMA}."{table}"')
            return
        conn.executemany(
            f'INSERT INTO main."{table}" ({listed}) VALUES ({", ".join("?" * len(columns))})',
            self.mem.execute(f'SELECT {listed} FROM "{table}"'),
        )

    def __exit__(self, *exc: object) -> None:
        # Never raises: an error here must not hide the one that ended the
        # block; a copy left attached is detached by the next rebuild.
        if self.attached:
            try:
                self.db.conn.execute(f"DETACH {self.SCHEMA}")
            except apsw.Error:
                log.warning("detaching %s failed; the next rebuild will", self.SCHEMA, exc_info=True)


@lru_cache(maxsize=512)
def _learn(ddl: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], frozenset[str], str, str,
                              tuple[tuple[str, tuple[str, ...]], ...]]:
    """What running a projection's DDL makes (once per DDL and process: every
    Kernel of the process shares it): (type, name) of every schema object
    (tables first; the shadow tables of a virtual table left out: they
    belong to it), those shadow tables, which tables are virtual, the DDL
    split into the tables (with triggers and views) and the indexes,
    statement by statement as SQLite recorded them, and each table's columns."""
    mem = memory_connection()
    try:
        mem.execute(ddl)
        kinds = {str(r[1]): str(r[2]) for r in mem.execute("PRAGMA main.table_list")}
        rows = [(str(t), str(n), sql) for t, n, sql in mem.execute(
            "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY rowid"
        ) if kinds.get(str(n)) != "shadow"]
        objects = tuple(sorted(((t, n) for t, n, _ in rows), key=lambda o: (o[0] != "table", o[1])))
        shadows = tuple(sorted(n for n, kind in kinds.items() if kind == "shadow"))
        tables = ";\n".join(str(sql) for t, _, sql in rows if t != "index" and sql is not None)
        indexes = ";\n".join(str(sql) for t, _, sql in rows if t == "index" and sql is not None)
        columns = tuple((n, tuple(str(r[1]) for r in mem.execute("SELECT * FROM pragma_table_info(?)", (n,))))
                        for t, n in objects if t == "table")
        return (objects, shadows, frozenset(n for n, kind in kinds.items() if kind == "virtual"), tables, indexes,
                columns)
    finally:
        mem.close()


class Projector:
    """Keeps every registered projection equal to a fold of the journal."""

    def __init__(self, modules: Sequence[Projection], *, user: Sequence[Projection] = ()) -> None:
        """``modules``: every projection; ``user``: those of them that are the
        application's (their ``apply`` may refuse an event)."""
        self.modules = tuple(modules)
        # The event types an application projection folds.
        self.user_types = frozenset(t for m in user for t in m.HANDLES)
        self.user_names = frozenset(m.NAME for m in user)
        self.user = tuple(user)
        self.by_name = {m.NAME: m for m in self.modules}
        handlers: dict[str, list[Projection]] = {}
        for m in self.modules:
            for type_name in m.HANDLES:
                handlers.setdefault(type_name, []).append(m)
        self.handlers = {k: tuple(v) for k, v in handlers.items()}
        # The tables dropped and made afresh since a replica last cleared it
        # (a rebuild): their changes are the whole table (eventkernel.pgtables).
        self.recreated: set[str] = set()

    # --- schema -----------------------------------------------------------------

    @staticmethod
    def ddl(module: Projection) -> str:
        """A projection's SQL: its ``DDL``, or for a built-in one its file in schema/projections/."""
        ddl = getattr(module, "DDL", None)
        return ddl if isinstance(ddl, str) else migrations.sql(f"projections/{module.NAME}.sql")

    def ddl_split(self, module: Projection) -> tuple[str, str]:
        """(tables, indexes) of a projection's DDL. A rebuild creates the
        secondary indexes after the fold: one sort each instead of an update
        per row. ``apply`` looks rows up by primary key, so the result is
        the same."""
        return self._schema[module.NAME][3], self._schema[module.NAME][4]

    @cached_property
    def _schema(self) -> dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...], frozenset[str], str, str]]:
        """Per projection, learnt by running its DDL: (type, name) of every
        schema object it creates (tables first; the shadow tables of a
        virtual table left out: they belong to it), those shadow tables,
        which of its tables are virtual, and its DDL split into the tables
        (with triggers and views) and the indexes, statement by statement as
        SQLite recorded them."""
        return {m.NAME: _learn(self.ddl(m))[:5] for m in self.modules}

    @cached_property
    def objects(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """(type, name) of every schema object each projection's DDL creates, tables first."""
        return {name: schema[0] for name, schema in self._schema.items()}

    @cached_property
    def tables(self) -> dict[str, tuple[str, ...]]:
        """The tables each projection's DDL creates (virtual ones included, their shadows not)."""
        return {name: tuple(n for t, n in schema[0] if t == "table") for name, schema in self._schema.items()}

    @cached_property
    def virtual(self) -> frozenset[str]:
        """The virtual tables among them."""
        return frozenset(t for schema in self._schema.values() for t in schema[2])

    def select(self, names: Iterable[str] | None) -> tuple[Projection, ...]:
        if names is None:
            return self.modules
        chosen = []
        for name in names:
            if name not in self.by_name:
                raise InvalidArgument(
                    f"rebuild refused: no projection named {name!r}; known: {', '.join(sorted(self.by_name))}"
                )
            chosen.append(self.by_name[name])
        return tuple(chosen)

    def positions(self, conn: apsw.Connection) -> dict[str, tuple[int, int]]:
        """(version, position) of every projection the file holds, one at the
        head given the head's position (call inside a transaction)."""
        rows = [(str(name), int(v), int(p))
                for name, v, p in conn.execute("SELECT name, version, position FROM projection_positions")]
        head = journal.head(conn)[0] if any(p == AT_HEAD for _, _, p in rows) else 0
        return {name: (v, head if p == AT_HEAD else p) for name, v, p in rows}

    def hold(self, conn: apsw.Connection, head: int, names: Iterable[str] | None = None) -> None:
        """Before events are appended that ``names`` (default: every
        projection of the file) will not fold as they come: record the head
        they have reached, ``head``, for those recorded at the head."""
        if names is None:
            conn.execute("UPDATE projection_positions SET position = ? WHERE position = ?", (head, AT_HEAD))
            return
        chosen = list(names)
        if chosen:
            conn.execute(f"UPDATE projection_positions SET position = ? WHERE position = ? "
                         f"AND name IN ({', '.join('?' * len(chosen))})", (head, AT_HEAD, *chosen))

    def _recreate(self, conn: apsw.Connection, module: Projection, position: int, *, indexes: bool = True) -> None:
        """Drop whatever holds the names of the projection's tables, indexes
        and triggers (damaged or not), create them afresh at ``position``
        (``indexes=False``: the secondary indexes are left for the caller to
        create after filling the tables)."""
        conn.execute(_POSITIONS_DDL)
        objects, shadows = self._schema[module.NAME][:2]
        # A virtual table's shadow tables go with it; any left alone are dropped after.
        for name in (*(n for _, n in objects), *shadows):
            row = conn.execute("SELECT type FROM sqlite_schema WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] in ("table", "view", "index", "trigger"):
                # The name comes from the projection's DDL, never from input.
                conn.execute(f'DROP {str(row[0]).upper()} IF EXISTS "{name}"')
        conn.execute(self.ddl(module) if indexes else self.ddl_split(module)[0])
        self.recreated.update(self.tables[module.NAME])
        conn.execute(
            "INSERT OR REPLACE INTO projection_positions (name, version, position) VALUES (?, ?, ?)",
            (module.NAME, module.VERSION, position),
        )

    def setup(self, db: Database, progress: Progress | None = None) -> None:
        """Bring every projection up to the journal head on open: create the
        missing ones, rebuild those whose VERSION changed or that are damaged
        (a table missing, a recorded position past the head or behind rows
        it already holds), and apply what the others have not seen. Never
        applies an event twice: when in doubt, it rebuilds."""
        with db.read("opening the projections") as conn:
            head = journal.head(conn)[0]
            current = {m.NAME: (m.VERSION, head) for m in self.modules}
            if conn.table_exists("main", "projection_positions") and {
                k: v for k, v in self.positions(conn).items() if k in current
            } == current and all(self._sound(conn, m) for m in self.modules):
                return  # nothing to do: no write lock taken
        rebuild = []
        with db.write("opening the projections", shared=False) as conn:
            conn.execute(_POSITIONS_DDL)
            head = journal.head(conn)[0]
            known = self.positions(conn)
            for m in self.modules:
                present = [t for t in self.tables[m.NAME] if conn.table_exists("main", t)]
                if m.NAME not in known:
                    if present:
                        rebuild.append(m.NAME)  # tables without a position: nothing says how far they got
                    else:
                        self._recreate(conn, m, 0)
                    continue
                version, position = known[m.NAME]
                if version != m.VERSION or position > head or not self._sound(conn, m) \
                        or (position < head and self._ahead_of(conn, m, position)):
                    rebuild.append(m.NAME)
        if rebuild:
            log.info("rebuilding projections %s of %r", ", ".join(rebuild), db.path)
            self.rebuild(db, rebuild, progress)
        self.catch_up(db, progress)

    @cached_property
    def _columns(self) -> dict[str, tuple[str, ...]]:
        """The columns of every projection table, as its DDL makes them."""
        return {table: columns for m in self.modules for table, columns in _learn(self.ddl(m))[5]}

    def _sound(self, conn: apsw.Connection, module: Projection) -> bool:
        """Whether each of the projection's tables exists with its columns."""
        for table in self.tables[module.NAME]:
            have = tuple(str(r[1]) for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            if have != self._columns[table]:
                return False
        return True

    def _ahead_of(self, conn: apsw.Connection, module: Projection, position: int) -> bool:
        """Whether ``module``'s rows record a journal position past ``position``
        (its recorded position is then wrong, and catching up would apply
        events twice)."""
        for table in self.tables[module.NAME]:
            columns = [row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))]
            if "position" in columns:
                row = conn.execute(f'SELECT max(position) FROM "{table}"').fetchone()
                if row is not None and row[0] is not None and (type(row[0]) is not int or row[0] > position):
                    return True
        return False

    # --- applying -----------------------------------------------------------------

    def apply(self, conn: Target, records: Iterable[Recorded]) -> None:
        """Fold freshly appended records into every projection (inline). A
        projection that raises (other than a storage error) refuses the
        command: ProjectionFailed names it, and the command writes nothing."""
        handlers = self.handlers
        for r in records:
            for m in handlers.get(r.type, ()):
                try:
                    m.apply(conn, r, r.event)
                except apsw.Error:
                    raise
                except Exception as e:
                    raise ProjectionFailed(m.NAME, r.type, r.position, e) from e

    def folds_user_events(self, events: Iterable[Event]) -> bool:
        """Whether an application projection folds any of ``events``."""
        user_types = self.user_types
        return bool(user_types) and any(codec.type_name(e) in user_types for e in events)

    def unapplied(self, conn: apsw.Connection, where: str, what: str) -> None:
        """Refuse ``what`` (an erasure, a compaction) when the file holds
        projections this process does not apply (opened without an
        application's projection): it could not make them again, and they
        would keep what it removes or miss what it moves away."""
        self.refuse_others([str(n) for (n,) in conn.execute("SELECT name FROM projection_positions")], where, what,
                           "this file holds")

    def refuse_others(self, names: Iterable[str], where: str, what: str, holder: str,
                      advice: str = "A projection no process uses any more: drop its tables and delete its row "
                                    "from projection_positions") -> None:
        """Refuse ``what`` when ``names`` (projections that ``holder``, e.g.
        "this file holds") include one this process does not apply."""
        others = sorted(n for n in names if n not in self.by_name)
        if others:
            raise CommandRejected(
                f"{where} refused: {holder} projections this process does not apply "
                f"({', '.join(map(repr, others))}: it was opened without them), which it could not make again "
                f"after the {what}; run it from a process that opens the journal with them."
                + (" " + advice if advice else "")
            )

    def overtake(self, conn: apsw.Connection, head: int) -> None:
        """Before a write transaction appends its first event (the journal at
        ``head``): fold into this process's projections the events that
        other processes appended without them (a process opened without an
        application's projection still appends its events), so that applying
        the new events inline, and then :meth:`advance`, skips none. Raises
        ProjectionFailed when a projection cannot fold them (its tables
        refuse an event: ``k.rebuild(name)`` mends it), and JournalError when
        another process rebuilt one at another ``VERSION`` (its code is not
        this process's)."""
        behind = {}
        others = []
        for name, version, position in conn.execute("SELECT name, version, position FROM projection_positions"):
            module = self.by_name.get(name)
            if module is None:
                if position == AT_HEAD:
                    others.append(name)
                continue
            if version != module.VERSION:
                raise JournalError(
                    f"projection {name!r} is at version {version} in the file (another process rebuilt it), but "
                    f"this process applies version {module.VERSION}; reopen the file with the same projections")
            if position != AT_HEAD and position < head:
                behind[name] = position
        # The file's projections this process does not apply stop at this head (their processes fold
        # what follows when they next write).
        self.hold(conn, head, others)
        if not behind:
            return
        modules = [self.by_name[name] for name in behind]
        rows = journal.read_rows(conn, after=min(behind.values()), until=head,
                                 types=sorted({t for m in modules for t in m.HANDLES}),
                                 columns=self.journal_columns(modules))
        # All of it or nothing: a command inside a larger transaction that is refused here wrote nothing.
        conn.execute("SAVEPOINT ek_overtake")
        try:
            self._fold_rows(conn.cursor(), rows, modules, behind)
            conn.execute(
                f"UPDATE projection_positions SET position = ? WHERE name IN ({', '.join('?' * len(behind))})",
                (head, *behind),
            )
        except BaseException as e:
            conn.execute("ROLLBACK TO ek_overtake")
            conn.execute("RELEASE ek_overtake")
            if isinstance(e, _ApplyFailed):
                found = conn.execute("SELECT type FROM journal WHERE position = ?", (e.position,)).fetchone()
                cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
                raise ProjectionFailed(e.name, "?" if found is None else found[0], e.position, cause) from e
            raise
        conn.execute("RELEASE ek_overtake")

    def advance(self, conn: apsw.Connection, position: int) -> None:
        """Just before a COMMIT that appended up to ``position``: record that
        this process's projections are at the head (other processes may
        register projections this one does not apply). Once they are, as
        after every commit of this process, the statement changes no row and
        writes no page."""
        conn.execute(self._advance_sql, (AT_HEAD, AT_HEAD, *self.by_name))

    @cached_property
    def _advance_sql(self) -> str:
        return (f"UPDATE projection_positions SET position = ? WHERE position != ? "
                f"AND name IN ({', '.join('?' * len(self.by_name))})")

    def _fold_rows(
        self,
        target: Target,
        rows: Iterable[tuple[Any, ...]],
        modules: Sequence[Projection],
        after: dict[str, int] | None = None,
        progress: Callable[[int], None] | None = None,
        folds: dict[str, Any] | None = None,
    ) -> int:
        """Apply raw journal rows to ``modules`` on ``target``; a module sees
        only rows past its ``after`` position; a module named in ``folds``
        adds each event to its fold instead (written by the caller). Returns
        the last position."""
        wanted = {m.NAME for m in modules}
        folds = folds or {}
        # Per event type, the wanted modules that handle it, each with its
        # fold or None and the fold's bound ``add_row`` (the hot loop below
        # runs once per event of a rebuild).
        plan = {
            t: ps for t, hs in self.handlers.items()
            if (ps := tuple((m, f, None if f is None else f.add_row) for m in hs if m.NAME in wanted
                            for f in (folds.get(m.NAME),)))
        }
        record_from_row = journal.record_from_row
        mask = REPORT_ROWS - 1
        last = 0
        n = 0
        for row in rows:
            n += 1
            last = row[0]
            targets = plan.get(row[3])
            if targets is not None and row[5] != "null":  # an erased payload folds into nothing
                if after is not None:
                    targets = tuple(p for p in targets if after[p[0].NAME] < last)
                record = None
                for m, fold, add_row in targets:
                    try:
                        if add_row is not None and add_row(row):
                            continue
                        if record is None:
                            record = record_from_row(row)
                            event = record.event
                        if fold is not None:
                            fold.add(record, event)
                        else:
                            m.apply(target, record, event)
                    except apsw.Error as e:
                        raise _ApplyFailed(m.NAME, last, row[3]) from e
                    except Exception as e:
                        raise ProjectionFailed(m.NAME, row[3], last, e) from e
            if progress is not None and not n & mask:
                progress(n)
        return last

    def journal_columns(self, modules: Sequence[Projection] | None = None) -> str:
        """What a fold of ``modules`` (default: all) reads of each journal row:
        the kernel's own projections read no metadata, event id or hash; an
        application's may."""
        chosen = self.modules if modules is None else modules
        return journal.PROJECTED if self.user_names.isdisjoint(m.NAME for m in chosen) else journal.COLUMNS

    def catch_up(self, db: Database, progress: Progress | None = None) -> None:
        """Apply the events each projection has not seen, in batches of
        transactions so the write lock is released now and then. A
        projection whose tables refuse an event (they do not match its
        recorded position) is rebuilt instead."""
        while True:
            failed = None
            with db.write("catching up the projections", shared=False) as conn:
                head = journal.head(conn)[0]
                after = {name: p for name, (_, p) in self.positions(conn).items() if name in self.by_name}
                start = min(after.values(), default=head)
                if start >= head:
                    return
                rows = journal.read_rows(conn, after=start, limit=_BATCH)
                try:
                    with db.write("catching up the projections"):  # a savepoint, undone on a failure
                        last = self._fold_rows(conn.cursor(), rows, self.modules, after)
                except _ApplyFailed as e:
                    failed = e
                else:
                    conn.execute(
                        f"UPDATE projection_positions SET position = ? WHERE position < ? AND position != ? "
                        f"AND name IN ({', '.join('?' * len(self.by_name))})",
                        (last, last, AT_HEAD, *self.by_name),
                    )
                    if progress is not None:
                        progress(last, head)
            if failed is not None:
                log.warning("projection %s cannot catch up in %r (%s); rebuilding it", failed.name, db.path,
                            failed.__cause__)
                self.rebuild(db, [failed.name], progress)

    # --- rebuilding -------------------------------------------------------------------

    @_reported()
    def build_in_memory(
        self,
        db: Database,
        names: Iterable[str] | None = None,
        *,
        until: int | None = None,
        progress: Progress | None = None,
        bulk: bool = True,
        page_size: int | None = None,
        erased: frozenset[int] = frozenset(),
        shared: bool = False,
        second_thread: bool | None = None,
    ) -> tuple[apsw.Connection, int]:
        """Replay the journal up to ``until`` (default: head) into a private
        in-memory database holding the selected projections' tables. A
        built-in projection with a ``Fold`` (the bulk path) folds its rows in
        Python and writes them at once; ``bulk=False`` applies every event
        one by one, as live commands do; ``page_size``: of the database made;
        ``erased``: positions folded as if their payloads were erased already;
        ``shared``: built in a :class:`SharedMemory` (when replayed from
        position 1), which a rebuild's swap reads where it is (a view's
        ``save`` could not: its ``VACUUM INTO`` would write through the same
        in-memory VFS); ``second_thread``: whether folds may be written by a
        second thread (:class:`_Aside`; default: when this process may run
        on more than one core and there are ``ASIDE_EVENTS`` rows or more)."""
        modules = self.select(names)
        from eventkernel import snapshots  # the same layer; imported here, as it imports this module

        with db.read("replaying the journal") as conn:
            base = journal.base(conn)
        if base is not None:
            return snapshots.from_base(db, self, modules, base, until, progress, erased)
        # The kernel's own projections may have a bulk path; an application's apply every event.
        folds = {m.NAME: m.Fold() for m in modules if bulk and m.NAME not in self.user_names and hasattr(m, "Fold")}
        mem = memory_connection(shared=shared)
        if page_size is not None:
            mem.pragma("page_size", page_size)
        # A private, throwaway database: no rollback journal to keep.
        mem.pragma("journal_mode", "off")
        aside: _Aside | None = None
        try:
            with db.read("replaying the journal") as conn:
                head = journal.head(conn)[0]
                upto = head if until is None else min(until, head)
                split = {m.NAME: self.ddl_split(m) for m in modules}
                if second_thread is None:
                    second_thread = _JSONB_EACH and upto >= ASIDE_EVENTS and _cores() > 1
                if second_thread and any(getattr(fold, "ASIDE", False) for fold in folds.values()):
                    try:
                        aside = _Aside(upto)
                    except apsw.Error:  # no memdb VFS in this SQLite: one thread, as before
                        log.warning("a build's second database cannot be made; building on one thread", exc_info=True)
                writers: dict[str, Writer] = {}
                for name, fold in folds.items():
                    if aside is not None and getattr(fold, "ASIDE", False) and aside.take(name, split[name][0]):
                        writers[name] = aside.writer(name)
                    else:
                        writers[name] = Inserter(mem)
                if aside is not None:
                    aside.start()
                mem.execute("BEGIN")
                for tables, _ in split.values():
                    mem.execute(tables)
                report = self._reporter(writers, folds, upto, progress)
                columns = self.journal_columns(modules)
                rows = journal.read_rows(conn, until=upto, columns=columns)  # (pages of 1,000 stay in the CPU's caches)
                if erased:
                    rows = ((*r[:5], journal.ERASED_DATA, *r[6:]) if r[0] in erased else r for r in rows)
                self._fold_rows(mem.cursor(), rows, modules, progress=report, folds=folds)
                # The rows set aside first: the other thread writes them while this one writes the rest.
                for name in sorted(folds, key=lambda name: isinstance(writers[name], Inserter)):
                    try:
                        folds[name].write(writers[name])
                    except apsw.Error as e:
                        raise _ApplyFailed(name, upto) from e
                if aside is not None:
                    aside.finish()
                    mem.execute("COMMIT")  # (no ATTACH inside a transaction)
                    aside.copy_into(mem)
                    aside.close()
                    mem.execute("BEGIN")
                for _, indexes in split.values():
                    mem.execute(indexes)
                mem.execute("COMMIT")
        finally:
            if aside is not None:
                aside.close()
        if progress is not None:
            progress(upto, upto)
        return mem, upto

    @staticmethod
    def _reporter(writers: dict[str, Writer], folds: dict[str, Any], upto: int,
                  progress: Progress | None) -> Callable[[int], None] | None:
        """What a build's fold calls every ``REPORT_ROWS`` rows: the caller's progress,
        and every ``FLUSH_ROWS`` rows the folds that can write what they
        hold so far (rows never changed once folded) do."""
        flushing = [(name, fold.flush, writers[name]) for name, fold in folds.items() if hasattr(fold, "flush")]
        if not flushing:
            return None if progress is None else (lambda n: progress(n, upto))

        def report(n: int) -> None:
            if not n % FLUSH_ROWS:
                for name, flush, out in flushing:
                    try:
                        flush(out)
                    except apsw.Error as e:
                        raise _ApplyFailed(name, upto) from e
            if progress is not None:
                progress(n, upto)

        return report

    @_reported()
    def rebuild(
        self, db: Database, names: Iterable[str] | None = None, progress: Progress | None = None,
        build: Callable[[], tuple[apsw.Connection, int]] | None = None,
    ) -> int:
        """Rebuild projections from the journal: replay into memory, then swap
        the tables in one transaction and apply what was appended meanwhile.
        ``build`` makes the in-memory tables instead of a replay from position
        1 (from a snapshot): every selected projection's tables, as of the
        position it returns. Returns the head position the rebuilt tables reflect."""
        modules = self.select(names)
        if build is None:
            mem, upto = self.build_in_memory(db, [m.NAME for m in modules], progress=progress, shared=True)
        else:
            mem, upto = build()
        try:
            # The write lock from the ATTACH to the DETACH: the writer connection is every thread's, and
            # another thread's command run on it meanwhile failed with the swap (apsw refuses a connection
            # two threads use at once).
            with db.locked("swapping in the rebuilt projections"), _Shadow(db, mem) as shadow, \
                    db.write("swapping in the rebuilt projections", shared=False) as conn:
                for m in modules:
                    # The secondary indexes after the rows: one sort each instead of an update per row.
                    self._recreate(conn, m, upto, indexes=False)
                    for table in self.tables[m.NAME]:
                        shadow.copy(conn, table, virtual=table in self.virtual)
                    conn.execute(self.ddl_split(m)[1])
                head = journal.head(conn)[0]
                if head > upto:
                    self._fold_rows(conn.cursor(), journal.read_rows(conn, after=upto), modules)
                conn.execute(
                    f"UPDATE projection_positions SET position = ? WHERE name IN ({', '.join('?' * len(modules))})",
                    (head, *(m.NAME for m in modules)),
                )
        finally:
            mem.close()
        return head

    # --- comparing ---

    def diff(self, before: apsw.Connection, after: apsw.Connection) -> list[TableDiff]:
        """Per projection table, the rows added, removed and changed from
        ``before`` to ``after`` (two databases holding the projections)."""
        out = []
        for m in self.modules:
            for table in self.tables[m.NAME]:
                columns, _, a = _keyed(before, table)
                _, _, b = _keyed(after, table)
                changed = [(a[k], b[k]) for k in sorted(a.keys() & b.keys(), key=repr) if a[k] != b[k]]
                out.append(TableDiff(
                    table=table,
                    columns=columns,
                    added=[b[k] for k in sorted(b.keys() - a.keys(), key=repr)],
                    removed=[a[k] for k in sorted(a.keys() - b.keys(), key=repr)],
                    changed=changed,
                ))
        return out

    # --- comparing (live vs rebuilt) --------------------------------------------------------------------

    def compare(
        self, live: apsw.Connection, rebuilt: apsw.Connection, *, names: Iterable[str] | None = None,
        limit: int = 20,
    ) -> list[str]:
        """Differences between live projection tables and a rebuild, table by
        table and row by row (at most ``limit`` reported)."""
        problems: list[str] = []
        for m in self.select(names):
            for table in self.tables[m.NAME]:
                info = rebuilt.execute(f'PRAGMA table_info("{table}")').fetchall()
                columns = [str(row[1]) for row in info]
                pk = [str(row[1]) for row in sorted(info, key=lambda r: cast(int, r[5])) if row[5]] or columns
                select = "*"
                if table in self.virtual:  # a virtual table's rows are told apart by rowid
                    columns, pk, select = ["rowid", *columns], ["rowid"], "rowid, *"
                key_idx = [columns.index(c) for c in pk]
                order = ", ".join(f'"{c}"' if c != "rowid" else c for c in pk)
                try:
                    live_rows = live.execute(f'SELECT {select} FROM "{table}" ORDER BY {order}').fetchall()
                except apsw.SQLError as e:
                    problems.append(f"{table}: the live table cannot be read ({e})")
                    continue
                want = {tuple(r[i] for i in key_idx): r for r in rebuilt.execute(f'SELECT {select} FROM "{table}"')}
                have = {tuple(r[i] for i in key_idx): r for r in live_rows}
                for key in sorted(want.keys() | have.keys(), key=repr):
                    w, h = want.get(key), have.get(key)
                    if w == h:
                        continue
                    where = ", ".join(f"{c}={v!r}" for c, v in zip(pk, key, strict=True))
                    if h is None:
                        problems.append(f"{table}: row {where} is missing from the live table")
                    elif w is None:
                        problems.append(f"{table}: live row {where} does not follow from the journal")
                    else:
                        diffs = [f"{c} live {a!r} != rebuilt {b!r}" for c, a, b in zip(columns, h, w, strict=True) if a != b]
                        problems.append(f"{table}: row {where} differs: {'; '.join(diffs)}")
                    if len(problems) >= limit:
                        return problems
        return problems


_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_projections(projections: Any, builtins: Sequence[Projection]) -> tuple[Projection, ...]:
    """The application's projections, checked against the protocol and
    against each other and the kernel's own schema. Raises InvalidArgument
    naming the projection and what is wrong with it."""
    if isinstance(projections, str) or not isinstance(projections, list | tuple):
        raise InvalidArgument(f"open refused: projections must be a list of projections, got {projections!r:.60}")
    taken = {m.NAME for m in builtins}
    mem = memory_connection()
    try:
        for _, _, text in migrations.journal_migrations():
            mem.execute(text)
        for m in builtins:
            mem.execute(Projector.ddl(m))
        for p in projections:
            name = getattr(p, "NAME", None)
            what = f"open refused: projection {name!r}" if isinstance(name, str) else f"open refused: {p!r:.60}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise InvalidArgument(f"{what}: NAME must be a lowercase name such as 'note_search', got {name!r:.60}")
            if name in taken:
                raise InvalidArgument(f"{what}: the name is already taken by another projection")
            version = getattr(p, "VERSION", None)
            if type(version) is not int or version < 1:
                raise InvalidArgument(f"{what}: VERSION must be an int >= 1, got {version!r:.60}")
            handles = getattr(p, "HANDLES", None)
            if isinstance(handles, str) or not isinstance(handles, list | tuple | set | frozenset) or not handles \
                    or not all(isinstance(t, str) and t for t in handles):
                raise InvalidArgument(f"{what}: HANDLES must be a non-empty set of event type names, got {handles!r:.60}")
            ddl = getattr(p, "DDL", None)
            if not isinstance(ddl, str) or not ddl.strip():
                raise InvalidArgument(f"{what}: DDL must be the SQL that creates its tables, got {ddl!r:.60}")
            if not callable(getattr(p, "apply", None)):
                raise InvalidArgument(f"{what}: apply(conn, recorded, event) is missing")
            before = {n for (n,) in mem.execute("SELECT name FROM sqlite_schema")}
            try:
                mem.execute("SAVEPOINT probe")
                mem.execute(ddl)
                created = {n for (n,) in mem.execute("SELECT name FROM sqlite_schema")} - before
                mem.execute("RELEASE probe")
            except apsw.Error as e:
                clash = " (a name the kernel or another projection uses?)" if "already exists" in str(e) else ""
                raise InvalidArgument(f"{what}: its DDL fails: {e}{clash}") from e
            if not created:
                raise InvalidArgument(f"{what}: its DDL creates no table")
            taken.add(name)
    finally:
        mem.close()
    return tuple(projections)
