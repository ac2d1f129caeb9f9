"""The journal on PostgreSQL (extra ``[postgres]``: psycopg 3).

``eventkernel.postgres.open_journal(url)`` returns a :class:`PgJournal`: the
journal's append and read surface (``append``, ``read``, ``log``, ``head``,
``stream_version``, ``transaction``, ``wait``, ``verify``) on a PostgreSQL
server that many processes on many hosts share. The rules are the SQLite
journal's, through the same code (:mod:`eventkernel.journal`): dense
positions from 1 in commit order, the same hash chain (a journal copied
between engines keeps its positions and hashes, and its anchors), optimistic
concurrency by stream version, idempotent event ids.

Every write takes the one-row ``journal_head`` ``FOR UPDATE`` first: the
global write lock, as ``BEGIN IMMEDIATE`` is on SQLite. Positions are that
row's position + 1, never a sequence, so a rolled-back writer leaves no gap
and a reader following by position never misses a row committed later at a
lower position. The time a write records is the server's clock read under
that lock (never below the head's), unless ``clock=`` is given.

The whole kernel runs on it through :class:`Replica`:
``eventkernel.open("postgresql://…")`` keeps the journal (and durable
consumers' positions) on the server and, in each process, an SQLite file
holding the server's journal row for row and the projections folded from
it, caught up under the server's write lock before a write transaction (or,
with ``one_round_trip=True``, for a command on a replica that knows of no
newer commit, checked under it at the commit, in one round trip) and
followed between them (``LISTEN``);
the server also holds a copy of every
projection table, kept in the transaction of each commit
(:mod:`eventkernel.pgtables`). ``eventkernel copy`` moves a whole
journal between the engines; the CLI's read commands given a
``postgresql://`` URL read the server's journal, some through a local
SQLite copy.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, TypeVar

import apsw
import msgspec

from eventkernel import compaction, journal, pgtables, snapshots
from eventkernel.clock import Clock
from eventkernel.codec import Event
from eventkernel.connection import Database, GroupCommit, Stale, translating
from eventkernel.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    InvalidArgument,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    JournalFull,
    KernelClosed,
    KernelError,
    NotAJournal,
    WrongProcess,
)
from eventkernel.projector import Projector
from eventkernel.registry import check_application_append
from eventkernel.validate import check_int, check_text
from eventkernel.verify import VerifyReport
from eventkernel.view import JournalReader

log = logging.getLogger("eventkernel")
_T = TypeVar("_T")

FORMAT = 1
"""The PostgreSQL journal format this eventkernel writes."""

DEFAULT_SCHEMA = "eventkernel"
URL_PREFIXES = ("postgresql://", "postgres://")


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a file."""
    return isinstance(target, str) and target.startswith(URL_PREFIXES)


def redact(url: str) -> str:
    """``url`` without its credentials (user info, a ``password=`` parameter), for messages."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority, slash, tail = rest.partition("/")
        rest = authority.rpartition("@")[2] + slash + tail
    return re.sub(r"(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", scheme + sep + rest)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:  # the extra is not installed
        raise JournalError(
            "a PostgreSQL journal needs psycopg 3: pip install 'eventkernel[postgres]'"
        ) from e
    return psycopg


# --- the dialect: SQLite's SQL and errors as PostgreSQL's ------------------------

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%")


@functools.lru_cache(maxsize=1024)
def dialect(sql: str) -> str:
    """SQLite's SQL with bindings as psycopg's: each ``?`` placeholder becomes
    ``%s`` and a literal ``%`` ``%%`` (quoted text and comments untouched)."""

    def token(m: re.Match[str]) -> str:
        t = m.group(0)
        return "%s" if t == "?" else "%%" if t == "%" else t

    return _TOKEN.sub(token, sql)


# SQLSTATE classes and codes (PostgreSQL's appendix A).
_BUSY = {"55P03", "40001", "40P01", "57014", "25P03"}  # lock, serialization, deadlock, timeout, idle timeout
_FULL = {"53100", "53200", "54000"}


def translate(e: BaseException, doing: str) -> KernelError:
    """A psycopg error as the KernelError an SQLite one of its kind becomes."""
    state = getattr(e, "sqlstate", None) or ""
    if state in _BUSY:
        return JournalBusy(f"{doing} failed: PostgreSQL gave up waiting ({state}: {str(e).strip()})")
    if state in _FULL:
        return JournalFull(f"{doing} failed: the server is out of space or memory; nothing was written ({e})")
    if state.startswith("23"):
        return JournalError(f"{doing} failed: a constraint of the journal refused it ({state}: {str(e).strip()})")
    return JournalError(f"{doing} failed: {type(e).__name__}: {str(e).strip()}")


@contextmanager
def _pipeline(raw: Any) -> Iterator[None]:
    """``raw.pipeline()``, except that after an error in its block the end
    of the pipeline — which then fails too, the pipeline aborted by that
    error — is not reported: the block's error is what is raised. (psycopg
    logs a warning for it, which a routine retry, an optimistic commit found
    stale, made on every retry.)"""
    pipeline = raw.pipeline()
    pipeline.__enter__()
    try:
        yield
    except BaseException:
        with suppress(Exception):  # the aborted pipeline's own error, after the block's (the caller rolls back)
            pipeline.__exit__(None, None, None)
        raise
    pipeline.__exit__(None, None, None)


class Connection:
    """A psycopg connection answering the part of ``apsw.Connection`` the
    journal's read functions use (``execute`` with ``?`` bindings, rows as
    tuples), so that :mod:`eventkernel.journal` reads PostgreSQL unchanged;
    its errors stay psycopg's, translated by the callers."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:  # a psycopg.Connection
        self.raw = raw

    def execute(self, sql: str, bindings: Sequence[Any] | None = None) -> Any:
        if bindings:
            return self.raw.execute(dialect(sql), bindings)
        return self.raw.execute(sql)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(dialect(sql), rows)

    def table_exists(self, dbname: str, name: str) -> bool:
        """Whether a table of this name is on the search path (``dbname`` is SQLite's and ignored)."""
        return bool(self.raw.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0])


# --- the journal ---------------------------------------------------------------

_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_BASE = "SELECT position, hash, recorded_at, archive FROM journal_base ORDER BY position DESC LIMIT 1"
_ERASED = "SELECT position, data_digest, meta_digest, erasure FROM erased ORDER BY position"


class _Tx:
    """The write transaction of one thread, in pipeline mode: the head it
    holds the lock on, the stream versions it knows (no other writer can
    change them while it holds the lock), and the lookups sent with its
    BEGIN (a lone append's, so that it takes two round trips in all). An
    optimistic one (``optimistic``) holds the head its process last knew
    instead, sends ``expect_head`` for the lock and waits for no answer
    before its COMMIT: one round trip."""

    __slots__ = ("asked", "base", "conn", "hash", "now", "optimistic", "position", "recorded_at", "rows", "spoiled",
                 "start", "versions")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.position, self.hash, self.recorded_at, self.now = 0, journal.GENESIS_HASH, 0, 0
        self.start = 0
        self.base = 0  # the journal's base (compaction) under the lock
        # Decided on what this process last saw, checked by expect_head at the commit (no answer awaited
        # before it): event ids are taken as new (a duplicate fails the commit, which then runs again).
        self.optimistic = False
        self.spoiled: BaseException | None = None
        self.versions: dict[str, int] = {}
        self.asked: tuple[str, list[str | None], Any, list[Any]] | None = None
        self.rows: list[tuple[Any, ...]] = []  # appended, not yet sent: one INSERT for a run of appends

    def flush(self) -> None:
        """Send the rows appended so far (before anything reads the journal)."""
        if self.rows:
            rows, self.rows = self.rows, []
            self.conn.executemany(journal.INSERT, rows)

    def ask(self, stream: str, ids: list[str | None]) -> None:
        """Send the lookups an append of ``stream`` with ``ids`` needs (answers come at the next sync)."""
        if stream in self.versions and (self.optimistic or not any(ids)):
            self.asked = (stream, ids, None, [None] * len(ids))
            return
        self.flush()
        raw = self.conn.raw
        version = None if stream in self.versions else raw.execute(_VERSION, {"s": stream})
        found = [None if i is None or self.optimistic else raw.execute(_BY_ID, (i,)) for i in ids]
        self.asked = (stream, ids, version, found)

    def lookup(self, stream: str, ids: list[str | None]) -> tuple[list[Any], int]:
        """(rows holding each event id, None where none), the stream's version."""
        asked = self.asked
        self.asked = None
        if asked is None or asked[0] != stream or asked[1] != ids:
            self.ask(stream, ids)
            asked, self.asked = self.asked, None
        assert asked is not None
        _, _, version, found = asked
        rows = [None if cur is None else cur.fetchone() for cur in found]
        if version is not None:
            self.versions[stream] = int(version.fetchone()[0])
        return rows, self.versions[stream]


# The erased payloads a replica at a position has not seen: of rows after it, or erased by an event after it.
_ERASED_AFTER = "SELECT position, data_digest, meta_digest, erasure FROM erased WHERE (position > %s OR erasure > %s)"
# (a stream whose events all moved to a compaction's archive: its version at the base)
_VERSION = ("SELECT coalesce((SELECT max(version) FROM journal WHERE stream = %(s)s), "
            "(SELECT version FROM base_streams WHERE stream = %(s)s), 0)")
_BY_ID = f"SELECT {journal.COLUMNS} FROM journal WHERE event_id = %s"
_HEAD = "SELECT position, hash, recorded_at, {now}, base FROM journal_head FOR UPDATE"
_REPLICA_HEAD = (f"SELECT position, hash, recorded_at, {_NOW_MS}, tables_position, tables, base FROM journal_head "
                 "FOR UPDATE")
_BASE_NOTICE = "base:"  # the payload of a compaction's NOTIFY: "base:<position>"
_EXPECT = "SELECT expect_head(%s, %s, %s, %s, %s, %s, %s)"
_STALE = "EK001"  # expect_head's SQLSTATE: the journal moved on since the replica read it
SLACK_MS = 100
"""How far an optimistic commit's time (this machine's clock, set to the
server's by its last answer) may be behind the server's clock when its check
takes the lock; it may not be ahead of it at all (:func:`_window`)."""


def _window(now: int) -> tuple[int, int]:
    """``expect_head``'s time and slack for a commit at ``now``: its check
    passes when the server's clock is within slack of the time, so centring
    the window half a slack later makes it pass when the server's clock is
    at ``now`` or at most SLACK_MS past it. A time decided ahead of the
    server's clock (a lease taken over before the server's time says it ran
    out) is refused, and the command runs again under the lock. The offsets
    are measured so that this machine's estimate of the server's clock is
    behind it (:func:`_behind`)."""
    half = SLACK_MS // 2
    return now + half, half


def _behind(server_ms: int) -> int:
    """The server's clock less this machine's, from a time the server read
    before its answer arrived (now): an estimate that keeps this machine's
    reading of the server's clock behind it (by the answer's way back, and a
    millisecond for both clocks' rounding to ms)."""
    return server_ms - time.time_ns() // 1_000_000 - 1


