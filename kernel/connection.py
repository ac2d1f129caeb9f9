"""The SQLite connection: settings, write transactions, and the one place
where ``apsw`` errors become :mod:`eventkernel.errors`.

Each setting is a small named function with the SQLite page that explains it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal, NoReturn, Protocol
from urllib.parse import quote

import apsw

from eventkernel import changes, fileformat, migrations
from eventkernel.errors import (
    CommandRejected,
    CommitFull,
    CommitOutcomeUnknown,
    InvalidArgument,
    JournalBusy,
    JournalCorrupt,
    JournalError,
    JournalFull,
    KernelClosed,
    KernelError,
    NotAJournal,
    ReadOnly,
    WrongProcess,
)

log = logging.getLogger("eventkernel")

Synchronous = Literal["full", "normal"]

DEFAULT_BUSY_TIMEOUT_MS = 10_000
# Checkpoint once the WAL holds this many pages (about 16 MiB of 4 KiB pages).
# A checkpoint costs two fsyncs whatever it copies (the WAL's, under NORMAL,
# and the database file's), and a command writes ~10 pages where a bare row
# writes ~2, so SQLite's own bound (1,000 pages) would checkpoint five times
# as often per command: durable commands under NORMAL ran 16-25% faster with
# this bound, and no slower under FULL. Not much larger: after a checkpoint
# the next commits overwrite the WAL's start instead of growing the file (an
# earlier measurement: `--only writes` ran 15-25% slower with 64 MiB than 4).
DEFAULT_WAL_CHECKPOINT_PAGES = 4_000


def translate(e: apsw.Error, doing: str) -> KernelError:
    """Map an apsw exception to the KernelError tree (the cause is kept by the caller)."""
    if isinstance(e, apsw.BusyError | apsw.LockedError):
        return JournalBusy(f"{doing} failed: the database is locked by another connection ({e})")
    if isinstance(e, apsw.FullError):
        return JournalFull(f"{doing} failed: the disk or database is full; nothing was written ({e})")
    if isinstance(e, apsw.CorruptError | apsw.NotADBError):
        return JournalCorrupt(f"{doing} failed: the file is not a sound SQLite database ({e})")
    if isinstance(e, apsw.ReadOnlyError):
        return JournalError(
            f"{doing} failed: the file, its directory or its file system is read-only ({e}); "
            "open it with read_only=True (the CLI's read commands do) to read it"
        )
    return JournalError(f"{doing} failed: {type(e).__name__}: {e}")


def raise_translated(e: apsw.Error, doing: str) -> NoReturn:
    raise translate(e, doing) from e


@contextmanager
def translating(doing: str) -> Iterator[None]:
    """Run a block, turning any apsw error into its KernelError."""
    try:
        yield
    except apsw.Error as e:
        raise translate(e, doing) from e


# --- settings -----------------------------------------------------------------


def _busy_timeout(conn: apsw.Connection, ms: int) -> None:
    """Wait up to ``ms`` for another writer's lock instead of failing at once.
    https://sqlite.org/c3ref/busy_timeout.html"""
    conn.set_busy_timeout(ms)


def _wal(conn: apsw.Connection, timeout_ms: int) -> None:
    """Write-ahead logging: readers never block the writer, one fsync per commit.
    Switching a brand-new file to WAL from several processes at once can return
    BUSY even with a busy timeout, so the switch is retried until the deadline.

    On a new file the switch commits in rollback-journal mode, by deleting the
    journal. Under synchronous=FULL that unlink is not made durable, so a
    power cut soon after creating the file could bring the journal back; it
    would then roll the switch back, leaving an empty database file, and
    SQLite discards a WAL beside an empty file: every acknowledged commit
    would go. synchronous=EXTRA syncs the directory after the unlink; the
    chosen mode is set right after. https://sqlite.org/wal.html ·
    https://sqlite.org/pragma.html#pragma_synchronous"""
    conn.pragma("synchronous", "EXTRA")
    deadline = time.monotonic() + timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            mode = conn.pragma("journal_mode", "wal")
            break
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    if mode != "wal":
        raise JournalError(f"opening {conn.filename!r} failed: journal_mode=WAL was refused (got {mode!r})")


def _synchronous(conn: apsw.Connection, mode: Synchronous) -> None:
    """FULL: a commit is on stable storage when COMMIT returns. NORMAL in WAL
    mode: commits survive a process crash but the last ones may be lost on
    power failure. https://sqlite.org/pragma.html#pragma_synchronous"""
    conn.pragma("synchronous", mode.upper())


def _no_autocheckpoint(conn: apsw.Connection) -> None:
    """Keep checkpoints off the append path, so an I/O error while copying the
    WAL back is never reported to a caller whose commit succeeded.
    https://sqlite.org/c3ref/wal_autocheckpoint.html"""
    conn.wal_autocheckpoint(0)


def _safety(conn: apsw.Connection) -> None:
    """Refuse double-quoted string literals (a typo becomes an error, not a
    string) and do not trust functions in schema objects.
    https://sqlite.org/quirks.html#dblquote · https://sqlite.org/pragma.html#pragma_trusted_schema"""
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
    conn.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
    conn.pragma("trusted_schema", False)


STATEMENTS = 256
"""Prepared statements each connection keeps (APSW's default is 100). APSW
keeps them in the order they finish, not by use: with 100, a projection's
statement that a command runs one time in ten was often dropped before
its next run and prepared again (4,084 prepares in a mixed 20,000-event
workload; 489 with 256, and 6% less CPU)."""


def plan_once(conn: apsw.Connection) -> None:
    """Keep each statement's plan from its prepare. Without this, SQLite
    prepared a statement again at every run with new bound values when its
    WHERE binds an index's leading columns and its ORDER BY follows that
    index (a thread's newest checkpoint, a queue's next item): 2.9 µs a
    lookup instead of 0.9 on this machine's APSW build (it has STAT4). Plans
    no longer depend on bound values (the query planner stability
    guarantee). https://sqlite.org/c3ref/c_dbconfig_defensive.html#sqlitedbconfigenableqpsg"""
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)


def _incremental_vacuum(conn: apsw.Connection) -> None:
    """New files keep freed pages apart so that forgotten data can give space
    back with ``PRAGMA incremental_vacuum`` instead of a full VACUUM. Must be
    set before the first table is created. https://sqlite.org/pragma.html#pragma_auto_vacuum"""
    conn.pragma("auto_vacuum", "incremental")


def _nonempty(path: str) -> bool:
    """Whether a file exists with something in it. Another process may
    delete it at any moment (a -journal goes when its transaction ends):
    gone is empty."""
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _remove_if_empty(path: str) -> None:
    """Undo the creation of a file that an open failed to make a journal."""
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass


def _temp_in_memory(conn: apsw.Connection) -> None:
    """Temporary tables and indexes stay in memory. https://sqlite.org/pragma.html#pragma_temp_store"""
    conn.pragma("temp_store", "MEMORY")


# The id of this process, kept current in a forked child: every command
# checks it, and os.getpid() is a system call.
_this_process = os.getpid()


def _forked() -> None:
    global _this_process
    _this_process = os.getpid()


os.register_at_fork(after_in_child=_forked)


# --- the database ---------------------------------------------------------------