FRESH_S = 1.0
"""An optimistic commit is sent only on a connection that answered this
recently: one idle for longer may have been dropped (a restart, a failover),
and the lock taken first finds that out before anything is sent."""
_CONSUMER = "SELECT position FROM consumer_positions WHERE name = %s"
_MOVE_CONSUMER = (
    "INSERT INTO consumer_positions (name, position, updated_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
)


_KNOWN_STREAMS = 10_000  # stream versions a journal keeps between transactions, at most


def _stale(e: BaseException) -> bool:
    """Whether a failed optimistic commit found the journal moved on (or the
    clocks apart: expect_head's EK001), or an event id or stream version it
    took as new already there (a unique violation): nothing was committed."""
    while e is not None:
        if getattr(e, "sqlstate", None) in (_STALE, "23505"):
            return True
        e = e.__cause__  # type: ignore[assignment]
    return False


class _Lost(Exception):
    """The writer connection was found lost when a transaction began."""


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class PgJournal(JournalReader):
    """The journal in a PostgreSQL schema. Open it with :func:`open_journal`;
    a context manager; one per process, shared by any number of threads.

    With ``one_round_trip`` (see :func:`open_journal`), a group commit's
    transaction takes one round trip when this process knows the journal's
    head (it made or saw the last commit): its appends
    are decided on what it knows and sent with ``expect_head``, which takes
    the lock and checks that nothing moved; when something did, nothing is
    committed and the group runs again the usual way (the lock first, its
    lookups, then the rows with the COMMIT: two round trips)."""

    retries_stale = False  # (GroupCommit: a group's first try may be optimistic; open_journal's one_round_trip)

    def __init__(self, url: str, *, schema: str, clock: Clock | None, create: bool, busy_timeout_ms: int,
                 statement_timeout_ms: int, idle_in_transaction_timeout_ms: int, group_commit: bool) -> None:
        self.url = url
        self.schema = schema
        self._clock = clock
        self._settings = {
            "lock_timeout": busy_timeout_ms,
            "statement_timeout": statement_timeout_ms,
            "idle_in_transaction_session_timeout": idle_in_transaction_timeout_ms,
        }
        self.busy_timeout_ms = busy_timeout_ms
        self._busy_s = busy_timeout_ms / 1000
        self._hint = threading.local()  # the lookups of this thread's append, sent with a group's BEGIN
        self._group = GroupCommit(self) if group_commit else None
        self._pid = _pid
        self._closed = False
        self._lock = threading.RLock()  # the writer connection and its transaction
        self._owner: int | None = None
        self._tx: _Tx | None = None
        self._writer: Connection | None = None
        self._reader: Connection | None = None
        self._reader_lock = threading.Lock()
        self._listener: Any = None
        self._listener_lock = threading.Lock()
        self.channel = f"eventkernel.{schema}"
        # A channel of this journal object alone, on which interrupt() wakes a wait.
        self._wake = f"eventkernel.wake.{os.getpid()}.{id(self):x}"
        self._interrupted = False
        self.base_notified = 0  # the newest base a compaction's notification announced to wait()
        self.heard = 0  # the newest head a commit's notification announced to wait()
        # An optimistic commit (one round trip): the head this process last saw under the lock or made,
        # (position, hash, recorded_at, base), the versions of streams it knows as of that head, the
        # server's clock less this machine's, when the writer connection last answered, and until when
        # the lock is taken first (after an optimistic commit found the journal moved on).
        self.optimistic = False  # set by GroupCommit: a group's first try may be optimistic
        self._known: tuple[int, bytes, int, int] | None = None
        self._versions: dict[str, int] = {}
        self._offset: int | None = None
        self._answered = 0.0
        self._contended_until = 0.0
        self._writer = self._connect()
        try:
            self._prepare(create)
        except BaseException:
            self._writer.raw.close()
            raise

    # connections -----------------------------------------------------------

    def _connect(self) -> Connection:
        psycopg = _psycopg()
        from psycopg import sql

        try:
            # No automatic prepared statements: a statement psycopg prepares in a pipeline that an error
            # aborts (an optimistic commit's failed check) is skipped by the server while psycopg counts it
            # as prepared, and its next use fails with "prepared statement … does not exist".
            raw = psycopg.connect(self.url, autocommit=True, prepare_threshold=None)
        except psycopg.Error as e:
            raise JournalError(f"connecting to PostgreSQL failed: {str(e).strip()}") from e
        try:
            raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            for name, value in self._settings.items():
                raw.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        except psycopg.Error as e:
            raw.close()
            raise translate(e, "configuring the PostgreSQL connection") from e
        return Connection(raw)

    def _prepare(self, create: bool) -> None:
        psycopg = _psycopg()
        from psycopg import sql

        conn = self._writer
        assert conn is not None
        try:
            with conn.raw.transaction():
                conn.raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.channel,))
                if conn.raw.execute("SELECT to_regclass(%s)", (f'"{self.schema}".journal',)).fetchone()[0] is None:
                    if not create:
                        raise NotAJournal(redact(self.url), f"schema {self.schema!r} holds no eventkernel journal")
                    conn.raw.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                    ddl = importlib.resources.files("eventkernel.schema").joinpath("postgres/0001_journal.sql")
                    conn.raw.execute(ddl.read_text(encoding="utf-8"))
                    conn.raw.execute(f"INSERT INTO eventkernel_format (format, created_at) VALUES (%s, {_NOW_MS})",
                                     (FORMAT,))
                row = conn.raw.execute("SELECT max(format) FROM eventkernel_format").fetchone()
                if (row is None or row[0] is None or row[0] <= FORMAT) and conn.raw.execute(
                        "SELECT to_regclass(%s)", (f'"{self.schema}".projection_tables',)).fetchone()[0] is None:
                    # the projections' tables (eventkernel.pgtables): added to a schema made without them
                    ddl = importlib.resources.files("eventkernel.schema").joinpath("postgres/0002_tables.sql")
                    conn.raw.execute(ddl.read_text(encoding="utf-8"))
                if (row is None or row[0] is None or row[0] <= FORMAT) and conn.raw.execute(
                        "SELECT to_regclass(%s)", (f'"{self.schema}".journal_base',)).fetchone()[0] is None:
                    # compaction (journal_base and what goes with it): added to a schema made without it
                    ddl = importlib.resources.files("eventkernel.schema").joinpath("postgres/0003_compaction.sql")
                    conn.raw.execute(ddl.read_text(encoding="utf-8"))
                if (row is None or row[0] is None or row[0] <= FORMAT) and conn.raw.execute(
                        "SELECT to_regprocedure(%s)", (f'"{self.schema}".expect_head(bigint, bytea, bigint, bigint, '
                                                        'text, bigint, bigint)',)).fetchone()[0] is None:
                    # the check of an optimistic commit (Replica): added to a schema made without it
                    ddl = importlib.resources.files("eventkernel.schema").joinpath("postgres/0004_expect.sql")
                    conn.raw.execute(ddl.read_text(encoding="utf-8"))
        except psycopg.Error as e:
            raise translate(e, f"opening the journal in schema {self.schema!r}") from e
        found = None if row is None else row[0]
        if found is None or found > FORMAT:
            raise NotAJournal(
                redact(self.url), f"schema {self.schema!r} holds a journal of format {found}, and this eventkernel "
                f"reads format {FORMAT}; upgrade eventkernel"
            )

    def _where(self) -> str:
        psycopg = _psycopg()
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error:
            return "the database"
        return f"database {info.get('dbname', '?')!r}"

    def _check(self) -> None:
        if self._pid != _pid:
            raise WrongProcess(
                "this PgJournal was opened in another process (before a fork): its connections belong there; "
                "open one per process"
            )
        if self._closed:
            raise KernelClosed("the journal is closed")

    def __reduce__(self) -> Any:
        raise WrongProcess(
            "a PgJournal cannot be pickled: its connections belong to the process that opened it; "
            "send the URL instead and open one journal per process"
        )

    def _read_conn(self) -> Connection:
        with self._reader_lock:
            if self._reader is None or self._reader.raw.closed or self._reader.raw.broken:
                self._reader = self._connect()
            return self._reader

    def _query(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read on the shared reader (never this thread's
        transaction: for a replica's reads of the server), once more on a new
        connection if the server had dropped the last one (a read repeats)."""
        self._check()
        psycopg = _psycopg()
        for attempt in (1, 2):
            conn = self._read_conn()
            try:
                return [tuple(r) for r in conn.raw.execute(sql, params)]
            except psycopg.OperationalError as e:
                if attempt == 1 and (conn.raw.closed or conn.raw.broken):
                    continue
                raise translate(e, doing) from e
            except psycopg.Error as e:
                raise translate(e, doing) from e
        raise AssertionError("unreachable")

    def _read(self, doing: str, fn: Callable[[Any], _T]) -> _T:
        """One read, repeated once on a new connection when the shared reader
        was found dropped (a server restart, a failover): a read has no effect."""
        psycopg = _psycopg()
        mine = self._tx is not None and self._owner == threading.get_ident()
        for attempt in (1, 2):
            try:
                return super()._read(doing, fn)
            except JournalError as e:
                conn = self._reader
                if attempt == 1 and not mine and isinstance(e.__cause__, psycopg.OperationalError) \
                        and conn is not None and (conn.raw.closed or conn.raw.broken):
                    log.info("the connection to %s was lost; reconnecting", redact(self.url))
                    continue
                raise
        raise AssertionError("unreachable")

    @contextmanager
    def _statement(self, doing: str) -> Iterator[Any]:
        """The connection a read of this thread uses: its transaction's, or the
        shared reader (autocommit: each statement sees what is committed)."""
        self._check()
        psycopg = _psycopg()
        tx = self._tx
        if tx is not None and self._owner == threading.get_ident():
            tx.flush()
            conn = tx.conn
        else:
            conn = self._read_conn()
        try:
            yield conn
        except psycopg.Error as e:
            raise translate(e, doing) from e

    # writing -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[PgJournal]:
        """One transaction for every append of this thread inside the block:
        all committed together at its end, or none if the block raises.
        Appends of other threads and processes wait for it (up to the busy
        timeout): it holds the journal's write lock from its start."""
        with self._write("transaction"):
            yield self

    @contextmanager
    def _write(self, doing: str, ask: tuple[str, list[str | None]] | None = None) -> Iterator[_Tx]:
        self._check()
        me = threading.get_ident()
        if self._owner == me and self._tx is not None:
            if self._tx.spoiled is not None:
                raise JournalError(
                    f"{doing} refused: this transaction was rolled back ({self._tx.spoiled}); leave its `with` block"
                )
            yield self._tx
            return
        if not self._lock.acquire(timeout=self._busy_s):
            raise JournalBusy(f"{doing} failed: another thread's transaction held the journal past the busy timeout")
        try:
            self._owner = me
            try:
                yield from self._transact(doing, ask, retry=True)
            except _Lost:  # raised before anything was sent or yielded
                log.info("the connection to %s was lost; reconnecting", redact(self.url))
                yield from self._transact(doing, ask, retry=False)
        finally:
            self._owner, self._tx = None, None
            self._lock.release()
            if self._group is not None:
                self._group.wake()

    def write(self, doing: str) -> AbstractContextManager[_Tx]:
        """A group's transaction (for :class:`GroupCommit`, which holds ``_lock``)."""
        return self._write(doing, getattr(self._hint, "ask", None))

    def _may_skip_lock(self, conn: Connection | None) -> bool:
        """Whether a group's transaction may decide on what this process last
        saw and send everything at once, the lock and its check included
        (``expect_head``): a group's first try (``optimistic``), a head this
        process saw or made and no notification of a newer one, the server's
        clock known, a writer connection that answered within FRESH_S, and no
        optimistic commit found stale in the last half second."""
        now = time.monotonic()
        return (self.optimistic and self._known is not None and self._offset is not None
                and self.heard <= self._known[0] and self.base_notified <= self._known[3]
                and conn is not None and not conn.raw.closed and not conn.raw.broken
                and now - self._answered < FRESH_S and now >= self._contended_until)

    def _transact(self, doing: str, ask: tuple[str, list[str | None]] | None, *, retry: bool) -> Iterator[_Tx]:
        psycopg = _psycopg()
        conn = self._writer
        optimistic = self._may_skip_lock(conn)
        if conn is None or conn.raw.closed or conn.raw.broken:
            conn = self._writer = self._connect()
        raw = conn.raw
        tx = _Tx(conn)
        committing = False
        try:
            with _pipeline(raw):
                raw.execute("BEGIN")
                if optimistic:
                    assert self._known is not None and self._offset is not None
                    tx.optimistic = True
                    tx.position, tx.hash, tx.recorded_at, tx.base = self._known
                    tx.now = max(time.time_ns() // 1_000_000 + self._offset, tx.recorded_at)
                    tx.versions = self._versions  # as of the known head (dropped if the commit fails)
                    raw.execute(_EXPECT, (tx.position, tx.hash, tx.base, 0, None, *_window(tx.now)))
                    if ask is not None:
                        tx.ask(*ask)
                else:
                    head = raw.execute(_HEAD.format(now=_NOW_MS))
                    if ask is not None:
                        tx.ask(*ask)
                    try:
                        row = head.fetchone()
                    except psycopg.Error as e:
                        if retry and isinstance(e, psycopg.OperationalError) and (raw.closed or raw.broken):
                            # A connection the server dropped while it sat idle (a restart, a failover):
                            # nothing was written, so once more on a new one.
                            raise _Lost from e
                        raise translate(e, f"{doing}: taking the journal's write lock") from e
                    assert row is not None
                    tx.position, tx.hash, tx.recorded_at, tx.now = int(row[0]), bytes(row[1]), int(row[2]), int(row[3])
                    tx.base = int(row[4])
                    self._offset = _behind(tx.now)
                    self._answered = time.monotonic()
                    known = self._known
                    if known is None or known[:2] != (tx.position, tx.hash):
                        # another process appended since: what this one knew of streams may be old
                        self._known, self._versions = None, {}
                    else:
                        tx.versions = self._versions
                tx.start = tx.position
                self._tx = tx
                try:
                    yield tx
                except psycopg.Error as e:
                    tx.spoiled = e
                    raise translate(e, doing) from e
                if tx.spoiled is not None:
                    raise JournalError(f"{doing} failed: the transaction was rolled back ({tx.spoiled})")
                tx.flush()
                if tx.position != tx.start:
                    raw.execute("UPDATE journal_head SET position = %s, hash = %s, recorded_at = %s",
                                (tx.position, tx.hash, tx.recorded_at))
                    raw.execute("SELECT pg_notify(%s, %s)", (self.channel, str(tx.position)))
                committing = True
                raw.execute("COMMIT")
        except BaseException as e:
            self._rollback(conn)
            if tx.versions is self._versions:
                self._known, self._versions = None, {}  # (the failed transaction may have moved them)
            if tx.optimistic and (isinstance(e, Stale) or _stale(e)):
                # Nothing was committed: the journal moved on, or an event id already there (or the
                # clocks drifted). The group runs again, the lock first, for a while.
                self._contended_until = time.monotonic() + 0.5
                raise Stale(str(e)) from e
            if (retry and self._tx is None and isinstance(e, psycopg.OperationalError)
                    and (raw.closed or raw.broken)):
                raise _Lost from e  # lost before the lock was taken: nothing was written
            if isinstance(e, psycopg.Error):
                if not committing:
                    raise translate(e, doing) from e
                sqlstate = e.sqlstate or ""
                if tx.optimistic and sqlstate and sqlstate[:2] not in ("08", "57", "58", "XX"):
                    # An optimistic transaction's statements all answer at its COMMIT: the server refused
                    # one of them (its lock's timeout, say), so it rolled the whole of it back.
                    raise translate(e, f"{doing} (nothing was written)") from e
                if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                    raise CommitOutcomeUnknown(
                        f"{doing}: COMMIT failed ({type(e).__name__}: {str(e).strip()}); the transaction may or "
                        "may not be durable. Retry with the same event_ids: a retry of what committed appends "
                        "nothing"
                    ) from e
                raise translate(e, f"{doing}: committing (nothing was written)") from e
            raise
        # Committed: the head as this process made it, and what it knows of streams as of it.
        self._known = (tx.position, tx.hash, tx.recorded_at, tx.base)
        self._versions = tx.versions if len(tx.versions) <= _KNOWN_STREAMS else {}
        self._answered = time.monotonic()

    def _writer_raw(self) -> Any:
        """The writer connection (a new one if the last was lost)."""
        conn = self._writer
        if conn is None or conn.raw.closed or conn.raw.broken:
            conn = self._writer = self._connect()
        return conn.raw

    def _rollback(self, conn: Connection) -> None:
        psycopg = _psycopg()
        try:
            if not conn.raw.closed and conn.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.raw.execute("ROLLBACK")
        except psycopg.Error:
            conn.raw.close()  # a broken connection: the next write opens another

    def append(
        self,
        stream: str,
        events: Sequence[Event],
        expected_version: int | None = None,
        event_ids: Sequence[str | None] | None = None,
        correlation_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Append events to ``stream`` in one transaction (or this thread's
        :meth:`transaction`); the position of the last one. The rules and
        refusals of :meth:`eventkernel.Kernel.append`: ``expected_version``
        (ConcurrencyConflict), ``event_ids`` (an exact retry appends nothing
        and returns the original position; IdempotencyConflict otherwise), and
        the kernel's own streams and events refused. Two round trips: the
        lock with the lookups, then the rows with the COMMIT."""
        where = "append"
        events = check_application_append(stream, events, event_ids)
        encoded, ids, meta_text = journal.prepare(
            stream, events, expected_version=expected_version, event_ids=event_ids, correlation_id=correlation_id,
            meta=meta, where=where, meta_text=None)

        def run() -> int:
            with self._write(where, (stream, ids)) as tx:
                try:
                    found, current = tx.lookup(stream, ids)
                except _psycopg().Error as e:
                    tx.spoiled = e  # the server rolls the whole transaction back
                    if tx.optimistic and _stale(e):
                        raise Stale(str(e)) from e
                    raise translate(e, where) from e
                if event_ids is not None:
                    replay = journal.replayed(found, stream, encoded, where)
                    if replay is not None:
                        return replay[-1].position
                if expected_version is not None and expected_version != current:
                    if tx.optimistic:  # what this process knows may be old: decided again under the lock
                        raise Stale(f"{stream} at version {current} as last seen, {expected_version} expected")
                    raise ConcurrencyConflict(stream, expected_version, current)
                recorded_at = max(self._now(tx), tx.recorded_at)
                rows, _ = journal.chain((tx.position, tx.hash), stream, events, encoded, ids, current, recorded_at,
                                        correlation_id, meta, meta_text)
                tx.rows += rows
                tx.versions[stream] = current + len(rows)
                tx.position, tx.hash, tx.recorded_at = rows[-1][0], rows[-1][10], recorded_at
                return int(rows[-1][0])

        if self._group is None or self._owner == threading.get_ident():
            return run()
        self._check()
        self._hint.ask = (stream, ids)
        try:
            return int(self._group.run(where, run))
        finally:
            self._hint.ask = None

    def _now(self, tx: _Tx) -> int:
        if self._clock is None:
            return tx.now  # the server's clock, read under the lock
        t = self._clock()
        if type(t) is not int or t < 0:
            raise JournalError(f"the journal's clock returned {t!r:.60}; a clock must return int ms since the epoch")
        return t

    def _import(self, rows: Sequence[tuple[Any, ...]], erased: Sequence[tuple[Any, ...]]) -> None:
        """Write journal rows verbatim (``eventkernel copy``): each must follow
        the head, densely; ``erased`` records their erased payloads."""
        with self._write("copy") as tx:
            tx.versions = {}  # (rows written verbatim: the versions this process knew may no longer hold)
            for row in rows:
                if row[0] != tx.position + 1:
                    raise InvalidArgument(f"copy refused: position {row[0]} does not follow the head {tx.position}")
                tx.position, tx.hash, tx.recorded_at = int(row[0]), bytes(row[10]), int(row[9])
            tx.flush()
            tx.conn.executemany(journal.INSERT, rows)
            if erased:
                tx.conn.executemany(
                    "INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?)", erased)

    # reading -----------------------------------------------------------------

    @property
    def head(self) -> int:
        """The position of the last committed event (this thread's own
        transaction included); 0 when the journal is empty."""
        return self.head_hash()[0]

    def head_hash(self) -> tuple[int, str]:
        """(position, hex chain hash) of the head: an anchor for :meth:`verify`."""
        if self._tx is not None and self._owner == threading.get_ident():
            return self._tx.position, self._tx.hash.hex()
        row = self._read("reading the head",
                         lambda conn: conn.raw.execute("SELECT position, hash FROM journal_head").fetchone())
        return int(row[0]), bytes(row[1]).hex()

    def wait(self, after: int, timeout_s: float) -> int:
        """Block until the head passes ``after`` (a ``NOTIFY`` of the commit
        wakes it), a compaction is announced (``base_notified``) or
        ``timeout_s`` elapses; the head either way."""
        check_int("wait", "after", after, minimum=0)
        return self._await(after, timeout_s, fresh=True)

    def _await(self, after: int, timeout_s: float, *, fresh: bool) -> int:
        """``wait``; not ``fresh``: the head as the notifications heard so far
        tell it (no round trip when they tell of one past ``after``), read
        from the server only when the listening connection is new."""
        psycopg = _psycopg()
        from psycopg import sql

        self._check()
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._listener_lock:
            try:
                if self._listener is None or self._listener.closed:
                    listener = psycopg.connect(self.url, autocommit=True)
                    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake)))
                    self._listener = listener
                    fresh = True
                listener = self._listener
                while True:
                    if fresh:
                        # after LISTEN, so that a commit between this read and the wait still wakes it
                        row = listener.execute(
                            sql.SQL("SELECT position FROM {}.journal_head").format(sql.Identifier(self.schema))
                        ).fetchone()
                        self.heard = max(self.heard, int(row[0]))
                    head = self.heard
                    remaining = deadline - time.monotonic()
                    if head > after or remaining <= 0 or self._interrupted:
                        return head
                    for notice in listener.notifies(timeout=remaining, stop_after=1):
                        if notice.payload.isdigit():
                            self.heard = max(self.heard, int(notice.payload))
                        if notice.payload.startswith(_BASE_NOTICE):  # a compaction: the head did not move
                            self.base_notified = max(self.base_notified, int(notice.payload[len(_BASE_NOTICE):]))
                            return head
            except psycopg.Error as e:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                raise translate(e, "waiting for the journal") from e

    def rows(self, after: int = 0, until: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Raw journal rows (``journal.read_rows``' columns), a page per statement."""
        return self._pages("rows", after, None, until=until)

    def vacuum(self) -> None:
        """``VACUUM journal``: after an erasure, the row versions that held the
        payloads are pruned (their bytes may stay in free space, in WAL
        segments and in backups until the server reuses or recycles them)."""
        with self._statement("vacuuming the journal") as conn:
            conn.raw.execute("VACUUM journal")

    def erased_rows(self) -> list[tuple[Any, ...]]:
        """(position, data_digest, meta_digest, erasure) of every erased payload."""
        with self._statement("reading the erased payloads") as conn:
            return [tuple(r) for r in conn.raw.execute(_ERASED)]

    def base(self) -> tuple[int, bytes, int, str] | None:
        """(position, hash, recorded_at, archive) of the journal's base — the
        last event a compaction moved to an archive — or None (the journal
        starts at position 1)."""
        found = self._query("reading the journal's base", _BASE)
        return None if not found else (int(found[0][0]), bytes(found[0][1]), int(found[0][2]), str(found[0][3]))

    def verify(self, *, anchor: tuple[int, str] | None = None, limit: int = 50) -> VerifyReport:
        """Dense positions from 1 (after a compaction, from its base), dense
        stream versions, the hash chain (as on SQLite, erased payloads by
        their digests), the head row, and ``anchor`` (a ``(position, hex
        hash)`` kept from an earlier report), all read in one snapshot of the
        server (what other processes commit meanwhile is not half seen).
        Never raises for what it finds."""
        problems: list[str] = []
        bad: list[int] = []
        prev, last = journal.GENESIS_HASH, 0
        versions: dict[str, int] = {}

        def problem(text: str, position: int | None = None) -> None:
            if len(problems) < limit:
                problems.append(text)
            if position is not None:
                bad.append(position)

        psycopg = _psycopg()
        conn: Any = None  # (journal.read_rows reads it as it reads an apsw connection)
        try:
            self._check()
            conn = self._connect()  # (a transaction of its own: never the reader other threads share)
            raw = conn.raw
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            base = raw.execute(_BASE).fetchone()
            if base is not None:  # the chain goes on from the archive's head
                last, prev = int(base[0]), bytes(base[1])
                versions = {str(s): int(v) for s, v in raw.execute("SELECT stream, version FROM base_streams")}
                if anchor is not None and anchor[0] < last:
                    problem(f"the anchor is at position {anchor[0]}, before the journal's base {last}: check it "
                            f"against the archive {base[3]!r}")
            erased = {r[0]: tuple(r) for r in raw.execute(_ERASED)}
            for row in journal.read_rows(conn, after=last):
                position, stream, version, _, _, data, meta, _, _, _, h = row
                if position != last + 1:
                    problem(f"positions jump from {last} to {position}", last + 1)
                if version != versions.get(stream, 0) + 1:
                    problem(f"position {position}: stream {stream!r} version {version} follows "
                            f"{versions.get(stream, 0)}", position)
                versions[stream] = version
                e = erased.get(position)
                if e is not None and (data != journal.ERASED_DATA or meta is not None):
                    problem(f"position {position}: an erased row holds a payload", position)
                if bytes(h) != journal.expected_hash(prev, row, e):
                    problem(f"position {position}: the chain hash does not match its row", position)
                prev, last = bytes(h), position
                if anchor is not None and position == anchor[0] and bytes(h).hex() != anchor[1]:
                    problem(f"position {position}: the chain does not pass through the anchor", position)
            head, head_hash = raw.execute("SELECT position, hash FROM journal_head").fetchone()
            if (int(head), bytes(head_hash)) != (last, prev):
                problem(f"the head row says position {head}, the journal ends at {last}", last + 1)
            if anchor is not None and anchor[0] > last:
                problem(f"the anchor is at position {anchor[0]}, past the head {last}: events were cut", last + 1)
        except psycopg.Error as e:
            problem(f"the journal cannot be read to the end: {translate(e, 'verifying the journal')}", last + 1)
        except KernelError as e:
            problem(f"the journal cannot be read to the end: {e}", last + 1)
        finally:
            if conn is not None:
                conn.raw.close()
        return VerifyReport(ok=not problems, problems=problems, head=last, head_hash=prev.hex(),
                            first_bad_position=min(bad) if bad else None,
                            notes=["the kernel's projections are not kept on PostgreSQL: the journal alone checked"])

    def interrupt(self) -> None:
        """End a wait in progress now, and every later one at once (before
        closing: a follower thread then stops without waiting out its timeout)."""
        self._interrupted = True
        try:
            self._query("waking the follower", "SELECT pg_notify(%s, '')", (self._wake,))
        except KernelError:
            pass  # (a server gone: the wait ends with its timeout, or its error)

    def close(self) -> None:
        """Close every connection; later use raises KernelClosed. Idempotent."""
        if self._closed or self._pid != _pid:
            self._closed = True
            return
        if self._group is not None:
            self._group.close()
        with self._lock:
            self._closed = True
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.raw.close()
            with self._listener_lock:
                if self._listener is not None:
                    self._listener.close()

    def __enter__(self) -> PgJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PgJournal {self._where()} schema={self.schema!r}{' closed' if self._closed else ''}>"


DEFER_S = 0.005
"""How long after its last write a process's follower still leaves the
folding of others' commits to its next write (:meth:`Replica._pause`)."""
DEFER_MAX_S = 0.25
"""The longest a follower defers one pull to a process's writes."""


class Replica:
    """A kernel's SQLite file as a replica of the journal on PostgreSQL: the
    file's journal is the server's, row for row, and its projections are
    folded from it by the same code as any file's. Every write transaction of
    the kernel takes the server's write lock first and brings the file up to
    the server's head under it, so each command decides on the state every
    process shares; its new rows are committed on the server before the file
    commits them. With ``one_round_trip``, a group commit's command on a
    replica that knows of no newer commit is decided first without the lock
    and committed with a check that the server's head did not move
    (``expect_head``): one round trip; when it did, the group runs again the
    usual way. Between commands a thread follows the server (``LISTEN``) and
    folds what other processes appended, so reads lag them by about the time
    of a notification (while this process writes, its writes do that
    folding, and the thread waits for a pause in them: :meth:`_pause`). With
    ``tables`` (the default), the server also holds a copy of every
    projection table, brought to the replica's state in the transaction of
    each commit (:mod:`eventkernel.pgtables`).
    (:class:`eventkernel.connection.Shared`)"""

    def __init__(self, pg: PgJournal, db: Database, projector: Projector, *, tables: bool = True,
                 one_round_trip: bool = False) -> None:
        self.pg = pg
        self.db = db
        self.projector = projector
        # False: every write transaction takes the lock first, its time the server's clock read under it
        self.one_round_trip = one_round_trip
        # the projection tables the server holds copies of, and their entries as journal_head names them
        self.tables = pgtables.tables(projector) if tables else {}
        self.entries = sorted(t.entry for t in self.tables.values())
        self.digest = pgtables.digest(self.entries)
        self.kept: tuple[int, str] = (0, "")  # journal_head's (tables_position, tables) under the lock
        self.refresh = False  # bring the server's tables up to date even if this transaction appends nothing
        self.seeded = 0  # the position an empty replica was filled to from the server's tables (seed)
        self._session: apsw.Session | None = None
        self.base = 0  # the server's head when the open transaction began
        self.server_now = 0  # the server's clock, read under its lock
        self.known = 0  # the server's head as this process last saw or made it
        self.sending = 0  # the last position of the rows being committed (0: none)
        self.forgotten = 0  # erasures followed (the file is to be rewritten) ...
        self.rewritten = 0  # ... and how many of them the last rewrite covered
        self.truncate_due = False  # and then its WAL truncated
        self._positions: dict[str, tuple[int, int]] = {}  # consumers moved by the open transaction
        self.compacting: compaction.Base | None = None  # a compaction of the open transaction, sent with it
        self.rebasing: compaction.Rebase | None = None  # an erasure's new base projections, sent with it
        self.server_base = 0  # the server's base (compaction) as last read
        self.optimistic_tx = False  # the open transaction decides on the replica, checked at its commit
        self.base_hash = journal.GENESIS_HASH  # the replica's head hash when it began
        self.offset: int | None = None  # the server's clock less this machine's (ms), as of its last answer
        self.answered = 0.0  # when the writer connection last answered (monotonic)
        self.contended_until = 0.0  # after an optimistic commit found the journal moved on: the lock first
        self._followed_base = 0  # the base the replica recorded (follow_base)
        self.writing = False  # a write transaction of this process is open (begun, not ended)
        self.wrote = 0.0  # when this process's last write transaction ended (monotonic)
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def clock(self) -> int:
        """The kernel's default clock on PostgreSQL: inside a write
        transaction the server's time read under its lock; else this machine's."""
        if self.db.shared_open and self.db.owns_write():
            return self.server_now
        return time.time_ns() // 1_000_000

    # the Shared protocol ---------------------------------------------------

    def _may_skip_lock(self, local: tuple[int, bytes, int]) -> bool:
        """Whether this transaction may decide on the replica without the lock
        (an optimistic commit): a group commit's first try, this process
        knowing of no commit past the replica's head (its own, other
        processes' announced by NOTIFY, a compaction), the server's tables
        this replica's set at that head, the server's clock known, no
        optimistic commit found stale in the last half second, a writer
        connection that answered within FRESH_S, and ``one_round_trip`` (the
        kernel's ``one_round_trip=True``, or a ``clock`` of the caller's)."""
        writer = self.pg._writer
        return (self.db.optimistic and self.one_round_trip and self.offset is not None and not self.refresh
                and self.known <= local[0] and self.pg.heard <= local[0] and self.pg.base_notified <= self.server_base
                and (not self.tables or self.kept == (local[0], self.digest))
                and writer is not None and not writer.raw.closed and not writer.raw.broken
                and time.monotonic() - self.answered < FRESH_S and time.monotonic() >= self.contended_until)

    def begin(self, conn: apsw.Connection) -> None:
        self.writing = True
        psycopg = _psycopg()
        local = journal.head_row(conn)
        self.optimistic_tx = False
        if self._may_skip_lock(local):
            assert self.offset is not None
            self.optimistic_tx = True
            self.base, self.base_hash = int(local[0]), bytes(local[1])
            self.server_now = max(time.time_ns() // 1_000_000 + self.offset, int(local[2]))
            self._watch()
            return
        for attempt in (1, 2):
            raw = self.pg._writer_raw()
            try:
                # One round trip: the statements as one simple query (its one parameter, the replica's
                # head, an int written in), each statement's rows a result set. (In pipeline mode the
                # end of the block waits for a second sync.)
                after = int(local[0])
                with raw.cursor() as cur:
                    cur.execute(f"BEGIN; {_REPLICA_HEAD}; SELECT {journal.COLUMNS} FROM journal WHERE position > "
                                f"{after} ORDER BY position; {_ERASED_AFTER % (after, after)}")
                    cur.nextset()
                    row = cur.fetchone()
                    cur.nextset()
                    rows = cur.fetchall()
                    cur.nextset()
                    erased = {r[0]: tuple(r) for r in cur.fetchall()}
                self.answered = time.monotonic()
                break
            except psycopg.Error as e:
                self.pg._rollback(self.pg._writer)  # type: ignore[arg-type]
                if attempt == 1 and (raw.closed or raw.broken) and isinstance(e, psycopg.OperationalError):
                    # A connection the server dropped while it sat idle (a restart, a failover, a network
                    # timeout): nothing was written, so once more on a new one.
                    log.info("the connection to %s was lost; reconnecting", redact(self.pg.url))
                    continue
                raise translate(e, "taking the shared journal's write lock") from e
        assert row is not None
        self.base, self.server_now = int(row[0]), int(row[3])
        self.offset = _behind(self.server_now)
        self.kept = (int(row[4]), str(row[5]))
        self.server_base = max(self.server_base, int(row[6]))
        if local[0] < self.server_base:
            raise JournalError(self._behind(local[0]))
        if rows:
            self._apply(conn, [tuple(r) for r in rows], local, erased)
        elif self.base != local[0] or (self.base and bytes(row[1]) != local[1]):
            raise JournalCorrupt(
                f"{self.db.path!r} is not a replica of the journal on {redact(self.pg.url)}: the file is at "
                f"position {local[0]}, the server at {self.base}"
            )
        self._watch()

    def _watch(self) -> None:
        if self.tables:
            # from here on, what changes in the projections is this transaction's, to be sent with it
            self.projector.recreated.clear()
            self._session = session = apsw.Session(self.db.conn, "main")
            session.table_filter(self.tables.__contains__)  # (tables attached as they are first written)
            session.attach(None)

    def commit(self, conn: apsw.Connection) -> None:
        try:
            if self.optimistic_tx:
                self._commit_optimistic(conn)
            else:
                self._commit_locked(conn)
        finally:
            self._ended()

    def _commit_locked(self, conn: apsw.Connection) -> None:
        psycopg = _psycopg()
        rows = list(journal.read_rows(conn, after=self.base))
        # an erasure made by this transaction (Kernel.erase): its digests, then the payloads blanked
        erasing: list[tuple[Any, ...]] = [tuple(r) for r in conn.execute(
            "SELECT position, data_digest, meta_digest, erasure FROM erased WHERE erasure > ? ORDER BY position",
            (self.base,))] if rows and any(r[3] == "journal.payloads_erased" for r in rows) else []
        raw = self.pg._writer_raw()
        committing = False
        # (set before the COMMIT: its notification may reach the follower first, which then need not pull)
        self.sending = rows[-1][0] if rows else 0
        head = rows[-1][0] if rows else self.base
        try:
            tables = self._tables(raw, conn, head) if self.tables and (rows or self.refresh) else None
            # The server's copies of tables this process does not keep (another process's projections, or
            # every table with server_tables=False) may hold what an erasure removes: emptied, and marked so
            # that the next process keeping them copies them whole.
            others = [str(n) for (n,) in raw.execute("SELECT name FROM projection_tables")
                      if n not in self.tables] if erasing else []
            with _pipeline(raw):
                for name in others:
                    raw.execute(f'DELETE FROM "{name.replace(chr(34), chr(34) * 2)}"')
                if others:
                    raw.execute("UPDATE projection_tables SET position = -1 WHERE name = ANY(%s)", (others,))
                self._send(raw, rows, tables)
                if not rows and tables is not None:
                    raw.execute("UPDATE journal_head SET tables_position = %s, tables = %s", (head, self.digest))
                if erasing:
                    with raw.cursor() as cur:
                        cur.executemany("INSERT INTO erased (position, data_digest, meta_digest, erasure) "
                                        "VALUES (%s, %s, %s, %s)", erasing)
                    raw.execute("UPDATE journal SET data = %s, meta = NULL WHERE position = ANY(%s)",
                                (journal.ERASED_DATA, [e[0] for e in erasing]))
                for name, (position, at) in self._positions.items():
                    raw.execute(_MOVE_CONSUMER, (name, position, at))
                if self.compacting is not None:
                    self._send_compaction(raw, self.compacting)
                if self.rebasing is not None:
                    r = self.rebasing
                    raw.execute("UPDATE base_image SET projections = %s, page_size = %s, image = %s "
                                "WHERE position = %s", (r.projections, r.page_size, r.image, r.position))
                    raw.execute("DELETE FROM base_payloads WHERE position = ANY(%s)", (r.dropped,))
                committing = True
                raw.execute("COMMIT")
            self.answered = time.monotonic()
            self.known = max(self.known, rows[-1][0] if rows else self.base)
            if tables is not None:
                self.kept = (head, self.digest)
        except psycopg.Error as e:
            self.pg._rollback(self.pg._writer)  # type: ignore[arg-type]
            if committing and isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                raise CommitOutcomeUnknown(
                    f"COMMIT on PostgreSQL failed ({type(e).__name__}: {str(e).strip()}); the transaction may or "
                    "may not be durable. Retry with the same command_id or event_ids: a retry of what committed "
                    "appends nothing"
                ) from e
            raise translate(e, "committing on PostgreSQL (nothing was written)") from e
        except BaseException:
            if not committing:  # refused before the COMMIT was sent (a value a server table cannot hold)
                self.pg._rollback(self.pg._writer)  # type: ignore[arg-type]
            raise
        finally:
            self._positions.clear()
            self.compacting = self.rebasing = None
            self.sending = 0
            self._unwatch()

    def _send(self, raw: Any, rows: list[tuple[Any, ...]], tables: pgtables.Changes | None) -> None:
        """Into the open pipeline: the changes to the server's tables, the
        transaction's rows, the head moved to the last (with the tables'
        state when they were kept), and the NOTIFY of it."""
        if tables is not None:
            tables.send(raw)
        if not rows:
            return
        with raw.cursor() as cur:
            cur.executemany(dialect(journal.INSERT), rows)
        last = rows[-1]
        if tables is None:
            raw.execute("UPDATE journal_head SET position = %s, hash = %s, recorded_at = %s",
                        (last[0], last[10], last[9]))
        else:
            raw.execute("UPDATE journal_head SET position = %s, hash = %s, recorded_at = %s, tables_position = %s, "
                        "tables = %s", (last[0], last[10], last[9], last[0], self.digest))
        raw.execute("SELECT pg_notify(%s, %s)", (self.pg.channel, str(last[0])))

    def _commit_optimistic(self, conn: apsw.Connection) -> None:
        """Commit a transaction decided on the replica alone: in one round
        trip, the check that the journal is still where the replica read it
        (``expect_head``: it takes the lock; else the transaction aborts and
        ``Stale`` makes the group run again under the lock), this
        transaction's changes to the server's tables, its rows, the head and
        COMMIT."""
        psycopg = _psycopg()
        rows = list(journal.read_rows(conn, after=self.base))
        session, self._session = self._session, None
        try:
            if self._positions or self.compacting or self.rebasing or any(
                    r[3] == "journal.payloads_erased" for r in rows) or self.projector.recreated & self.tables.keys():
                raise Stale("not a transaction to commit optimistically")  # (the lock first, then all of it again)
            changes = None
            if self.tables and rows:
                changes = pgtables.Changes(self.tables)
                with translating("reading the replica's changes for the server's projection tables"):
                    if session is not None and not session.is_empty:
                        changes.add(session.changeset(), skip=set())
        finally:
            if session is not None:
                session.close()
        raw = self.pg._writer_raw()
        pid = raw.info.backend_pid
        committing = False
        self.sending = rows[-1][0] if rows else 0
        head = rows[-1][0] if rows else self.base
        early: BaseException | None = None  # an error read back while the statements were being sent
        try:
            with raw.pipeline():
                try:
                    raw.execute("BEGIN")
                    check = raw.execute(_EXPECT, (self.base, self.base_hash, self.server_base, self.kept[0],
                                                  self.digest if self.tables else None, *_window(self.server_now)))
                    self._send(raw, rows, changes)
                    committing = True
                    raw.execute("COMMIT")
                except psycopg.Error as e:
                    # (the end of the block then reports the pipeline aborted: this is what aborted it)
                    early = e
            if early is not None:
                raise early
            found = check.fetchone()
            self.answered = time.monotonic()
            self.offset = _behind(int(found[0]))
            self.known = max(self.known, head)
            if changes is not None:
                self.kept = (head, self.digest)
        except psycopg.Error as late:
            error = early if early is not None else late
            self.pg._rollback(self.pg._writer)  # type: ignore[arg-type]
            if getattr(error, "sqlstate", None) == _STALE:
                self.contended_until = time.monotonic() + 0.5
                raise Stale(str(error).strip()) from error
            if raw.closed or raw.broken:  # (a lock timeout at the check is not this: it committed nothing)
                # The connection was lost (a restart, a failover, a network fault): whether the rows
                # committed is read from the server once the session that sent them is gone.
                outcome = False if not rows else self._outcome(pid, rows[-1])
                if outcome is False:  # nothing was written: the group runs again, under the lock
                    raise Stale(f"the connection was lost before the commit ({str(error).strip()})") from error
                if outcome is None:
                    raise CommitOutcomeUnknown(
                        f"COMMIT on PostgreSQL failed ({type(error).__name__}: {str(error).strip()}); the "
                        "transaction may or may not be durable. Retry with the same command_id or event_ids: a "
                        "retry of what committed appends nothing"
                    ) from error
                self.known = max(self.known, head)  # (it did commit: the replica commits it too)
                return
            raise translate(error, "committing on PostgreSQL (nothing was written)") from error
        except BaseException:
            if not committing:
                self.pg._rollback(self.pg._writer)  # type: ignore[arg-type]
            raise
        finally:
            self._positions.clear()
            self.sending = 0

    def _ended(self) -> None:
        self.writing, self.wrote = False, time.monotonic()

    def _outcome(self, pid: int, last: tuple[Any, ...]) -> bool | None:
        """After the connection of an optimistic commit was lost: whether its
        last row is on the server (True), is not and never will be (False:
        the session that sent it is gone), or cannot be known (None: the
        server out of reach, or that session still there after the busy
        timeout)."""
        psycopg = _psycopg()
        try:
            conn = self.pg._connect()
        except JournalError:
            return None
        try:
            deadline = time.monotonic() + self.pg._busy_s
            while conn.raw.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
            row = conn.raw.execute("SELECT hash FROM journal WHERE position = %s", (last[0],)).fetchone()
            return row is not None and bytes(row[0]) == bytes(last[10])
        except psycopg.Error:
            return None
        finally:
            conn.raw.close()

    def rollback(self) -> None:
        self._ended()
        self._positions.clear()
        self.compacting = self.rebasing = None
        self._unwatch()
        if self.pg._writer is not None:
            self.pg._rollback(self.pg._writer)

    # compaction --------------------------------------------------------------

    def _behind(self, position: int) -> str:
        return (f"{self.db.path!r} cannot follow the journal on {redact(self.pg.url)}: the replica holds it up "
                f"to position {position}, and the server's journal was compacted after that (its base is "
                f"{self.server_base}; the events up to it are in an archive only): open the kernel with a new "
                "replica (the default, or remove this file), which starts from the server's base")

    def _send_compaction(self, raw: Any, base: compaction.Base) -> None:
        """The base a compaction recorded in the replica, recorded on the server
        in the same transaction, and the moved rows deleted there too (in the
        COMMIT's pipeline)."""
        p = base.position
        raw.execute("INSERT INTO journal_base (position, hash, recorded_at, archive, compacted_at) "
                    "VALUES (%s, %s, %s, %s, %s)", (p, base.hash, base.recorded_at, base.archive, base.compacted_at))
        raw.execute("DELETE FROM base_image")
        raw.execute("INSERT INTO base_image (position, projections, page_size, image) VALUES (%s, %s, %s, %s)",
                    (p, base.projections, base.page_size, base.image))
        raw.execute("INSERT INTO base_streams (stream, version) SELECT stream, max(version) FROM journal "
                    "WHERE position <= %s GROUP BY stream ON CONFLICT (stream) DO UPDATE SET version = "
                    "excluded.version", (p,))
        raw.execute("INSERT INTO base_correlations (correlation_id) SELECT DISTINCT correlation_id FROM journal "
                    "WHERE position <= %s AND correlation_id IS NOT NULL ON CONFLICT DO NOTHING", (p,))
        raw.execute("DELETE FROM base_payloads")
        if base.payloads:
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO base_payloads (position, stream, type, schema, data, correlation_id) "
                                "VALUES (%s, %s, %s, %s, %s, %s)", base.payloads)
        raw.execute("DELETE FROM erased WHERE position <= %s", (p,))
        raw.execute("DELETE FROM journal WHERE position <= %s", (p,))
        raw.execute("UPDATE journal_head SET base = %s", (p,))
        raw.execute("SELECT pg_notify(%s, %s)", (self.pg.channel, f"{_BASE_NOTICE}{p}"))
        self.server_base = p

    def follow_base(self) -> int:
        """Record in the replica a compaction made on the server since it last
        looked (its base row, the projections there as a snapshot built here,
        the moved rows deleted, the file rewritten), as :meth:`compaction.record`
        does on SQLite; the archive stays where it was written. Returns the
        replica's base position."""
        with self.db.statement("reading the replica's base") as conn:
            mine = journal.base(conn)
            head = journal.head(conn)[0]
        start = 0 if mine is None else mine[0]
        target = max(self.server_base, self.pg.base_notified)
        if target <= start:
            self._followed_base = start
            return start
        found = self.pg._query("reading the journal's base", "SELECT position, hash, recorded_at, archive, "
                               "compacted_at FROM journal_base WHERE position > %s ORDER BY position", (start,))
        if not found:
            self._followed_base = start
            return start
        if head < int(found[-1][0]):
            head = self.pull()
            if head < int(found[-1][0]):
                raise JournalError(self._behind(head))
        where = "following a compaction of the journal on PostgreSQL"
        for position, hash_, recorded_at, archive, compacted_at in found:
            with translating(where):
                img, size = compaction._base_image(self.db, self.projector, int(position))
            with self.db.write(where, shared=False) as conn:
                now = journal.base(conn)
                if now is not None and now[0] >= int(position):
                    continue  # (recorded meanwhile: this process's own compaction, committing as it was notified)
                row = conn.execute("SELECT hash FROM journal WHERE position = ?", (int(position),)).fetchone()
                if row is None or bytes(row[0]) != bytes(hash_):
                    raise JournalCorrupt(f"{self.db.path!r} is not a replica of the journal on "
                                         f"{redact(self.pg.url)}: its event {position} is not the server's base")
                compaction.record(conn, self.projector, int(position), bytes(hash_), int(recorded_at), str(archive),
                                  int(compacted_at), img, size)
            start = int(position)
        self.server_base = max(self.server_base, start)
        self._followed_base = start
        self.db.vacuum(where)
        self.truncate_due = True  # (the WAL truncated by the follower's next round)
        return start

    def projections_at_base(self) -> list[str]:
        """The projections the server's image of the journal's base holds
        (none before a compaction)."""
        found = self.pg._query("reading the projections at the journal's base", "SELECT projections FROM base_image")
        try:
            return [] if not found else list(msgspec.json.decode(str(found[0][0]), type=dict[str, int]))
        except msgspec.MsgspecError as e:
            raise JournalError(f"the projections at the journal's base on {redact(self.pg.url)} are not "
                               f"readable: {e}") from e

    def projections_known(self) -> list[str]:
        """The projections the server knows of: those whose tables it keeps
        (any process's, kept with ``server_tables=True``, the default) and
        those the image of the journal's base holds."""
        names = set(self.projections_at_base())
        for (entry,) in self.pg._query("reading the projections' tables on the server",
                                       "SELECT entry FROM projection_tables"):
            # an entry is 'table:projection@version:digest'
            names.add(str(entry).rsplit(":", 1)[0].rsplit("@", 1)[0].rsplit(":", 1)[-1])
        return sorted(names)

    def start_from_base(self) -> int:
        """Start an empty replica of a compacted journal at the server's base:
        in one snapshot of the server, its base rows, each stream's version,
        the correlation ids and payloads kept, and the projections there (the
        image the compaction stored, which must hold this process's
        projections at their versions); :meth:`pull` goes on from there.
        Returns the base (0: the journal is not compacted)."""
        with self.db.statement("reading the replica's head") as conn:
            if journal.head(conn)[0]:
                return 0
        psycopg = _psycopg()
        pg = self.pg._connect()
        try:
            with pg.raw.transaction():
                pg.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                bases = [tuple(r) for r in pg.raw.execute(
                    "SELECT position, hash, recorded_at, archive, compacted_at FROM journal_base ORDER BY position")]
                if not bases:
                    return 0
                image = pg.raw.execute("SELECT position, projections, page_size, image FROM base_image").fetchone()
                streams = [tuple(r) for r in pg.raw.execute("SELECT stream, version FROM base_streams")]
                correlations = [tuple(r) for r in pg.raw.execute("SELECT correlation_id FROM base_correlations")]
                payloads = [tuple(r) for r in pg.raw.execute(
                    "SELECT position, stream, type, schema, data, correlation_id FROM base_payloads")]
        except psycopg.Error as e:
            raise translate(e, "reading the server's base into the replica") from e
        finally:
            pg.raw.close()
        position = int(bases[-1][0])
        if image is None or int(image[0]) != position or not snapshots.covers(str(image[1]), self.projector):
            raise JournalError(
                f"{self.db.path!r} cannot start as a replica of the journal on {redact(self.pg.url)}: the journal "
                f"starts after position {position} (the events before it are in the archive {bases[-1][3]!r}), and "
                f"the projections stored there are {'missing' if image is None else repr(str(image[1]))}, which "
                f"lack some of this process's {snapshots.key(self.projector)!r} (a projection added or changed "
                "version since the compaction)"
            )
        with self.db.write("starting the replica at the server's base", shared=False) as conn:
            conn.executemany("INSERT INTO journal_base (position, hash, recorded_at, archive, compacted_at) "
                             "VALUES (?, ?, ?, ?, ?)", bases)
            conn.executemany("INSERT INTO base_streams (stream, version) VALUES (?, ?)", streams)
            conn.executemany("INSERT INTO base_correlations (correlation_id) VALUES (?)", correlations)
            conn.executemany("INSERT INTO base_payloads (position, stream, type, schema, data, correlation_id) "
                             "VALUES (?, ?, ?, ?, ?, ?)", payloads)
            compaction._store_full(conn, self.projector, position, bytes(image[3]), int(image[2]),
                                   int(bases[-1][4]), projections=str(image[1]))
        self.projector.rebuild(self.db, [m.NAME for m in self.projector.modules])  # (the projections at the base)
        self.server_base = max(self.server_base, position)
        return position

    # the projections' tables on the server ---------------------------------

    def _tables(self, raw: Any, conn: apsw.Connection, head: int) -> pgtables.Changes:
        """What brings the server's tables from the lock's head to ``head``
        (the replica's, about to be committed): this transaction's changes
        when the server's tables are the ones this replica keeps, at the
        lock's head; else, first, each table not known to be there copied
        whole (which this sends at once, outside the pipeline)."""
        changes = pgtables.Changes(self.tables)
        whole = self.projector.recreated & self.tables.keys()
        session, self._session = self._session, None
        try:
            with translating("reading the replica's changes for the server's projection tables"):
                if self.kept != (self.base, self.digest):
                    whole |= self._slow(raw, conn, head, whole)
                elif whole:
                    pgtables.copy_whole(raw, conn, [(self.tables[name], None) for name in sorted(whole)])
                if session is not None and not session.is_empty:
                    changes.add(session.changeset(), skip=whole)
        finally:
            if session is not None:
                session.close()
        return changes

    def _slow(self, raw: Any, conn: apsw.Connection, head: int, rebuilt: set[str]) -> set[str]:
        """The server's tables were last kept by a process keeping others, or
        not at the lock's head (a journal written without them): learn each
        table's state, copy whole those not at the head, and record them all
        at ``head``. The names copied whole."""
        psycopg = _psycopg()
        kept_position, digest = self.kept
        found = raw.execute("SELECT entries FROM table_sets WHERE tables = %s", (digest,)).fetchone()
        kept = [] if found is None else list(found[0])
        known = {str(name): (str(entry), kept_position if entry in kept else int(position))
                 for name, entry, position in raw.execute("SELECT name, entry, position FROM projection_tables")}
        chosen: list[tuple[pgtables.Table, str | None]] = []
        for name, table in sorted(self.tables.items()):
            have = known.get(name)
            mode = "create" if have is None else "replace" if have[0] != table.entry else None
            if mode is None and have is not None and have[1] == self.base and name not in rebuilt:
                continue
            chosen.append((table, mode))
        try:
            pgtables.copy_whole(raw, conn, chosen)
        except psycopg.errors.DuplicateTable as e:
            name = next((t.name for t, mode in chosen if mode == "create" and f'"{t.name}"' in str(e)), "?")
            projection = self.tables[name].projection if name in self.tables else "?"
            raise JournalError(
                f"committing on PostgreSQL refused: schema {self.pg.schema!r} holds a table {name!r} that is "
                f"not eventkernel's, and projection {projection!r} keeps a table of that name there; "
                "rename or move it"
            ) from e
        whole = {t.name for t, _ in chosen}
        # those the last committer kept were at its position; this transaction's are at its head
        raw.execute("UPDATE projection_tables SET position = %s WHERE entry = ANY(%s)", (kept_position, kept))
        raw.execute("INSERT INTO table_sets (tables, entries) VALUES (%s, %s) ON CONFLICT (tables) DO NOTHING",
                    (self.digest, self.entries))
        with raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO projection_tables (name, entry, position) VALUES (%s, %s, %s) ON CONFLICT (name) "
                "DO UPDATE SET entry = excluded.entry, position = excluded.position",
                [(t.name, t.entry, head) for t in self.tables.values()])
        return whole

    def _unwatch(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.close()
            except apsw.Error:
                pass  # (its connection closed by a failure)

    def refresh_tables(self) -> None:
        """Bring the server's tables up to date now when they are not known
        to be (opening a kernel: after a copy into the server, a new version
        of a projection, a process keeping other tables)."""
        if not self.tables:
            return
        row = self.pg._query("reading the server's tables' state", "SELECT position, tables_position, tables "
                             "FROM journal_head")[0]
        if (int(row[1]), str(row[2])) == (int(row[0]), self.digest):
            return
        self.refresh = True
        try:
            with self.db.write("bringing the server's projection tables up to date"):
                pass
        finally:
            self.refresh = False

    def verify(self, local: Callable[[], VerifyReport], anchor: tuple[int, str] | None) -> VerifyReport:
        """``Kernel.verify`` of a replica: the server's journal (its chain,
        ``anchor``), then the replica brought up to it and checked as any file
        (its chain, its projections against a rebuild), and the replica's head
        row the server's. The report's head is the server's."""
        server = self.pg.verify(anchor=anchor)
        self.pull()
        mine = local()
        problems = [f"on the server: {p}" for p in server.problems]
        problems += [f"in the replica {self.db.path!r}: {p}" for p in mine.problems]
        bad = [p for p in (server.first_bad_position, mine.first_bad_position) if p is not None]
        if mine.head:
            with self.pg._statement("reading the server's row at the replica's head") as pg:
                row = pg.raw.execute("SELECT hash FROM journal WHERE position = %s", (mine.head,)).fetchone()
            if row is None or bytes(row[0]).hex() != mine.head_hash:
                problems.append(f"the replica's row {mine.head} is not the server's: the replica is of another "
                                "journal, or one of the two was changed")
                bad.append(mine.head)
        notes = list(mine.notes)
        if self.tables:
            problems += self._compare_tables(notes)
        return VerifyReport(ok=not problems, problems=problems, head=server.head, head_hash=server.head_hash,
                            first_bad_position=min(bad) if bad else None, notes=notes)

    def _compare_tables(self, notes: list[str], attempts: int = 5) -> list[str]:
        """The server's copy of each projection table against the replica's,
        row for row, both as of the same head (a snapshot of each; the
        replica pulled again while the server moves on). Problems found;
        ``notes`` says when the copies could not be compared."""
        psycopg = _psycopg()
        conn = self.pg._connect()  # (a transaction of its own: never the reader other threads share)
        try:
            for _ in range(attempts):
                with self.db.read("comparing the server's tables with the replica's") as local:
                    head = journal.head(local)[0]
                    try:
                        with conn.raw.transaction():
                            conn.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            position, kept_at, digest = conn.raw.execute(
                                "SELECT position, tables_position, tables FROM journal_head").fetchone()
                            if int(position) != head:
                                server = None
                            elif (int(kept_at), str(digest)) != (head, self.digest):
                                notes.append(
                                    "the server's projection tables were not compared: the last commit was made "
                                    "by a process keeping other tables (or none); the next commit here copies "
                                    "them whole")
                                return []
                            else:
                                server = {name: {tuple(r) for r in conn.raw.execute(t.server_select)}
                                          for name, t in self.tables.items()}
                    except psycopg.Error as e:
                        raise translate(e, "reading the server's projection tables") from e
                    if server is not None:
                        problems = []
                        for name, table in sorted(self.tables.items()):
                            try:
                                mine = {table.fit(r) for r in local.execute(table.select)
                                        if not any(r[i] is None for i in table.pk)}
                            except KernelError as e:
                                problems.append(f"the replica's table {name!r} cannot be held on the server: {e}")
                                continue
                            if server[name] != mine:
                                problems.append(
                                    f"the server's table {name!r} is not the replica's at position {head}: "
                                    f"{len(server[name] - mine)} rows only on the server, {len(mine - server[name])} "
                                    "only in the replica")
                        return problems
                self.pull()
            notes.append(f"the server's projection tables were not compared: the journal moved on {attempts} times "
                         "while they were read")
            return []
        finally:
            conn.raw.close()

    @contextmanager
    def current(self, doing: str) -> Iterator[tuple[apsw.Connection, int] | None]:
        """A read of the replica that is a read of the server's state at one
        moment, without its write lock: the server's head and clock (one
        round trip), then a snapshot of the replica, yielded with the server's
        time when it holds exactly that head (else None: the caller takes the
        lock). What a command that would change nothing can answer from."""
        row = self.pg._query(doing, f"SELECT position, {_NOW_MS} FROM journal_head")[0]
        with self.db.read(doing) as conn:
            yield (conn, int(row[1])) if journal.head(conn)[0] == int(row[0]) else None

    # consumers' positions, kept on the server ------------------------------

    def consumer_position(self, name: str) -> int:
        """A consumer's position: inside a write transaction the server's under
        its lock (with this transaction's own move), else the server's now."""
        if self.optimistic_tx and self.db.shared_open and self.db.owns_write():
            raise Stale("a consumer's position is read under the lock")
        if name in self._positions and self.db.shared_open and self.db.owns_write():
            return self._positions[name][0]
        if self.db.shared_open and self.db.owns_write():
            try:
                row = self.pg._writer_raw().execute(_CONSUMER, (name,)).fetchone()
            except _psycopg().Error as e:
                raise translate(e, f"reading consumer {name!r}'s position") from e
        else:
            found = self.pg._query(f"reading consumer {name!r}'s position", _CONSUMER, (name,))
            row = found[0] if found else None
        return 0 if row is None else int(row[0])

    def move_consumer(self, name: str, position: int, at: int) -> None:
        """Move a consumer in the open write transaction: sent with its COMMIT."""
        if self.optimistic_tx:
            raise Stale("a consumer is moved under the lock")
        self._positions[name] = (position, at)

    # following ---------------------------------------------------------------

    def _apply(self, conn: apsw.Connection, rows: list[tuple[Any, ...]], local: tuple[int, bytes, int],
               erased: dict[int, tuple[Any, ...]]) -> None:
        """Write the server's rows after the file's head into the file and fold
        them into its projections, checking that they continue its chain (an
        erased payload by its digests). An erasure among them of events the
        file already held is done in the file too: their payloads blanked,
        the projections that folded them rebuilt without them (and the file
        rewritten by the follower, :meth:`_rewrite`)."""
        position, prev = local[0], local[1]
        if rows and rows[0][0] > position + 1:
            found = self.pg.base()
            if found is not None and found[0] > position:  # the rows in between are in an archive only
                self.server_base = max(self.server_base, found[0])
                raise JournalError(self._behind(position))
        for row in rows:
            if row[0] != position + 1 or journal.expected_hash(prev, row, erased.get(row[0])) != bytes(row[10]):
                raise JournalCorrupt(
                    f"{self.db.path!r} is not a replica of the journal on {redact(self.pg.url)}: the server's row "
                    f"{row[0]} does not continue the file's chain at position {position}"
                )
            position, prev = row[0], bytes(row[10])
        conn.executemany(journal.INSERT, rows)
        # the digests of payloads erased on the server, of these rows or of rows the file held
        mine = sorted(p for p in erased if p <= position)
        conn.executemany(
            "INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (position) DO NOTHING", [erased[p] for p in mine])
        self.projector._fold_rows(conn.cursor(), rows, self.projector.modules)
        self.db.head_cache = (int(rows[-1][0]), bytes(rows[-1][10]), int(rows[-1][9]))
        self.db.appended = True
        if mine:
            self._forget(conn, mine)
        if any(r[3] == "journal.payloads_erased" and r[6] is not None and '"archive"' in r[6] for r in rows):
            self._rebase(conn)

    def _forget(self, conn: apsw.Connection, positions: list[int]) -> None:
        """Blank the payloads at ``positions`` (erased on the server) that the
        file still holds, and rebuild the projections that fold their events."""
        held = [(p, t) for p in positions for (t,) in conn.execute(
            "SELECT type FROM journal WHERE position = ? AND (data != ? OR meta IS NOT NULL)",
            (p, journal.ERASED_DATA))]
        if not held:
            return
        conn.pragma("secure_delete", True)
        try:
            conn.executemany("UPDATE journal SET data = ?, meta = NULL WHERE position = ?",
                             [(journal.ERASED_DATA, p) for p, _ in held])
            snapshots.drop_from(conn, held[0][0])
            types = {t for _, t in held}
            touched = [m.NAME for m in self.projector.modules if not types.isdisjoint(m.HANDLES)]
            if touched:
                self.projector.rebuild(self.db, touched)
        finally:
            conn.pragma("secure_delete", False)
        self.forgotten += 1

    def _rebase(self, conn: apsw.Connection) -> None:
        """After following an erasure that reached the archive (events before
        the base): the projections at the base as the server now holds them
        (made again without the erased events), the payloads it no longer
        keeps dropped, every projection rebuilt, the file rewritten."""
        mine = journal.base(conn)
        if mine is None:
            return
        found = self.pg._query("reading the projections at the journal's base",
                               "SELECT projections, page_size, image FROM base_image WHERE position = %s", (mine[0],))
        kept = {int(r[0]) for r in self.pg._query("reading the payloads kept at the base",
                                                  "SELECT position FROM base_payloads")}
        if not found or not snapshots.covers(str(found[0][0]), self.projector):
            # (a newer compaction replaced it, or it lacks some of this process's projections: the base
            # stays as this replica made it until it follows that compaction; the payloads go in any case)
            log.warning("the projections at the base of %r could not be made again after an erasure",
                        self.db.path)
        else:
            conn.pragma("secure_delete", True)
            try:
                snapshots.drop_from(conn, 0, keep_base=False)
                compaction._store_full(conn, self.projector, mine[0], bytes(found[0][2]), int(found[0][1]),
                                       mine[2], projections=str(found[0][0]))
            finally:
                conn.pragma("secure_delete", False)
        gone = [p for (p,) in conn.execute("SELECT position FROM base_payloads") if p not in kept]
        conn.executemany("DELETE FROM base_payloads WHERE position = ?", [(p,) for p in gone])
        self.projector.rebuild(self.db, [m.NAME for m in self.projector.modules])
        self.forgotten += 1

    def _rewrite(self) -> None:
        """After following an erasure: rewrite the file (VACUUM), so that no
        byte of the erased payloads stays in its free space."""
        due = self.forgotten
        if due > self.rewritten:
            self.db.vacuum("rewriting the replica after an erasure")  # (raises when busy: again later)
            self.rewritten, self.truncate_due = due, True
        if self.truncate_due:
            try:
                self.db.checkpoint("truncate")  # the WAL's older page images held the payloads too
            except JournalError:
                return  # a reader holds the WAL: again after the next wait
            wal = self.db.path + "-wal"
            self.truncate_due = os.path.exists(wal) and os.path.getsize(wal) > 0

    def pull(self, batch: int = 5_000) -> int:
        """Fold what the server holds past the file's head, in transactions of
        ``batch`` rows; the file's head."""
        while True:
            with self.db.statement("reading the replica's head") as conn:
                local = journal.head(conn)[0]
            rows = [tuple(r) for r in self.pg._pages("following the journal", local, batch)]
            if not rows:
                return local
            with self.pg._statement("following the journal") as pg:
                erased = {r[0]: tuple(r) for r in pg.raw.execute(_ERASED_AFTER, (local, local))}
            with self.db.write("following the journal on PostgreSQL", shared=False) as conn:
                head = journal.head_row(conn)
                rows = [r for r in rows if r[0] > head[0]]
                if rows:
                    self._apply(conn, rows, head, erased)

    def seed(self, batch: int = 50_000) -> int:
        """Fill an empty replica from the server's tables instead of folding
        the whole journal: in one snapshot of the server, its journal up to
        the position its tables reflect (each row's chain checked, as
        :meth:`pull` checks them) and the tables themselves, both in pages of
        ``batch`` rows (nothing is held whole in memory); the projections
        with a table the server does not hold (a full-text index) are folded
        here. Done only when the server's tables are this replica's set at
        some position and no erasure after it blanked rows before it (the
        tables would still hold what it erased); then :meth:`pull` goes on
        from there. A replica of a compacted journal, started at its base
        (:meth:`start_from_base`), copies the rows after the base. Returns the
        position seeded to (0: not seeded)."""
        if not self.tables or any("numeric" in t.types for t in self.tables.values()):
            return 0  # (a numeric column cannot give back the int or float SQLite held)
        with self.db.statement("reading the replica's head") as conn:
            if conn.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is not None:
                return 0
            start, start_hash = journal.head(conn)  # (a compacted journal's replica: started at its base)
        psycopg = _psycopg()
        pg = self.pg._connect()  # (one snapshot of the server for the whole copy)
        try:
            with pg.raw.transaction():
                pg.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                kept_at, digest, base = pg.raw.execute(
                    "SELECT tables_position, tables, base FROM journal_head").fetchone()
                upto = int(kept_at)
                erased = {int(r[0]): tuple(r) for r in pg.raw.execute(
                    "SELECT position, data_digest, meta_digest, erasure FROM erased WHERE position <= %s", (upto,))}
                if str(digest) != self.digest or not upto or any(e[3] > upto for e in erased.values()) \
                        or int(base) != start or upto < start:
                    return 0
                position, prev = start, start_hash
                with pg.raw.cursor(name="eventkernel_seed") as cur:
                    cur.itersize = batch
                    cur.execute(f"SELECT {journal.COLUMNS} FROM journal WHERE position > %s AND position <= %s "
                                "ORDER BY position", (start, upto))
                    while rows := [tuple(r) for r in cur.fetchmany(batch)]:
                        for row in rows:
                            if row[0] != position + 1 or journal.expected_hash(
                                    prev, row, erased.get(row[0])) != bytes(row[10]):
                                raise JournalCorrupt(
                                    f"{self.db.path!r} cannot be a replica of the journal on {redact(self.pg.url)}: "
                                    f"the server's row {row[0]} does not continue its chain at position {position}")
                            position, prev = row[0], bytes(row[10])
                        with self.db.write("copying the journal from PostgreSQL", shared=False) as conn:
                            conn.executemany(journal.INSERT, rows)
                if position != upto:
                    raise JournalCorrupt(f"the journal on {redact(self.pg.url)} ends at {position}, before the "
                                         f"position {upto} its tables reflect")
                # The tables in pages, each written as it arrives, in one transaction of the replica.
                with self.db.write("copying the server's tables into the replica", shared=False) as conn:
                    conn.executemany(
                        "INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?)",
                        [erased[p] for p in sorted(erased)])
                    for name, table in self.tables.items():
                        conn.execute(f'DELETE FROM main."{name}"')
                        columns = ", ".join(f'"{c}"' for c in table.columns)
                        insert = f'INSERT INTO main."{name}" ({columns}) VALUES ({", ".join("?" * len(table.columns))})'
                        for page in table.read(pg.raw, batch):
                            conn.executemany(insert, page)
                    folded = [m for m in self.projector.modules
                              if any(t not in self.tables for t in self.projector.tables[m.NAME])]
                    if folded:
                        types = sorted({t for m in folded for t in m.HANDLES})
                        self.projector._fold_rows(conn.cursor(), journal.read_rows(conn, types=types), folded)
                    conn.execute("UPDATE projection_positions SET position = ?", (upto,))
        except psycopg.Error as e:
            raise translate(e, "copying the server's journal and tables into the replica") from e
        finally:
            pg.raw.close()
        self.seeded = upto
        return upto

    def catch_up(self) -> int:
        """Fold now what the server holds past the replica's head, and follow
        a compaction made since, as the following thread does: one round
        trip (the server's head and base) when there is nothing new. The
        replica's head."""
        with self.db.statement("reading the replica's head") as conn:
            local = journal.head(conn)[0]
        position, base = self.pg._query("reading the server's head", "SELECT position, base FROM journal_head")[0]
        if int(position) > local:
            local = self.pull()
        if max(self.server_base, self.pg.base_notified, int(base)) > self._followed_base:
            self.server_base = max(self.server_base, int(base))
            self.follow_base()
        return local

    def start(self) -> None:
        """Follow the server in a thread of its own until :meth:`close`."""
        self._follower = threading.Thread(target=self._follow, name="eventkernel-replica", daemon=True)
        self._follower.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                # (not woken by this process's own commits: they are in the replica already, or about to be)
                if self.pg._await(self._seen(), 0.5, fresh=False) > self._seen() and not self._stop.is_set():
                    self._pause()
                    if self.pg.heard > self._seen() and not self._stop.is_set():
                        self.pull()
                if max(self.server_base, self.pg.base_notified) > self._followed_base and not self._stop.is_set():
                    self.follow_base()
                self._rewrite()
            except KernelClosed:
                return
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("following the journal on %s failed; trying again", redact(self.pg.url), exc_info=True)
                self._stop.wait(1.0)

    def _pause(self) -> None:
        """Wait while this process writes (a write transaction of its own open
        or ended less than ``DEFER_S`` ago), at most ``DEFER_MAX_S``: each of
        its writes folds what the others committed when it takes the lock, so
        a pull of the same rows beside them would be work done twice (and
        would wait for the replica's write lock anyway)."""
        until = time.monotonic() + DEFER_MAX_S
        while not self._stop.is_set():
            now = time.monotonic()
            left = min(DEFER_S if self.writing else self.wrote + DEFER_S - now, until - now)
            if left <= 0:
                return
            self._stop.wait(left)

    def _seen(self) -> int:
        """The server's head as far as this process knows it: in its replica,
        made by it, or being committed by it."""
        with self.db.statement("reading the replica's head") as conn:
            local = journal.head(conn)[0]
        return max(local, self.known, self.sending)

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None and self._follower is not threading.current_thread():
            self.pg.interrupt()
            self._follower.join(10)
        self.pg.close()


def open_journal(
    url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    clock: Clock | None = None,
    create: bool = True,
    busy_timeout_ms: int = 10_000,
    statement_timeout_ms: int = 60_000,
    idle_in_transaction_timeout_ms: int = 60_000,
    group_commit: bool = True,
    one_round_trip: bool | None = None,
) -> PgJournal:
    """Open (creating when ``create``) the journal in ``schema`` of the
    PostgreSQL database at ``url`` (``postgresql://…`` or a libpq conninfo).

    ``busy_timeout_ms`` bounds the wait for the write lock (PostgreSQL's
    ``lock_timeout``, and the wait for another thread's transaction);
    ``statement_timeout_ms`` any one statement; ``idle_in_transaction_timeout_ms``
    how long the server keeps a transaction whose client went silent (its
    locks released), so a hung client cannot block every writer forever.
    ``clock``: a zero-argument callable of int ms since the epoch; by default
    the server's clock, read under the write lock. ``group_commit``: appends
    of this process's threads share one transaction and one COMMIT when
    they meet (as on SQLite); a lone append waits for no one.
    ``one_round_trip=True`` (with group commit): a group's transaction takes
    one round trip when this process knows the journal's head (see
    :class:`PgJournal`), its time (without ``clock``) this machine's clock
    set to the server's by its last answer and checked under the lock to be
    at most 100 ms behind it, never ahead; ``False``: every transaction
    takes the lock first, its time the server's clock read under it. The
    default, None, is ``False`` with the server's clock and ``True`` with a
    ``clock`` of the caller's."""
    check_text("open_journal", "url", url)
    check_text("open_journal", "schema", schema, max_len=40)
    for name, value in (("busy_timeout_ms", busy_timeout_ms), ("statement_timeout_ms", statement_timeout_ms),
                        ("idle_in_transaction_timeout_ms", idle_in_transaction_timeout_ms)):
        check_int("open_journal", name, value, minimum=0)
    if clock is not None and not callable(clock):
        raise InvalidArgument(f"open_journal refused: clock must be a zero-argument callable, got {clock!r:.60}")
    if one_round_trip is not None and type(one_round_trip) is not bool:
        raise InvalidArgument(f"open_journal refused: one_round_trip must be a bool or None, got "
                              f"{one_round_trip!r:.60}")
    opened = PgJournal(url, schema=schema, clock=clock, create=create, busy_timeout_ms=busy_timeout_ms,
                       statement_timeout_ms=statement_timeout_ms,
                       idle_in_transaction_timeout_ms=idle_in_transaction_timeout_ms, group_commit=group_commit)
    opened.retries_stale = clock is not None if one_round_trip is None else one_round_trip
    return opened


__all__ = ["FORMAT", "PgJournal", "Replica", "dialect", "is_url", "open_journal", "redact"]