class Database:
    """One apsw connection with the kernel's settings and write transactions.

    Writes go through :meth:`write`: the outermost block is ``BEGIN IMMEDIATE``
    (the write lock is taken before anything is read, so a read-then-write
    never fails with SQLITE_BUSY_SNAPSHOT); nested blocks are savepoints, so a
    rejected command inside a larger transaction undoes only itself.

    Opening reads the file's header and schema before anything else
    (:func:`fileformat.inspect`): a file that is not ours is refused without a
    byte written. ``read_only`` opens never create, migrate or switch modes.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "full",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        wal_checkpoint_pages: int = DEFAULT_WAL_CHECKPOINT_PAGES,
        vfs: str | None = None,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        if type(path) is not str:
            raise InvalidArgument(f"open refused: path must be a str, got {type(path).__name__} {path!r:.60}")
        if "\x00" in path:
            raise InvalidArgument(f"open refused: path contains a NUL character: {path!r:.60}")
        if not path.isascii():
            try:
                path.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidArgument(
                    f"open refused: path {path!r:.80} holds a lone surrogate at index {e.start}; SQLite names "
                    "files in UTF-8, which cannot carry it"
                ) from None
        if vfs is not None and vfs not in apsw.vfs_names():
            raise InvalidArgument(f"open refused: no SQLite VFS named {vfs!r}; registered: {apsw.vfs_names()}")
        self.vfs = vfs
        if synchronous not in ("full", "normal"):
            raise InvalidArgument(f"open refused: synchronous must be 'full' or 'normal', got {synchronous!r}")
        if type(busy_timeout_ms) is not int or busy_timeout_ms < 0:
            raise InvalidArgument(f"open refused: busy_timeout_ms must be an int >= 0, got {busy_timeout_ms!r}")
        for name, flag in (("read_only", read_only), ("create", create)):
            if type(flag) is not bool:
                raise InvalidArgument(f"open refused: {name} must be a bool, got {flag!r:.60}")
        self.in_memory = path == ":memory:" or path == ""
        if self.in_memory and read_only:
            raise InvalidArgument("open refused: read_only=True needs the path of a file, not an in-memory journal")
        # Resolved once: a later os.chdir must not make the kernel (or a view
        # of the past, or stats) reach another file.
        self.path = path if self.in_memory else os.path.abspath(path)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.wal_checkpoint_pages = wal_checkpoint_pages
        # Why writes are refused (a read-only open, a view of the past), or None.
        self.read_only: str | None = "the journal was opened read-only" if read_only else None
        self.opened_read_only = read_only
        self.immutable = False  # read through SQLite's immutable=1 (a read-only place)
        # The write lock: held by the thread running a write transaction (a
        # group of commands, a k.transaction(), a rebuild's swap); other
        # threads wait for it, up to busy_timeout_ms.
        self._lock = threading.RLock()
        self._owner: int | None = None  # the thread holding an open write transaction
        # Set when a command failed after it had started writing outside a
        # savepoint: the open transaction can only be rolled back.
        self.aborted: str | None = None
        self._depth = 0
        self._wal_pages = 0
        # The WAL's sizes (pages) over which no checkpoint is tried: a reader's snapshot held the
        # last one back (see _checkpoint_now); empty until one does.
        self._held = range(0)
        self._checkpointer: _Checkpointer | None = None  # started when the WAL first passes its bound
        self._stale = False  # the connection was lost and could not be reopened yet
        self.pid = _this_process
        self.closed = False
        # Each thread reads through a connection of its own: reads never wait
        # for a commit in progress and never see uncommitted work.
        self._local = threading.local()
        self._readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        # Notified after every commit of this process (subscriptions wait on it).
        self.commits = threading.Condition()
        self.commit_count = 0  # commits by this process
        self.change_count = 0  # commits by this process, and changes other processes were seen making
        self.waiters: dict[int, float] = {}  # watches waiting, with the poll interval each asked for
        self.watcher: _Watcher | None = None
        self.group: GroupCommit | None = None
        # (position, hash, recorded_at) of the journal head, known only while
        # this connection holds the write lock; restored when a savepoint rolls back.
        self.head_cache: tuple[int, bytes, int] | None = None
        # Called with the head position just before an outermost COMMIT that
        # appended something: the projector records that its projections are
        # at the head, once per transaction rather than once per command (a
        # statement that changes nothing once they are).
        self.before_commit: Callable[[apsw.Connection, int], None] | None = None
        # Called with the head position after a COMMIT that appended something
        # (the snapshotter looks whether a snapshot is due); must not raise.
        self.after_commit: Callable[[int], None] | None = None
        # (thread, what) while user code runs inside a read (a progress
        # callback): a command there would be undone with the read, so it is refused.
        self.in_callback: tuple[int, str] | None = None
        self.appended = False  # the write transaction in progress appended an event
        # The writer connection and the file's data version (SQLite's count of its changes, this
        # connection's included) just after its last COMMIT that appended (which left this process's
        # projections at the head): while both are unchanged, no other connection has written since
        # (a reopened connection counts afresh: it never matches).
        self.committed_version: tuple[apsw.Connection, int] | None = None
        self._cursor: tuple[apsw.Connection, apsw.Cursor] | None = None
        # The shared journal this file is a replica of (PostgreSQL), and
        # whether the write transaction in progress holds its lock.
        self.shared: Shared | None = None
        self.shared_open = False
        # Set by a group commit's first try: the shared journal may let the group decide on this replica
        # and check, at its commit, that nothing moved meanwhile (else Stale, and the group runs again).
        self.optimistic = False
        self.found = fileformat.Found(kind="new", level=0, stamped=False)
        self.conn: apsw.Connection = self._first_open(create)

    @classmethod
    def adopt(cls, conn: apsw.Connection, *, read_only: str) -> Database:
        """Wrap a private connection (a view of the past) whose writes are refused."""
        self = cls.__new__(cls)
        self.path, self.synchronous, self.busy_timeout_ms = ":memory:", "normal", 0
        self.wal_checkpoint_pages = DEFAULT_WAL_CHECKPOINT_PAGES
        self.in_memory, self.read_only, self.vfs = True, read_only, None
        self.opened_read_only, self.immutable = True, False
        self._lock, self._depth, self._wal_pages, self.head_cache = threading.RLock(), 0, 0, None
        self._held = range(0)
        self._checkpointer = None
        self._owner, self.pid, self.closed = None, _this_process, False
        self.aborted = None
        self._local, self._readers, self._readers_lock = threading.local(), [], threading.Lock()
        self.commits, self.group, self.commit_count, self.change_count = threading.Condition(), None, 0, 0
        self.waiters, self.watcher = {}, None
        self._stale = False
        self.before_commit = None
        self.after_commit = None
        self.in_callback = None
        self.appended = False
        self.committed_version = None
        self._cursor = None
        self.shared, self.shared_open = None, False
        self.found = fileformat.Found(kind="journal", level=migrations.newest(), stamped=True)
        self.conn = conn
        return self

    def _first_open(self, create: bool) -> apsw.Connection:
        """Open, recognise the file, and only then configure it (WAL, ...)."""
        if self.in_memory:
            return self._connect()
        path = self.path
        if os.path.isdir(path):
            raise NotAJournal(path, "it is a directory")
        exists = os.path.exists(path)
        if not exists and (self.opened_read_only or not create):
            why = "a read-only open never creates one" if self.opened_read_only else "create=False"
            raise NotAJournal(path, f"there is no such file ({why})")
        if exists:
            self._peek()
        conn = None
        try:
            conn = self._raw(create=not exists)
            with translating(f"opening {path!r}"):
                conn, self.found = self._recognise(conn)
                if self.found.kind == "new" and self.opened_read_only:
                    raise NotAJournal(path, "it is an empty file")
                if self.opened_read_only:
                    _synchronous(conn, self.synchronous)
                else:
                    if self.found.kind == "new":
                        _incremental_vacuum(conn)
                    self._configure(conn)
                    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
        except BaseException as e:
            if conn is not None:
                conn.close()
            if not exists:
                _remove_if_empty(path)
            cause = e.__cause__
            if not self.opened_read_only and isinstance(cause, apsw.CantOpenError | apsw.ReadOnlyError):
                raise JournalError(
                    f"opening {path!r} for writing failed ({cause}): if the file, its directory or its file "
                    "system is read-only, open it with read_only=True to read it"
                ) from cause
            raise
        return conn

    def _peek(self) -> None:
        """Refuse a file that is plainly not ours without a side effect."""
        name = "file:" + quote(self.path) + "?mode=ro&immutable=1"
        try:
            conn = apsw.Connection(name, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=self.vfs)
        except apsw.Error:
            return  # the normal open reports it
        # A -wal, or a hot rollback -journal (a crash while the file was being
        # created), can change what the database file alone says.
        beside = [self.path + "-wal", self.path + "-journal"]
        try:
            fileformat.peek(conn, self.path, newest=migrations.newest(),
                            complete=not any(_nonempty(f) for f in beside),
                            doing="read-only open" if self.opened_read_only else "open")
        finally:
            conn.close()

    def _raw(self, *, create: bool) -> apsw.Connection:
        """A connection with only the settings that write nothing. Until the
        file is recognised it must not checkpoint on close: a stray -wal
        beside the file would be copied into it."""
        flags = apsw.SQLITE_OPEN_READONLY if self.opened_read_only else apsw.SQLITE_OPEN_READWRITE
        if create:
            flags |= apsw.SQLITE_OPEN_CREATE
        name, flags = self._address(flags)
        with translating(f"opening {self.path!r}"):
            conn = apsw.Connection(name, flags=flags, vfs=self.vfs, statementcachesize=STATEMENTS)
            try:
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                _busy_timeout(conn, self.busy_timeout_ms)
                _safety(conn)
                plan_once(conn)
                _temp_in_memory(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _recognise(self, conn: apsw.Connection) -> tuple[apsw.Connection, fileformat.Found]:
        """Inspect the file (and check the journal's tail chains). A read-only
        open in a place where SQLite cannot create the -shm file falls back to
        an immutable read, unless a -wal holds committed transactions that
        such a read would silently miss. Returns the connection to keep."""
        newest = migrations.newest()
        doing = "read-only open" if self.opened_read_only else "open"
        try:
            found = fileformat.inspect(conn, self.path, newest=newest, doing=doing)
        except (apsw.CantOpenError, apsw.ReadOnlyError) as e:
            if not self.opened_read_only or self.immutable:
                raise
            wal = self.path + "-wal"
            if _nonempty(wal):
                raise JournalError(
                    f"read-only open of {self.path!r} failed: SQLite cannot create {self.path + '-shm'!r} here "
                    f"(a read-only directory or file system), and it needs that file to read the committed "
                    f"transactions in {wal!r}; an immutable read would silently miss them. Copy the file and its "
                    "-wal to a writable place, or open it once where it can be written"
                ) from e
            conn.close()
            self.immutable = True
            conn = self._raw(create=False)
            found = fileformat.inspect(conn, self.path, newest=newest, doing=doing)
        if found.kind == "journal":
            fileformat.check_head(conn, self.path, found.level, doing=doing)
        return conn, found

    def _configure(self, conn: apsw.Connection) -> None:
        """The settings of a writable connection (on a recognised file)."""
        _wal(conn, self.busy_timeout_ms)
        _no_autocheckpoint(conn)
        conn.set_wal_hook(self._on_wal)
        _synchronous(conn, self.synchronous)

    def _connect(self) -> apsw.Connection:
        """A fresh connection to a file already recognised (a reopen after a
        failed commit), or the private database of ``:memory:``."""
        if self.in_memory:
            with translating("opening an in-memory journal"):
                # (URI names on, as for a file: a rebuild ATTACHes its build by its URI)
                conn = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
                                       | apsw.SQLITE_OPEN_URI, statementcachesize=STATEMENTS)
                _safety(conn)
                plan_once(conn)
                _temp_in_memory(conn)
            return conn
        conn = self._raw(create=False)
        try:
            with translating(f"opening {self.path!r}"):
                if not self.opened_read_only:
                    self._configure(conn)
                    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
                else:
                    _synchronous(conn, self.synchronous)
        except BaseException:
            conn.close()
            raise
        return conn

    def _on_wal(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def apply_cursor(self) -> apsw.Cursor:
        """A cursor kept for the projections' writes, so that each statement
        does not create one (recreated when the connection is)."""
        kept = self._cursor
        if kept is None or kept[0] is not self.conn:
            kept = self._cursor = (self.conn, self.conn.cursor())
        return kept[1]

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def write(self, doing: str = "write", shared: bool = True) -> _Write:
        """A write transaction (outermost) or a savepoint (nested).

        Commits when the block ends normally, undoes everything on an
        exception. An error from COMMIT itself is :class:`CommitOutcomeUnknown`
        and the connection is reopened. On a replica of a shared journal
        (``self.shared``), an outermost transaction first takes the shared
        journal's write lock and catches up with it, and its COMMIT commits
        there first; ``shared=False`` for the file's own upkeep (projections,
        snapshots), which appends nothing.
        """
        self.check(doing)
        if self.read_only is not None:
            raise ReadOnly(f"{doing} refused: {self.read_only}")
        busy = self.in_callback
        if busy is not None and busy[0] == threading.get_ident():
            raise ReadOnly(
                f"{doing} refused: it was called from a progress callback of {busy[1]}, which runs inside a read "
                f"of the journal that would undo it; run commands after {busy[1]} returns"
            )
        return _Write(self, doing, shared)

    def guard(self, what: str, progress: Callable[[int, int], None] | None) -> Callable[[int, int], None] | None:
        """Wrap a user's progress callback so that commands issued from it are
        refused (it runs inside a read transaction, which would undo them)."""
        if progress is None:
            return None

        def call(done: int, total: int) -> None:
            previous = self.in_callback
            self.in_callback = (threading.get_ident(), what)
            try:
                progress(done, total)
            finally:
                self.in_callback = previous

        return call

    def check(self, doing: str) -> None:
        """Refuse use after close, or in another process than the one that opened it."""
        if self.closed:
            raise KernelClosed(f"{doing} refused: the kernel was closed")
        if _this_process != self.pid:
            raise WrongProcess(
                f"{doing} refused: this kernel was opened in process {self.pid}, and this is process "
                f"{os.getpid()} (after fork()); SQLite connections do not survive a fork: open one kernel per "
                "process, in the process that uses it"
            )

    def abort(self, doing: str, error: BaseException) -> KernelError:
        """A command inside a larger transaction failed where it cannot undo
        just itself (after it started writing, with no savepoint of its own,
        or with a storage error): the open transaction can only be rolled
        back, whole, when it ends, and further commands in it are refused.
        Returns the error to raise."""
        self.aborted = (
            f"{doing} failed ({type(error).__name__}: {error}), so the whole transaction it was part of is "
            "rolled back; nothing of it is committed"
        )
        if isinstance(error, apsw.Error):
            return translate(error, f"{doing} (its whole transaction is rolled back)")
        return JournalError(self.aborted)

    def owns_write(self) -> bool:
        """Whether this thread holds the write transaction (its reads must see its own writes)."""
        return self._depth > 0 and self._owner == threading.get_ident()

    def _shares_writer(self) -> bool:
        """Whether this thread reads through the writer connection: its own
        open transaction, or a private in-memory journal (one connection only)."""
        return self.in_memory or self.owns_write()

    def reader(self) -> apsw.Connection:
        """This thread's read-only connection to the file, opened on first use."""
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.open_reader()
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
            self._local.depth = 0
        return conn

    def _address(self, flags: int) -> tuple[str, int]:
        """The name and open flags that reach the file: a URI with
        ``immutable=1`` where it is read in a read-only place. URI names are
        on (a rebuild ATTACHes a :class:`SharedMemory` by its URI); the path,
        absolute or ``:memory:``, never starts with ``file:``, so it is read
        as it is."""
        if self.immutable:
            return "file:" + quote(self.path) + "?mode=ro&immutable=1", flags | apsw.SQLITE_OPEN_URI
        return self.path, flags | apsw.SQLITE_OPEN_URI

    def open_reader(self) -> apsw.Connection:
        """A new read-only connection to the file, with the kernel's settings
        (the caller owns it)."""
        name, flags = self._address(apsw.SQLITE_OPEN_READONLY)
        with translating(f"opening {self.path!r} to read"):
            conn = apsw.Connection(name, flags=flags, vfs=self.vfs, statementcachesize=STATEMENTS)
            _busy_timeout(conn, self.busy_timeout_ms)
            _safety(conn)
            plan_once(conn)
            _temp_in_memory(conn)
        return conn

    def _drop_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._readers_lock:
                if conn in self._readers:
                    self._readers.remove(conn)
            try:
                conn.close()
            except apsw.Error:
                pass

    def read(self, doing: str = "read") -> _Read:
        """A consistent snapshot for several statements (a deferred read
        transaction on this thread's own connection); inside this thread's
        write transaction, that transaction's view."""
        return _Read(self, doing)

    def watch(self, doing: str = "watching the journal") -> Watch:
        """Start watching for commits: take it before a read that found
        nothing new, then wait on it (see :class:`Watch`)."""
        return Watch(self, doing)

    @contextmanager
    def _writer_read(self, doing: str) -> Iterator[apsw.Connection]:
        with self.locked(doing):
            if self._depth:
                with translating(doing):
                    yield self.conn
                return
            with translating(f"{doing}: starting the read transaction"):
                conn = self._fresh()
                conn.execute("BEGIN DEFERRED")
            self._depth = 1
            try:
                with translating(doing):
                    yield conn
            finally:
                self._depth = 0
                try:
                    if not conn.get_autocommit():
                        conn.execute("ROLLBACK")
                except apsw.Error:
                    self._reopen()

    @contextmanager
    def locked(self, doing: str) -> Iterator[None]:
        """The write lock, waited for up to busy_timeout_ms, without a
        transaction: for work on the writer connection that must not
        interleave with another thread's (``db.write`` takes it again)."""
        if not self._lock.acquire(timeout=max(self.busy_timeout_ms, 1) / 1000):
            raise JournalBusy(
                f"{doing} failed: another thread held the journal for longer than busy_timeout_ms "
                f"({self.busy_timeout_ms} ms)"
            )
        try:
            yield
        finally:
            self._lock.release()

    def statement(self, doing: str = "read") -> _Statement:
        """For a read that is one statement (atomic by itself): the lock and
        error translation, without the cost of BEGIN and ROLLBACK."""
        return _Statement(self, doing)

    def _undo(self, conn: apsw.Connection, depth: int) -> None:
        if depth == 0 and self.shared_open:
            self.shared_open = False
            assert self.shared is not None
            self.shared.rollback()
        try:
            if depth == 0:
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO ek_{depth}; RELEASE ek_{depth}")
        except apsw.Error:
            # A failed rollback leaves the connection in an unknown state;
            # start over on a fresh one.
            log.warning("rollback failed on %r; reopening the connection", self.path, exc_info=True)
            self._reopen()

    def _after_failed_commit(self, conn: apsw.Connection) -> None:
        try:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
        except apsw.Error:
            pass
        # After a failed fsync Linux may have dropped the dirty pages, so the
        # page cache no longer tells the truth: read the file afresh.
        self._reopen()

    def _reopen(self) -> None:
        """Replace the connection with a fresh one. Never raises: if the file
        cannot be opened right now (the disk still failing), the next use
        tries again and reports that error to its caller instead."""
        if self.in_memory:
            return
        try:
            self.conn.close()
        except apsw.Error:
            pass
        try:
            self.conn = self._connect()
            self._stale = False
        except KernelError:
            log.warning("reopening %r failed; the next use will try again", self.path, exc_info=True)
            self._stale = True

    def _fresh(self) -> apsw.Connection:
        """The connection, reopened first if an earlier reopen failed."""
        if self._stale:
            self.conn = self._connect()
            self._stale = False
        return self.conn

    def _maybe_checkpoint(self) -> None:
        """After a commit (the write lock held), once the WAL passes its
        bound: under NORMAL, have it copied back into the database file on
        the checkpointer's thread, and copy the frames committed meanwhile
        at the next commit (the short rest of the work); under FULL, copy it
        now. Never raises: the caller's commit already succeeded."""
        if self._wal_pages < self.wal_checkpoint_pages or self._wal_pages in self._held:
            return
        if self.synchronous == "full":
            # Under FULL every commit syncs the WAL, and a copy beside them slowed them more than it
            # saved: 5-10% fewer commands/s with the thread on a small VM; a pause now and then instead.
            self._checkpoint_now()
            return
        ck = self._checkpointer
        if ck is None:
            ck = self._checkpointer = _Checkpointer(self)
        if ck.rest and ck.lock.acquire(blocking=False):
            try:
                self._checkpoint_now()
            finally:
                ck.rest = False
                ck.lock.release()
        elif not ck.rest and not ck.start(self):
            with ck.lock:  # no thread could be started: copy here, as the commit's last step
                self._checkpoint_now()

    def _checkpoint_now(self) -> None:
        """A passive checkpoint on the writer connection; logs, never raises.
        When it could not copy every frame, a reader's snapshot still needs
        the older pages (this process's commits wait for the write lock this
        runs under): copying more must wait until that reader ends. Trying
        again after every commit started the thread's rounds again after
        every other commit under NORMAL (14-26% fewer commands/s on a small
        VM while an analytics script held a read open). The next try waits
        until the WAL has grown by a quarter of its bound (or was started
        again from its beginning)."""
        try:
            pages, copied = self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            self._wal_pages = 0
            self._held = range(pages, pages + max(1, self.wal_checkpoint_pages // 4)) if copied < pages else range(0)
        except apsw.BusyError:
            # Another connection is checkpointing this file right now: its
            # checkpoint does the work, so there is nothing to report.
            log.debug("WAL checkpoint of %r skipped: another connection is checkpointing", self.path)
        except apsw.Error:
            log.warning("WAL checkpoint of %r failed; will retry after a later commit", self.path, exc_info=True)

    def checkpoint(self, mode: Literal["passive", "full", "restart", "truncate"] = "passive") -> tuple[int, int]:
        """Copy the WAL back into the database file now: (WAL pages, pages copied)."""
        modes = {
            "passive": apsw.SQLITE_CHECKPOINT_PASSIVE,
            "full": apsw.SQLITE_CHECKPOINT_FULL,
            "restart": apsw.SQLITE_CHECKPOINT_RESTART,
            "truncate": apsw.SQLITE_CHECKPOINT_TRUNCATE,
        }
        if mode not in modes:
            raise InvalidArgument(f"checkpoint refused: mode must be one of {sorted(modes)}, got {mode!r}")
        with self._lock:
            ck = self._checkpointer  # (made under this lock)
            # SQLite refuses a second checkpointer at once (SQLITE_BUSY): wait for this process's own.
            with ck.lock if ck is not None else nullcontext(), translating(f"checkpointing {self.path!r}"):
                result: tuple[int, int] = self.conn.wal_checkpoint(mode=modes[mode])
        return result

    def vacuum(self, doing: str) -> None:
        """Rewrite the whole file (VACUUM): every page written afresh, so no
        byte of deleted content stays in the free space of a page or on a
        free page. Waits for the write lock; readers keep their snapshots."""
        with self.locked(doing), translating(f"{doing}: rewriting {self.path!r}"):
            self.conn.execute("VACUUM")

    def execute(self, sql: str, bindings: Any = None) -> apsw.Cursor:
        return self.conn.execute(sql, bindings)

    def close(self) -> None:
        """Wait for the write in progress (a group commits first), then close
        every connection; every later use raises KernelClosed, and threads
        waiting on a commit (subscriptions, blocking claims) wake up."""
        with self._lock:
            if self._depth and self._owner == threading.get_ident():
                raise JournalError(f"closing {self.path!r} refused: this thread's transaction is still open")
            if self.group is not None:
                self.group.close()
            self.closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for reader in readers:
                try:
                    reader.close()
                except apsw.Error:
                    pass
            if self._checkpointer is not None:
                self._checkpointer.stop()
            if not self._stale:
                self.conn.close()
        with self.commits:
            self.commits.notify_all()


class _Read:
    """The context manager behind :meth:`Database.read` (a class, as reads
    are hot: a generator-based one costs a few microseconds more)."""

    __slots__ = ("conn", "db", "doing", "inner", "nested")

    def __init__(self, db: Database, doing: str) -> None:
        self.db = db
        self.doing = doing
        self.inner: AbstractContextManager[apsw.Connection] | None = None
        self.nested = False

    def __enter__(self) -> apsw.Connection:
        db = self.db
        db.check(self.doing)
        if db._shares_writer():
            self.inner = db._writer_read(self.doing)
            return self.inner.__enter__()
        try:
            conn = self.conn = db.reader()
        except apsw.Error as e:  # as translating() does, without a generator's cost on every read
            raise translate(e, self.doing) from e
        local = db._local
        if local.depth:  # a read inside a read: the same snapshot
            self.nested = True
            return conn
        try:
            conn.execute("BEGIN DEFERRED")
        except apsw.Error as e:
            raise translate(e, f"{self.doing}: starting the read transaction") from e
        local.depth = 1
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.inner is not None:
            self.inner.__exit__(exc_type, exc, tb)
            return
        if not self.nested:
            db = self.db
            db._local.depth = 0
            conn = self.conn
            try:
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
            except apsw.Error:
                db._drop_reader()
        if isinstance(exc, apsw.Error):
            raise translate(exc, self.doing) from exc


class _Statement:
    """The context manager behind :meth:`Database.statement` (a class, as
    point reads are hot)."""

    __slots__ = ("db", "doing", "locked")

    def __init__(self, db: Database, doing: str) -> None:
        self.db = db
        self.doing = doing
        self.locked = False

    def __enter__(self) -> apsw.Connection:
        db = self.db
        if db.closed or db.pid != _this_process:
            db.check(self.doing)
        if not (db.in_memory or (db._depth > 0 and db._owner == threading.get_ident())):  # db._shares_writer()
            self.locked = False
            conn: apsw.Connection | None = getattr(db._local, "conn", None)
            if conn is not None:
                return conn
            try:
                return db.reader()
            except apsw.Error as e:
                raise translate(e, self.doing) from e
        if not db._lock.acquire(timeout=max(db.busy_timeout_ms, 1) / 1000):
            raise JournalBusy(
                f"{self.doing} failed: another thread held the journal for longer than busy_timeout_ms "
                f"({db.busy_timeout_ms} ms)"
            )
        self.locked = True
        if db._stale:
            try:
                with translating(self.doing):
                    return db._fresh()
            except BaseException:
                db._lock.release()
                raise
        return db.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.locked:
            self.db._lock.release()
        if isinstance(exc, apsw.Error):
            raise translate(exc, self.doing) from exc


class _Write:
    """The context manager behind :meth:`Database.write`. A class rather than
    a generator: it runs once per command, and a generator-based context
    manager costs several microseconds more on every entry and exit."""

    __slots__ = ("db", "depth", "doing", "saved_appended", "saved_head", "shared")

    def __init__(self, db: Database, doing: str, shared: bool = True) -> None:
        self.db = db
        self.doing = doing
        self.shared = shared

    def __enter__(self) -> apsw.Connection:
        db = self.db
        if not db._lock.acquire(timeout=max(db.busy_timeout_ms, 1) / 1000):
            raise JournalBusy(
                f"{self.doing} failed: another thread's transaction held the journal for longer than "
                f"busy_timeout_ms ({db.busy_timeout_ms} ms)"
            )
        try:
            depth = self.depth = db._depth
            if depth and db.aborted is not None:
                raise JournalError(f"{self.doing} refused: {db.aborted}")
            if db._stale and depth == 0:
                with translating(f"{self.doing}: reopening {db.path!r}"):
                    db._fresh()
            conn = db.conn
            try:
                conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT ek_{depth}")
            except apsw.Error as e:
                raise translate(e, f"{self.doing}: starting the transaction") from e
        except BaseException:
            db._lock.release()
            raise
        db._depth = depth + 1
        if depth:
            self.saved_head, self.saved_appended = db.head_cache, db.appended
        else:
            db._owner = threading.get_ident()
            self.saved_head = db.head_cache = None
            self.saved_appended = db.appended = False
            if db.shared is not None and self.shared:
                try:
                    db.shared_open = True
                    db.shared.begin(conn)
                except BaseException:
                    db._depth, db._owner = 0, None
                    db._undo(conn, 0)
                    db._lock.release()
                    raise
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        # Never swallows the exception (returns None): callers and type
        # checkers may rely on the block's exception propagating.
        db = self.db
        depth = self.depth
        try:
            db._depth = depth
            if not depth:
                db._owner = None
            conn = db.conn
            if not depth and db.aborted is not None:
                aborted, db.aborted = db.aborted, None
                db.head_cache, db.appended = None, False
                db._undo(conn, 0)
                if exc is None:
                    raise JournalError(f"{self.doing} failed: {aborted}")
                if isinstance(exc, apsw.Error):
                    raise translate(exc, self.doing) from exc
                return
            if exc is not None:
                db.head_cache, db.appended = self.saved_head, self.saved_appended
                db._undo(conn, depth)
                if isinstance(exc, apsw.Error):
                    raise translate(exc, self.doing) from exc
                return
            if depth:
                try:
                    conn.execute(f"RELEASE ek_{depth}")
                except apsw.Error as e:
                    db.head_cache, db.appended = self.saved_head, self.saved_appended
                    db._undo(conn, depth)
                    raise translate(e, f"{self.doing}: releasing the savepoint") from e
                return
            self._commit(conn)
        finally:
            db._lock.release()
            if not depth and db.group is not None:
                db.group.wake()

    def _commit(self, conn: apsw.Connection) -> None:
        db = self.db
        reached = db.head_cache[0] if db.appended and db.head_cache is not None else None
        try:
            if db.appended and db.head_cache is not None and db.before_commit is not None:
                db.before_commit(conn, db.head_cache[0])
        except BaseException as e:
            db.head_cache, db.appended = None, False
            db._undo(conn, 0)
            if isinstance(e, apsw.Error):
                raise translate(e, f"{self.doing}: finishing the transaction") from e
            raise
        db.head_cache, db.appended = None, False
        if db.shared_open:
            db.shared_open = False
            try:
                db.shared.commit(conn)  # type: ignore[union-attr]
            except BaseException:
                db._undo(conn, 0)
                raise
        try:
            conn.execute("COMMIT")
        except apsw.Error as e:
            db._after_failed_commit(conn)
            if isinstance(e, apsw.FullError):
                raise CommitFull(
                    f"{self.doing}: COMMIT failed: the disk or database is full ({e}). Free some space; the "
                    "transaction may or may not be durable, so retry with the same command_id or event_ids: a "
                    "retry of what committed appends nothing"
                ) from e
            raise CommitOutcomeUnknown(
                f"{self.doing}: COMMIT failed ({type(e).__name__}: {e}); the transaction may or may "
                "not be durable. Retry with the same command_id or event_ids: a retry of "
                "what committed appends nothing"
            ) from e
        # (only a commit that appended brought this process's projections to the head: after another, the
        # next append checks them)
        db.committed_version = (conn, conn.data_version()) if reached is not None else None
        db._maybe_checkpoint()
        with db.commits:
            db.commit_count += 1
            db.change_count += 1
            db.commits.notify_all()
        if reached is not None and db.after_commit is not None:
            db.after_commit(reached)


class SharedMemory(apsw.Connection):
    """An in-memory database that this process's other connections can
    ATTACH by ``uri`` while this connection is open (SQLite's memdb VFS,
    under a name no one guesses): a rebuild's swap reads the tables it built
    where they are, instead of copying the whole database out
    (``serialize``) and in again (``deserialize``). ``uri`` is None once
    ``deserialize`` replaced its main database (the name no longer reaches it)."""

    def __init__(self) -> None:
        self.uri: str | None = f"file:/eventkernel-{os.getpid()}-{secrets.token_hex(12)}?vfs=memdb"
        super().__init__(self.uri, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI,
                         statementcachesize=STATEMENTS)

    def deserialize(self, name: str, contents: bytes) -> None:
        if name == "main":
            self.uri = None
        super().deserialize(name, contents)


def memory_connection(*, shared: bool = False) -> apsw.Connection:
    """A private in-memory database (rebuilds, verification, views of the past);
    ``shared``: a :class:`SharedMemory`. URI names are on so that a view of the
    past can ATTACH the file read-only."""
    conn = SharedMemory() if shared else apsw.Connection(
        ":memory:", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI,
        statementcachesize=STATEMENTS)
    _safety(conn)
    plan_once(conn)
    conn.pragma("synchronous", "OFF")
    return conn


class _Ticket:
    """One command waiting for, or in, a group."""

    __slots__ = ("done", "error", "fn", "result", "taken")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.taken = False  # a leader has it in its group
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Stale(Exception):
    """An optimistic transaction of a replica (``Shared.begin`` with
    ``Database.optimistic``) found at its commit that the shared journal had
    moved on: nothing was committed; the group runs again, under the lock.
    Never reaches a caller."""


class Shared(Protocol):
    """A journal this file is a replica of (``eventkernel.postgres``): its
    write lock, taken (and the file caught up with it) when a write
    transaction begins, and its commit, before the file's own; and the
    durable consumers' positions, which it keeps."""

    def begin(self, conn: apsw.Connection) -> None: ...

    def commit(self, conn: apsw.Connection) -> None: ...

    def rollback(self) -> None: ...

    def current(self, doing: str) -> AbstractContextManager[tuple[apsw.Connection, int] | None]: ...

    def clock(self) -> int: ...

    def pull(self) -> int: ...

    def consumer_position(self, name: str) -> int: ...

    def move_consumer(self, name: str, position: int, at: int) -> None: ...


class Writer(Protocol):
    """What a group commit needs of an engine: its write lock (held by a
    group's leader), the busy timeout, a write transaction, and whether a
    group's first try may be optimistic (``optimistic``, set by the leader
    where ``retries_stale``: the transaction may raise Stale, and the group
    runs again)."""

    _lock: threading.RLock
    busy_timeout_ms: int
    optimistic: bool

    def write(self, doing: str) -> AbstractContextManager[Any]: ...


# The most commands one COMMIT carries (a leader stops taking newcomers there).
MAX_GROUP = 512


class GroupCommit:
    """Durable commands from many threads share one COMMIT, and one fsync.

    A thread with a command queues it, then takes the write lock if it is
    free and leads: it runs every queued command in one transaction (a
    refused command undoes only itself: it is refused before it writes, or
    writes inside a savepoint where it could fail after writing; later
    commands see earlier ones' effects), commits once and hands each thread
    its result. Commands that arrive meanwhile form the next group, led by one
    of their threads. A lone command leads at once and waits for no one.
    Every thread returns only after the COMMIT that made its command
    durable; a failed COMMIT fails every command of its group.
    """

    def __init__(self, db: Writer) -> None:
        self.db = db
        self.cv = threading.Condition()
        self.queue: list[_Ticket] = []
        self.closed = False
        self.sleepers = 0  # threads waiting on cv

    def run(self, doing: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a command: it writes through the database's
        connection) in the next group; return its result, raise its error."""
        db = self.db
        ticket = _Ticket(fn)
        with self.cv:
            if self.closed:
                raise KernelClosed(f"{doing} refused: the kernel was closed")
            self.queue.append(ticket)
        deadline: float | None = None
        holding = False
        while True:
            if holding or (not ticket.taken and db._lock.acquire(blocking=False)):
                holding = False
                try:
                    if not ticket.taken:
                        self._lead(doing)
                finally:
                    db._lock.release()
                    self.wake()
                if ticket.done:
                    break
            with self.cv:
                if ticket.done:
                    break
                if ticket.taken:
                    self._sleep(None)  # its leader always finishes, committed or not
                    continue
                if deadline is None:
                    deadline = time.monotonic() + max(db.busy_timeout_ms, 1) / 1000
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.queue.remove(ticket)
                    raise JournalBusy(
                        f"{doing} failed: waited busy_timeout_ms ({db.busy_timeout_ms} ms) for another thread's "
                        "transaction to end"
                    )
                if self.closed:
                    self.queue.remove(ticket)
                    raise KernelClosed(f"{doing} refused: the kernel was closed")
                # Counted as a sleeper before trying the lock once more, so that
                # a release this try misses sees the count and wakes it.
                self.sleepers += 1
                try:
                    if db._lock.acquire(blocking=False):
                        holding = True
                        continue
                    # Woken when a group ends or a transaction releases the lock.
                    self.cv.wait(min(remaining, 0.05))
                finally:
                    self.sleepers -= 1
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _sleep(self, timeout: float | None) -> None:
        """Wait on the condition (held), counted, so that wake() knows whether
        anyone needs waking."""
        self.sleepers += 1
        try:
            self.cv.wait(timeout)
        finally:
            self.sleepers -= 1

    def wake(self) -> None:
        """The write lock was released: waiting threads may lead."""
        if self.sleepers:
            with self.cv:
                self.cv.notify_all()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def _lead(self, doing: str) -> None:
        """Run queued commands in one transaction until none is left (those
        that arrive while earlier ones run join too, up to MAX_GROUP), then
        commit once. Called with the write lock."""
        db = self.db
        with self.cv:
            group, self.queue = self.queue, []
            for ticket in group:
                ticket.taken = True
        if not group:
            return
        failure: BaseException | None = None
        # On a replica of a shared journal, or on a PgJournal (``retries_stale``), a group may first run
        # optimistically (decided on what the process knows, checked by the journal at its commit); when
        # that finds the journal moved on, it runs again.
        replica = db if (db.shared is not None if isinstance(db, Database) else getattr(db, "retries_stale", False)) \
            else None
        optimistic = replica is not None
        while True:
            try:
                if replica is not None:
                    replica.optimistic = optimistic
                self._attempt(doing, group)
            except Stale:
                optimistic = False
                for ticket in group:
                    ticket.result, ticket.error = None, None
                continue
            except CommandRejected as e:
                if optimistic and isinstance(replica, Database) and getattr(replica.shared, "optimistic_tx", False):
                    # A lone command refused on a replica that may be behind: decided again under the lock.
                    optimistic = False
                    group[0].result, group[0].error = None, None
                    continue
                failure = e
            except BaseException as e:
                failure = e
            finally:
                if replica is not None:
                    replica.optimistic = False
            break
        alone = len(group) == 1
        if alone:  # the leader's own command: no other thread waits for it
            ticket = group[0]
            if failure is not None and not isinstance(ticket.error, CommandRejected):
                ticket.error, ticket.result = failure, None
            ticket.done = True
            if failure is not None and not isinstance(failure, Exception):
                raise failure
            return
        with self.cv:
            for ticket in group:
                if failure is not None and not (ticket.error is not None and isinstance(ticket.error, CommandRejected)):
                    ticket.error = _shared(failure, doing)
                    ticket.result = None
                ticket.done = True
            self.cv.notify_all()
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # KeyboardInterrupt, SystemExit: the leader's own

    def _attempt(self, doing: str, group: list[_Ticket]) -> None:
        """One transaction running the group's commands (and those that join
        it meanwhile, added to ``group``), committed once."""
        db = self.db
        with db.write(doing):
            done = 0
            while done < len(group):
                if done == 0 and len(group) == 1 and not self.queue:
                    # Alone: the transaction is its own, no savepoint needed.
                    try:
                        group[0].result = group[0].fn()
                    except CommandRejected as e:
                        group[0].error = e
                        raise
                    done = 1
                else:
                    for ticket in group[done:]:
                        try:
                            # The command takes a savepoint wherever it could fail after writing,
                            # so a refusal undoes only itself.
                            ticket.result = ticket.fn()
                        except (JournalError, apsw.Error, Stale):
                            raise  # the storage failed, or the group runs again: the whole group does
                        except Exception as e:  # refused (or a bug): this command alone fails
                            ticket.error = e
                    done = len(group)
                if self.queue and len(group) < MAX_GROUP:
                    with self.cv:  # commands that arrived meanwhile join this commit
                        more = self.queue[: MAX_GROUP - len(group)]
                        del self.queue[: len(more)]
                        for ticket in more:
                            ticket.taken = True
                    group.extend(more)


def _shared(failure: BaseException, doing: str) -> BaseException:
    """The group's failure as seen by one of its commands: a fresh exception
    of the same kind (one exception object must not travel through several
    threads), caused by the original."""
    if isinstance(failure, KernelError):
        copy = type(failure).__new__(type(failure))
        copy.args = failure.args
        copy.__dict__.update(failure.__dict__)
    else:
        copy = JournalError(f"{doing} failed: the transaction of its group failed: {type(failure).__name__}: {failure}")
    copy.__cause__ = failure
    return copy


class Watch:
    """Whether anything was committed since the watch began: by this process
    (a commit notifies at once) or by another one. SQLite tells a process
    nothing when another commits, so while anyone waits one thread per kernel
    (a :class:`_Watcher`) watches the file and wakes the waiters; waiters
    themselves sleep without polling.

    Take the watch *before* the read that found nothing new: a commit between
    the two is then seen, by this process's count of commits or by this
    thread's ``PRAGMA data_version``, read once here and once when waiting
    begins."""

    def __init__(self, db: Database, doing: str) -> None:
        self.db = db
        self.doing = doing
        self.start = db.change_count
        self.version = self._data_version()

    def _data_version(self) -> int:
        if self.db.in_memory or self.db.immutable:
            return 0  # nothing outside this connection can change it
        with self.db.statement(self.doing) as conn:
            return int(conn.pragma("data_version"))

    def changed(self) -> bool:
        return self.db.change_count != self.start or self._data_version() != self.version

    def wait(self, timeout_s: float, *, poll_s: float = 0.01, stop: Callable[[], bool] | None = None) -> bool:
        """Block until a commit may have happened, the kernel closes (raises
        KernelClosed), ``stop()`` says so, or ``timeout_s`` passes. Returns
        whether something changed. ``poll_s`` bounds how late another
        process's commit may be noticed where the file cannot be watched."""
        db = self.db
        deadline = time.monotonic() + timeout_s
        db.check(self.doing)
        with db.commits:
            db.waiters[id(self)] = poll_s
            try:
                if not db.in_memory and not db.immutable and db.watcher is None:
                    # Started here, so that its view of the file is taken
                    # before the look below: nothing falls between the two.
                    db.watcher = _Watcher(db)
                    db.watcher.start()
            except BaseException:
                del db.waiters[id(self)]
                raise
        try:
            if self._data_version() != self.version:
                return True
            with db.commits:
                while db.change_count == self.start and not db.closed and not (stop is not None and stop()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    db.commits.wait(remaining)
        finally:
            with db.commits:
                del db.waiters[id(self)]
        db.check(self.doing)
        return db.change_count != self.start


class _Checkpointer:
    """Under synchronous=NORMAL, copies the WAL back into the database file
    on a thread and a connection of its own, so that the commit that passes
    the WAL's bound does not wait for the copy (4,000 pages: 10-14 ms on a
    small VM, a pause every few hundred commands) and commits go on
    meanwhile. SQLite starts the WAL again from its beginning only when a
    write begins with every frame copied, so copying beside a steady writer
    never finishes by itself: the thread copies in rounds, each copying
    what was committed during the one before, until a round copies at most
    ``REST`` pages, and leaves the last frames to the next commit
    (``rest``), which copies them with the write lock held, as every
    checkpoint did before; the commit after it restarts the WAL. ``lock``
    is held by whoever checkpoints (SQLite refuses a second checkpointer at
    once). Errors are logged, never raised: the commits they follow
    succeeded; the next commit past the bound retries."""

    REST = 256  # pages: about a millisecond to copy
    ROUNDS = 4

    def __init__(self, db: Database) -> None:
        # Not the Database itself: the thread must not keep a kernel its user dropped without closing
        # it alive (its end is then asked for when that Database goes).
        self.path = db.path
        weakref.finalize(db, self._abandon)
        self.lock = threading.Lock()
        self.rest = False  # the bulk is copied: the next commit copies what remains
        self._wake = threading.Condition()
        self._wanted = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failed = False  # the thread's connection could not be opened: checkpoints stay on the commit

    def start(self, db: Database) -> bool:
        """Ask for a checkpoint of ``db`` (the thread started on first use).
        False when there is no thread to run it: the caller checkpoints itself."""
        if self._failed:
            return False
        with self._wake:
            if self._wanted:  # asked already (commits keep passing the bound until the WAL restarts)
                return True
            self._wanted = True
            if self._thread is None:
                try:
                    conn = self._connect(db)
                except KernelError:
                    log.warning("opening a checkpoint connection to %r failed; commits checkpoint themselves",
                                self.path, exc_info=True)
                    self._failed, self._wanted = True, False
                    return False
                self._thread = threading.Thread(target=self._run, args=(conn,), daemon=True,
                                                name="eventkernel-checkpoint")
                self._thread.start()
            self._wake.notify()
        return True

    @staticmethod
    def _connect(db: Database) -> apsw.Connection:
        conn = db._raw(create=False)  # (never checkpoints on close: the writer's close, last, does)
        try:
            with translating(f"opening {db.path!r} to checkpoint"):
                _no_autocheckpoint(conn)
                _synchronous(conn, db.synchronous)
        except BaseException:
            conn.close()
            raise
        return conn

    def stop(self) -> None:
        """End the thread (after the round in progress), which closes its connection."""
        self._abandon()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _abandon(self) -> None:
        """Ask the thread to end, without waiting for it."""
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _run(self, conn: apsw.Connection) -> None:
        try:
            while True:
                with self._wake:
                    while not self._wanted and not self._stopping:
                        self._wake.wait()
                    if self._stopping:
                        return
                self._copy(conn)
                with self._wake:
                    self._wanted = False
        finally:
            try:
                conn.close()
            except apsw.Error:
                pass

    def _copy(self, conn: apsw.Connection) -> None:
        """Rounds of passive checkpoints, each copying what the commits wrote
        during the one before, while that is more than ``REST`` pages; then
        the next commit copies the last ones."""
        copied = 0
        for _ in range(self.ROUNDS):
            with self.lock:
                if self._stopping:
                    return
                try:
                    _, done = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                except apsw.BusyError:
                    log.debug("WAL checkpoint of %r skipped: another connection is checkpointing", self.path)
                    return
                except apsw.Error:
                    log.warning("WAL checkpoint of %r failed; will retry after a later commit", self.path,
                                exc_info=True)
                    return
            # (little copied: few commits meanwhile, or a reader still reads older pages)
            if done - copied <= self.REST:
                break
            copied = done
        self.rest = True


class _Watcher(threading.Thread):
    """While anyone waits, notices another process's commit. On Linux the
    -wal file's writes are reported by inotify at once and cost nothing
    while nothing happens; elsewhere, every poll interval, a change of the
    -wal's size or modification time (a stat: no SQLite call). Once a second
    ``PRAGMA data_version`` is read too, for a commit either could miss (a
    checkpoint that reset the -wal to the same size, say). Ends when no one
    waits; the next waiter starts another."""

    def __init__(self, db: Database) -> None:
        super().__init__(daemon=True, name="eventkernel-watch")
        self.db = db
        self.wal = db.path + "-wal"
        # All taken now, in the waiter's thread, before it looks for itself.
        self.notices = changes.watch(self.wal)
        try:
            self.conn = apsw.Connection(db.path, flags=apsw.SQLITE_OPEN_READONLY, vfs=db.vfs)
            self.version = self.conn.pragma("data_version")
        except BaseException:
            if self.notices is not None:
                self.notices.close()
            raise
        self.seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.wal)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _committed(self) -> bool:
        current = int(self.conn.pragma("data_version"))
        changed: bool = current != self.version
        self.version = current
        return changed

    def run(self) -> None:
        db = self.db
        last_check = time.monotonic()
        failed = False
        try:
            while True:
                with db.commits:
                    if not db.waiters or db.closed:
                        db.watcher = None
                        return
                    interval = min(db.waiters.values())
                try:
                    changed = self._look(interval)
                    if time.monotonic() - last_check >= 1.0:
                        last_check = time.monotonic()
                        changed = self._committed() or changed
                    failed = False
                except apsw.Error:
                    # The file went away, or I/O failed: say so once, let the
                    # waiters look for themselves (their reads report it), retry.
                    if not failed:
                        log.warning("watching %r for other processes' commits failed", db.path, exc_info=True)
                    failed, changed = True, True
                    time.sleep(1.0)
                    try:
                        self.conn.close()
                        self.conn = apsw.Connection(db.path, flags=apsw.SQLITE_OPEN_READONLY, vfs=db.vfs)
                    except apsw.Error:
                        pass  # a closed connection fails the next look: another round
                if changed:
                    with db.commits:
                        db.change_count += 1
                        db.commits.notify_all()
        except BaseException:
            with db.commits:
                db.watcher = None
            raise
        finally:
            self.conn.close()
            if self.notices is not None:
                self.notices.close()

    def _look(self, interval: float) -> bool:
        """Wait up to a second for a sign of another process's commit; whether one came."""
        if self.notices is None:
            time.sleep(interval)
            now = self._signature()
            changed, self.seen = now != self.seen, now
            return changed
        if not self.notices.wait(1.0):
            return False
        # The -wal is written before the commit is visible (that waits for
        # its fsync): look until it is, briefly.
        delay, waited = 0.0005, 0.0
        while waited < 0.1:
            if self._committed():
                return True
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.01)
        return False
