"""The facade: ``eventkernel.open(path)`` returns a :class:`Kernel`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import apsw
import msgspec

from eventkernel import backup, compaction, journal, migrations, postgres, secrets, snapshots
from eventkernel.clock import Clock, system_clock
from eventkernel.codec import Event
from eventkernel.connection import Database, GroupCommit, Synchronous, translating
from eventkernel.errors import (
    InvalidArgument,
    JournalCorrupt,
    JournalError,
    KernelError,
    NotFound,
    ReadOnly,
    WrongProcess,
)
from eventkernel.events.commands import PayloadsErased
from eventkernel.fileformat import Found
from eventkernel.ids import new_id
from eventkernel.projector import Progress, Projector, TableDiff, check_projections
from eventkernel.registry import KERNEL_STREAM_KINDS, PROJECTIONS, check_application_append
from eventkernel.services.base import Context
from eventkernel.snapshots import Snapshot
from eventkernel.subscription import Consumer, LogFollower, Subscription
from eventkernel.validate import check_int, check_optional_text, check_text
from eventkernel.verify import VerifyReport, verify
from eventkernel.view import KernelView, Reader, type_names


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """What ``k.stats()`` reports."""

    head: int
    events_by_type: dict[str, int]
    events_by_stream_kind: dict[str, int]
    database_bytes: int
    files: dict[str, int]
    projections: dict[str, dict[str, int]]


class Erasure(msgspec.Struct, frozen=True):
    """What ``k.erase`` did: the position of its ``journal.payloads_erased``
    event, how many events it blanked, the projections it rebuilt, and
    whether the WAL was truncated (False: another connection held it; run
    ``k.checkpoint("truncate")`` again to clear what it still holds)."""

    position: int
    events: int
    projections: list[str]
    wal_cleared: bool


def open(
    path: str,
    *,
    clock: Clock | None = None,
    synchronous: Synchronous = "full",
    busy_timeout_ms: int = 10_000,
    vfs: str | None = None,
    create: bool = True,
    read_only: bool = False,
    projections: Sequence[Any] = (),
    group_commit: bool = True,
    snapshot_every: int = snapshots.DEFAULT_EVERY,
    secret_key: Any = None,
    replica: str | None = None,
    schema: str = "eventkernel",
    server_tables: bool = True,
    one_round_trip: bool | None = None,
) -> Kernel:
    """Open the journal at ``path`` (or ":memory:", or a ``postgresql://`` URL).

    A missing or empty file becomes a new journal (``create=False`` refuses
    a missing one); a journal opens, and one written by eventkernel 0.1.0 is
    migrated; anything else raises NotAJournal before a byte is written.
    ``read_only=True`` never creates, migrates or writes: commands raise
    ReadOnly, reads work (on a read-only file system too).

    ``clock`` is a zero-argument callable returning int ms since the epoch
    (default: the system clock); the kernel never records a time below the
    journal head's. ``synchronous="full"`` makes every acknowledged commit
    survive power loss; ``"normal"`` trades the last commits before a power
    cut for speed (a process crash still loses nothing). ``vfs`` names a
    registered SQLite VFS to do the file I/O (default: the platform's).

    ``projections`` are the application's own read models, each a module or
    object with ``NAME``, ``VERSION``, ``HANDLES`` (the event types it
    folds), ``DDL`` (its tables' SQL) and ``apply(conn, recorded, event)``:
    applied inline in every command's transaction, caught up on open,
    rebuilt when ``VERSION`` changes, compared by ``verify``, present in
    ``k.at()`` — exactly like the kernel's own.

    ``snapshot_every``: once the head is this many events past the newest
    projection snapshot, a background thread makes one (``k.snapshot()``),
    so that ``k.at()`` folds at most about this many events; 0 makes
    snapshots only when asked.

    ``secret_key`` encrypts and decrypts secret configuration values
    (``k.config.set(..., secret=True)``): a key from ``eventkernel keygen``,
    or a list of keys (the first encrypts, the others still decrypt values
    from before a rotation); None reads ``$EVENTKERNEL_SECRET_KEY``
    (comma-separated), and without it secrets are refused.

    ``path`` a ``postgresql://`` URL (extra ``[postgres]``): the journal is
    the one in ``schema`` of that database, shared by every process that
    opens it, and this process's file ``replica`` (default: a temporary file,
    removed on close) is its replica, holding the same rows and the
    projections folded from them (see the README's "PostgreSQL"). The
    default clock is then the server's. ``server_tables``: the server also
    holds a copy of every projection table, kept in the transaction of each
    commit, for whatever reads SQL there (:mod:`eventkernel.pgtables`).
    ``one_round_trip``: ``True`` lets a command on a replica that knows of
    no newer commit be decided there and committed in one round trip, its
    time (without ``clock``) this machine's clock set by the server's last
    answer and checked by the server to be at most 100 ms behind its clock,
    never ahead; ``False`` makes every write take the server's lock first
    (two round trips), its time the server's clock read under the lock. The
    default, None, is ``False`` with the server's clock and ``True`` with a
    ``clock`` of the caller's (whose time is the same either way).

    Raises JournalError subclasses when the file cannot be opened,
    InvalidArgument for a projection that does not fit.
    """
    return Kernel(path, clock=clock, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms, vfs=vfs,
                  create=create, read_only=read_only, projections=projections, group_commit=group_commit,
                  snapshot_every=snapshot_every, secret_key=secret_key, replica=replica, schema=schema,
                  server_tables=server_tables, one_round_trip=one_round_trip)


def _check_progress(where: str, progress: object) -> None:
    if progress is not None and not callable(progress):
        raise InvalidArgument(
            f"{where} refused: progress must be a callable taking (done, total), got {progress!r:.60}"
        )


class Kernel(Reader):
    """An open journal with its projections and commands. A context manager.

    One Kernel serves any number of threads: each reads through a connection
    of its own (never seeing uncommitted work, never waiting for a commit);
    commands from many threads share group commits; ``transaction()``
    belongs to the thread that opened it. Processes open a Kernel each (not
    across fork(), not pickled) and coordinate through SQLite's locks.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Clock | None = None,
        synchronous: Synchronous = "full",
        busy_timeout_ms: int = 10_000,
        vfs: str | None = None,
        create: bool = True,
        read_only: bool = False,
        projections: Sequence[Any] = (),
        group_commit: bool = True,
        snapshot_every: int = snapshots.DEFAULT_EVERY,
        secret_key: Any = None,
        replica: str | None = None,
        schema: str = "eventkernel",
        server_tables: bool = True,
        one_round_trip: bool | None = None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise InvalidArgument(f"open refused: clock must be a callable returning int ms, got {clock!r}")
        check_int("open", "snapshot_every", snapshot_every, minimum=0)
        users = check_projections(projections, PROJECTIONS)
        keys = secrets.keyring("open", secret_key)
        self._replica: postgres.Replica | None = None
        self._scratch: str | None = None  # a temporary replica's folder, removed on close
        url = None
        if postgres.is_url(path):
            url, path = path, self._replica_path(path, replica, read_only)
        elif replica is not None:
            raise InvalidArgument("open refused: replica= is for a postgresql:// URL; a file is its own journal")
        for name, flag in (("server_tables", server_tables), ("one_round_trip", one_round_trip)):
            if type(flag) is not bool and not (flag is None and name == "one_round_trip"):
                kinds = "a bool or None" if name == "one_round_trip" else "a bool"
                raise InvalidArgument(f"open refused: {name} must be {kinds}, got {flag!r:.60}")
        try:
            # (for a URL, create= is the server's journal's; the replica is made when missing)
            # A replica's commits need not reach the disk: the server holds them, and a replica that lost
            # its last ones to a power cut catches up with the server when it opens.
            self._db = Database(path, synchronous="normal" if url is not None else synchronous,
                                busy_timeout_ms=busy_timeout_ms, vfs=vfs, create=create or url is not None,
                                read_only=read_only)
        except BaseException:
            self._remove_scratch()
            raise
        try:
            self._projector = Projector((*PROJECTIONS, *users), user=users)
            self._ctx = Context(self._db, self._projector, clock or system_clock, keys)
            found = self._db.found
            if not read_only:
                if found.kind == "new" or not found.stamped or found.level < migrations.newest():
                    with self._db.write(f"opening {self._db.path!r}", shared=False) as conn:
                        migrations.migrate(conn, self._ctx.now())
                    self._db.found = Found(kind="journal", level=migrations.newest(), stamped=True)
                self._projector.setup(self._db)
                if group_commit and not self._db.in_memory:
                    self._db.group = GroupCommit(self._db)
            if url is not None:
                self._follow(url, schema, busy_timeout_ms, clock, create, server_tables,
                             clock is not None if one_round_trip is None else one_round_trip)
        except BaseException:
            if self._replica is not None:
                self._replica.close()
            self._db.close()
            self._remove_scratch()
            raise
        self._attach(self._ctx)
        self._closed = False
        self._snapshotter: snapshots.Snapshotter | None = None
        if snapshot_every and not read_only and not self._db.in_memory:
            self._snapshotter = snapshots.Snapshotter(self._db, self._projector, self._ctx.now, snapshot_every)
            self._db.after_commit = self._snapshotter.committed

    def _replica_path(self, url: str, replica: str | None, read_only: bool) -> str:
        if read_only:
            raise InvalidArgument(
                "open refused: a journal on PostgreSQL opens with a replica this process writes; read_only=True is "
                "for files (`eventkernel copy` makes one from the server's journal)"
            )
        if replica is not None:
            return replica
        import tempfile

        self._scratch = tempfile.mkdtemp(prefix="eventkernel-replica-")
        return os.path.join(self._scratch, "replica.db")

    def _follow(self, url: str, schema: str, busy_timeout_ms: int, clock: Clock | None, create: bool,
                tables: bool, one_round_trip: bool) -> None:
        """Make the file a replica of the journal at ``url``: caught up, then followed."""
        pg = postgres.open_journal(url, schema=schema, busy_timeout_ms=busy_timeout_ms, group_commit=False,
                                   create=create)
        try:
            self._replica = replica = postgres.Replica(pg, self._db, self._projector, tables=tables,
                                                       one_round_trip=one_round_trip)
        except BaseException:
            pg.close()
            raise
        base = pg.base()
        replica.server_base = 0 if base is None else base[0]
        with self._db.statement("reading the replica's head") as conn:
            position, hash_ = journal.head(conn)
        if position:
            if position < replica.server_base:
                raise JournalError(f"open refused: {replica._behind(position)}")
            if base is not None and position == base[0]:
                theirs: bytes | None = base[1]  # (the event is in the archive; its hash is the base's)
            else:
                found = next(iter(pg.rows(position - 1, position)), None)
                theirs = None if found is None else bytes(found[10])
            if theirs != hash_:
                raise JournalCorrupt(
                    f"open refused: {self._db.path!r} is not a replica of the journal on {postgres.redact(url)} "
                    f"(schema {schema!r}): its event {position} is not the server's"
                )
        replica.start_from_base()  # (a new replica of a compacted journal: from the projections at its base)
        replica.seed()  # (a new replica: from the server's tables, when they can be trusted to be its own)
        replica.pull(50_000)
        replica.follow_base()  # (a compaction made on the server while this replica was closed)
        if clock is None:
            self._ctx.clock = replica.clock
        self._db.shared = replica
        replica.refresh_tables()
        replica.start()

    def _remove_scratch(self) -> None:
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # --- the journal ------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._db.path

    def append(
        self,
        stream: str,
        events: Sequence[Event],
        expected_version: int | None = None,
        event_ids: Sequence[str | None] | None = None,
        correlation_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Append application events to ``stream`` ('<kind>:<id>') in one
        transaction; returns the position of the last one.

        ``expected_version`` (the stream's current version, 0 for a new
        stream) makes the append conditional: ConcurrencyConflict otherwise.
        ``event_ids`` make it idempotent: an append whose ids were all written
        before with the same content returns the original position and
        appends nothing; IdempotencyConflict when the content differs.
        Events of the kernel's own domains are refused (use their commands).
        """
        events = check_application_append(stream, events, event_ids)
        with self._db.write("append"):
            appended = self._ctx.emit(
                stream,
                events,
                recorded_at=self._ctx.stamp(),
                expected_version=expected_version,
                event_ids=event_ids,
                correlation_id=correlation_id,
                meta=meta,
            )
        return appended.records[-1].position

    def at(self, position: int | None = None, *, time_ms: int | None = None,
           progress: Progress | None = None) -> KernelView:
        """A read-only view of every projection as of journal ``position`` (or
        of the last event recorded at or before ``time_ms``): the same read
        methods, answering what this kernel answered when its head was there.
        Commands on it raise ReadOnly. Use it as a context manager."""
        _check_progress("at", progress)
        progress = self._db.guard("at", progress)
        if (position is None) == (time_ms is None):
            raise InvalidArgument("at refused: give a position or time_ms=, exactly one")
        if time_ms is not None:
            position = self.position_at(time_ms, where="at")
        assert position is not None
        check_int("at", "position", position, minimum=0)
        head = self.head
        if position > head:
            raise InvalidArgument(f"at refused: position {position} is past the journal head {head}")
        with self._db.read("at") as conn:
            base = journal.base(conn)
        if base is not None and position < base[0]:
            raise InvalidArgument(
                f"at refused: position {position} is before the journal's base {base[0]}: the events up to it were "
                f"compacted into the archive {base[3]!r}; open that file "
                f"(eventkernel.open(archive, read_only=True).at({position}))"
            )
        return KernelView(self._db, self._projector, self._ctx.clock, position, progress, self._ctx.keyring)

    def position_at(self, time_ms: int, *, where: str = "position_at") -> int:
        """The last position such that every event up to it was recorded at or
        before ``time_ms`` (0 when the first was later): the head as it was at
        that time. Times in a file never go backwards, so this is the last
        event recorded by then; in a file written by 0.1.0 under a clock that
        stepped back, it stops before the first event recorded later."""
        check_int(where, "time_ms", time_ms)
        with self._db.read("finding the position of a time") as conn:
            row = conn.execute(
                "SELECT position FROM journal WHERE recorded_at > ? ORDER BY position LIMIT 1", (time_ms,)
            ).fetchone()
            return journal.head(conn)[0] if row is None else int(row[0]) - 1

    # --- following the journal ----------------------------------------------------------

    def subscribe(
        self,
        after: int = 0,
        *,
        stream: str | None = None,
        types: Sequence[str] = (),
        correlation_id: str | None = None,
        poll_ms: int = 10,
    ) -> Subscription:
        """The events after ``after`` that match the filters (those of
        ``read``), then each new one as it commits, from this process or any
        other on the file (noticed at once where inotify exists, as on
        Linux, else within ``poll_ms``); in position order,
        with no gap and no duplicate. Iterate it; ``close()`` it from any thread."""
        return Subscription(self._db, after, stream=stream, types=type_names("subscribe", types),
                            correlation_id=correlation_id, poll_ms=poll_ms)

    def follow(
        self,
        after: int = 0,
        *,
        stream: str | None = None,
        stream_prefix: str | None = None,
        types: Sequence[str] = (),
        correlation_id: str | None = None,
        poll_ms: int = 10,
    ) -> LogFollower:
        """As ``subscribe``, but yielding :class:`LogEntry` rows, as ``log()``
        does: JSON decoded, for any event type, known to this process or not."""
        return LogFollower(self._db, after, stream=stream, stream_prefix=stream_prefix,
                           types=type_names("follow", types), correlation_id=correlation_id, poll_ms=poll_ms)

    def consumer(
        self, name: str, *, stream: str | None = None, types: Sequence[str] = (), correlation_id: str | None = None
    ) -> Consumer:
        """A durable, named consumer of the events that match the filters: its
        position is kept in the file and moves with the commands its handler
        issues, in one transaction (see :class:`Consumer`)."""
        check_optional_text("consumer", "stream", stream, max_len=journal.MAX_STREAM_LEN)
        check_optional_text("consumer", "correlation_id", correlation_id)
        return Consumer(self, self._db, self._ctx.now, name, stream=stream, types=type_names("consumer", types),
                        correlation_id=correlation_id)

    # --- transactions and maintenance ----------------------------------------------------

    def backup(self, path: str) -> int:
        """An online copy of the journal in a new file at ``path`` (never
        overwritten), through SQLite's backup API in one step from one read
        snapshot: other threads and processes keep writing meanwhile. The
        copy appears only once complete and synced, and is verified. Returns
        the head it holds. Restore it with :func:`eventkernel.restore`."""
        if self._db.owns_write():
            raise InvalidArgument("backup refused: inside this thread's transaction (it would copy uncommitted work)")
        with self._db.read("backup") as conn:
            backup.copy_into("backup", conn, path)
        with open(path, read_only=True) as copy:
            report = copy.verify()
        if not report.ok:
            raise JournalCorrupt(f"backup to {path!r} failed verification: {'; '.join(report.problems[:3])}")
        return report.head

    @contextmanager
    def transaction(self) -> Iterator[Kernel]:
        """Run many commands in one transaction: one commit, one fsync.
        Everything commits together or nothing does; a command rejected inside
        undoes only itself and raises. A storage error, or a command failing
        after it started writing, rolls back the whole transaction: later
        commands in the block are refused, and nothing of it commits."""
        with self._db.write("transaction"):
            yield self

    def diff(self, a: int, b: int, *, progress: Progress | None = None) -> list[TableDiff]:
        """Per projection table, the rows added, removed and changed between
        journal positions ``a`` and ``b``."""
        with self.at(a, progress=progress) as before, self.at(b, progress=progress) as after:
            with translating(f"diffing positions {a} and {b}"):
                return self._projector.diff(before._db.conn, after._db.conn)

    def stats(self) -> Stats:
        """Head, events per type and per stream kind, file sizes, projections and their lag."""
        with self._db.read("stats") as conn:
            head = journal.head(conn)[0]
            by_type = dict(conn.execute("SELECT type, count(*) FROM journal GROUP BY type ORDER BY 2 DESC, 1"))
            by_kind = dict(conn.execute(
                "SELECT substr(stream, 1, instr(stream, ':') - 1) AS kind, count(*) FROM journal "
                "GROUP BY kind ORDER BY 2 DESC, 1"
            ))
            projections = {
                name: {"version": version, "position": position, "lag": head - position}
                for name, (version, position) in sorted(self._projector.positions(conn).items())
            }
            page_size, page_count = conn.pragma("page_size"), conn.pragma("page_count")
        files = {}
        if not self._db.in_memory:
            for suffix in ("", "-wal", "-shm"):
                p = self._db.path + suffix
                try:
                    files[os.path.basename(p)] = os.path.getsize(p)
                except OSError:  # absent, or removed by another process meanwhile
                    files[os.path.basename(p)] = 0
        return Stats(head=head, events_by_type=by_type, events_by_stream_kind=by_kind,
                     database_bytes=page_size * page_count, files=files, projections=projections)

    def rebuild(self, name: str | None = None, *, progress: Progress | None = None, from_scratch: bool = False) -> int:
        """Rebuild one projection (or all) from the journal; readers and writers
        keep working until the final swap. Starts from the newest snapshot
        (the events after it folded), unless ``from_scratch`` or there is
        none that holds these projections' versions. Returns the head it reflects."""
        check_optional_text("rebuild", "name", name)
        _check_progress("rebuild", progress)
        if type(from_scratch) is not bool:
            raise InvalidArgument(f"rebuild refused: from_scratch must be a bool, got {from_scratch!r:.60}")
        progress = self._db.guard("rebuild", progress)
        names = None if name is None else [name]
        self._projector.select(names)  # an unknown name is refused before any work
        build = None if from_scratch else (
            lambda: snapshots.build(self._db, self._projector, self.head, progress, shared=True))
        return self._projector.rebuild(self._db, names, progress, build=build)

    # --- snapshots ----------------------------------------------------------------------

    def snapshot(self, *, every: int | None = None, progress: Progress | None = None) -> int:
        """Store a snapshot of every projection at the head (if there is none
        there yet) and return the head; the kernel also makes them on its
        own (``snapshot_every=`` of :func:`open`). With ``every``, also fill
        the history: snapshots at multiples of ``every`` wherever two stored
        ones (or position 0 and the first) are more than ``every`` apart, so
        that ``k.at(any p)`` folds at most ``every`` events. Each snapshot
        stores only the pages that changed since the one before it."""
        where = "snapshot"
        _check_progress(where, progress)
        if every is not None:
            check_int(where, "every", every, minimum=1)
        if self._db.owns_write():
            raise InvalidArgument(f"{where} refused: inside this thread's transaction (a snapshot is of committed "
                                  "events, stored in transactions of its own)")
        self._db.check(where)
        if self._db.read_only is not None:
            raise ReadOnly(f"{where} refused: {self._db.read_only}")
        progress = self._db.guard(where, progress)
        with self._db.read(where) as conn:
            if not snapshots.present(conn):
                raise InvalidArgument(f"{where} refused: this file's format keeps no snapshots (open it writable "
                                      "once to upgrade it)")
            head = journal.head(conn)[0]
            targets = snapshots.plan(conn, self._projector, head, every)
        if targets:
            snapshots.take(self._db, self._projector, self._ctx.now, targets, progress)
        return head

    def snapshots(self) -> list[Snapshot]:
        """The stored snapshots, oldest first."""
        with self._db.read("listing the snapshots") as conn:
            return snapshots.listing(conn, self._projector)

    def drop_snapshots(self) -> int:
        """Drop every stored snapshot (views of the past replay from position
        1 until new ones are made); returns how many. Their space is reused
        by later writes (``k.compact`` or a VACUUM gives it back)."""
        if self._db.owns_write():
            raise InvalidArgument("drop_snapshots refused: inside this thread's transaction")
        with self._db.write("dropping the snapshots", shared=False) as conn:
            dropped = snapshots.drop_from(conn, 0)
        if self._snapshotter is not None:
            self._snapshotter.latest = None
        return dropped

    def erase(
        self, *, stream: str | None = None, stream_prefix: str | None = None, correlation_id: str | None = None,
        reason: str, actor: str | None = None, archive: str | None = None,
    ) -> Erasure:
        """Erase a subject's payloads from the journal itself: every event of
        ``stream``, of the streams starting with ``stream_prefix``, or with
        ``correlation_id`` (give one) keeps its place, type, stream, ids and
        times, but its data and metadata are blanked; the chain still
        verifies (it covers their digests, kept in the table ``erased``). The
        erasure is itself an event (``journal.payloads_erased`` on
        ``erasure:<id>``, naming ``reason`` and ``actor``). The projections
        that fold those events are rebuilt without them, in the same
        transaction; then the file is rewritten (VACUUM: time in proportion
        to its size) and its WAL checkpointed and truncated, so that no byte
        of the erased payloads remains in it, and the space they took is
        given back. A subject erased already is not recorded again, but the
        file is rewritten again (to finish a rewrite an I/O error stopped).

        After a compaction, a subject with events before the base needs
        ``archive`` (the file they moved to): they are erased there too, and
        the projections stored at the base are made again without them.
        Raises NotFound when no event matches.

        On PostgreSQL the server's rows are blanked in the same transaction
        (the journal's trigger allows only that change, and only for rows
        whose digests are in ``erased``), then ``VACUUM journal`` prunes the
        old row versions; bytes may stay in the server's free space, WAL and
        backups until it reuses or recycles them (``VACUUM FULL journal``
        rewrites the table). Every other process's replica follows the
        erasure: it blanks the rows, rebuilds the projections, and rewrites
        its file (a replica not open then does so when it next opens)."""
        where = "erase"
        if self._db.owns_write():
            raise InvalidArgument(f"{where} refused: inside this thread's transaction (an erasure commits and "
                                  "rewrites the file on its own)")
        chosen = [(n, v) for n, v in (("stream", stream), ("stream_prefix", stream_prefix),
                                      ("correlation_id", correlation_id)) if v is not None]
        if len(chosen) != 1:
            raise InvalidArgument(f"{where} refused: give exactly one of stream=, stream_prefix=, correlation_id=")
        name, value = chosen[0]
        check_text(where, name, value, max_len=journal.MAX_STREAM_LEN)
        check_text(where, "reason", reason, max_len=4096)
        check_optional_text(where, "actor", actor)
        if archive is not None:
            check_text(where, "archive", archive, max_len=4096)
        if self._db.found.level < migrations.ERASURE_LEVEL:
            raise InvalidArgument(f"{where} refused: this file's format cannot record erasures (open it writable once)")
        column = {"stream": "stream = ?", "stream_prefix": "substr(stream, 1, length(?)) = ?",
                  "correlation_id": "correlation_id = ?"}[name]
        args = (value, value) if name == "stream_prefix" else (value,)
        with self._db.read(where) as conn:
            base = journal.base(conn)
            predates = base is not None and _predates(conn, name, column, args)
        if predates and archive is None:
            assert base is not None
            raise InvalidArgument(
                f"{where} refused: {name} {value!r} has events before the journal's base {base[0]}, moved to the "
                f"archive {base[3]!r}; give archive= (the file they are in) to erase them there too and make the "
                "projections stored at the base again without them"
            )
        behind = None
        if archive is not None:
            if base is None:
                raise InvalidArgument(f"{where} refused: archive= is for a compacted journal; this one has no base")
            if self._replica is not None:  # (the server's image of the base is made again too)
                self._projector.refuse_others(self._replica.projections_at_base(), where, "erasure",
                                              "the journal's base on the server holds", "")
            behind = _Archived(where, os.path.abspath(archive), base, self._projector, name, column, args)
        chosen_rows = f"SELECT position FROM journal WHERE {column} AND stream NOT LIKE 'erasure:%'"
        with self._db.write(where) as conn:
            # What the erasure overwrites or frees is zeroed, not left on free pages.
            conn.pragma("secure_delete", True)
            try:
                rows: list[tuple[int, str, str, str | None]] = conn.execute(  # type: ignore[assignment]
                    f"SELECT position, type, data, meta FROM journal WHERE position IN ({chosen_rows}) "
                    "AND position NOT IN (SELECT position FROM erased) ORDER BY position", args,
                ).fetchall()
                archived = [] if behind is None else behind.rows
                touched: list[str] = []
                if rows or archived:
                    self._projector.unapplied(conn, where, "erasure")  # (they would keep the payloads)
                    every = [*archived, *rows]
                    event = PayloadsErased(reason=reason, count=len(every), first=every[0][0], last=every[-1][0],
                                           **{name: value})
                    now = self._ctx.stamp()
                    meta: dict[str, Any] = {} if actor is None else {"actor": actor}
                    if behind is not None:
                        meta["archive"] = behind.path
                    appended = self._ctx.emit(f"erasure:{new_id('era', now)}", [event], recorded_at=now,
                                              meta=meta or None, where=where)
                    at = appended.records[-1].position
                    conn.executemany(
                        "INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?)",
                        ((p, journal.digest(d), None if m is None else journal.digest(m), at)
                         for p, _, d, m in rows),
                    )
                    conn.executemany("UPDATE journal SET data = 'null', meta = NULL WHERE position = ?",
                                     ((p,) for p, _, _, _ in rows))
                    types = {t for _, t, _, _ in every}
                    touched = [m.NAME for m in self._projector.modules if not types.isdisjoint(m.HANDLES)]
                    if behind is not None and archived:
                        # The projections at the base, made again without the archived events.
                        assert base is not None
                        snapshots.drop_from(conn, 0, keep_base=False)
                        image, size = behind.base_image()
                        compaction._store_full(conn, self._projector, base[0], image, size, now)
                        dropped = [p for (p,) in conn.execute(f"SELECT position FROM base_payloads WHERE {column}",
                                                              args)]
                        conn.execute(f"DELETE FROM base_payloads WHERE {column}", args)
                        touched = [m.NAME for m in self._projector.modules]
                        if self._replica is not None:  # the server's copy of the base, made the same
                            self._replica.rebasing = compaction.Rebase(
                                position=base[0], projections=snapshots.key(self._projector), page_size=size,
                                image=image, dropped=dropped)
                    elif rows:
                        # Snapshots from the first erased event on hold what it erased.
                        snapshots.drop_from(conn, rows[0][0])
                    if touched:
                        self._projector.rebuild(self._db, touched, build=lambda: snapshots.build(
                            self._db, self._projector, at))
                else:
                    # Erased already (an earlier erasure, perhaps one whose rewrite an I/O error
                    # stopped): nothing to record, but the file is rewritten again below.
                    found = conn.execute(f"SELECT max(erasure) FROM erased WHERE position IN ({chosen_rows})",
                                         args).fetchone()
                    if (found is None or found[0] is None) and behind is None:
                        raise NotFound(f"{where} refused: no event has {name} {value!r}")
                    at = 0 if found is None or found[0] is None else int(found[0])
            finally:
                try:
                    conn.pragma("secure_delete", False)
                except apsw.Error:
                    pass  # a connection a failure closed: the next one starts with the default
        # Pages keep stale bytes in their free space (a split or a merge
        # leaves them): rewrite the file, which also gives free pages back.
        self._db.vacuum(where)
        cleared = True
        if self._replica is not None:  # the server's old row versions pruned
            self._replica.pg.vacuum()
        if not self._db.in_memory:
            try:
                self._db.checkpoint("truncate")  # the WAL's older page images held the payloads too
            except JournalError:
                cleared = False
            wal = self._db.path + "-wal"
            cleared = cleared and (not os.path.exists(wal) or os.path.getsize(wal) == 0)
        if behind is not None:
            behind.finish(at)  # then in the archive, recording this erasure's position
        if self._snapshotter is not None:
            self._snapshotter.latest = None  # learnt again: the newest ones may be gone
        return Erasure(position=at, events=len(rows) + (0 if behind is None else len(behind.rows)),
                       projections=touched, wal_cleared=cleared)

    def compact(self, *, before: int, archive: str) -> compaction.Compaction:
        """Move the events before position ``before`` into a new journal file
        at ``archive`` (same positions, same hashes, its projections rebuilt,
        verified), then record the base in this file — the last event moved,
        its hash, each stream's version, the payloads live rows still read,
        a snapshot of every projection there — delete the moved rows and
        give their space back (VACUUM). Afterwards this file verifies from
        its base, ``k.at(p)`` for ``p`` before it refuses naming the
        archive, and the archive's head hash is the recorded base hash.
        An existing ``archive`` is used only if it holds exactly this
        journal up to there (a compaction stopped before it finished).
        Command ids and event ids of moved events are forgotten: a retry
        after the compaction runs again.

        On PostgreSQL the archive is written from this process's replica,
        and the base is recorded on the server (``journal_base``, the
        projections there in ``base_image``) in the transaction that deletes
        the moved rows there; every replica follows, and a new replica
        starts from the stored base. The sizes reported are the replica's."""
        where = "compact"
        if self._db.owns_write():
            raise InvalidArgument(f"{where} refused: inside this thread's transaction (a compaction commits and "
                                  "rewrites the file on its own)")
        check_int(where, "before", before, minimum=0)
        check_text(where, "archive", archive, max_len=4096)
        self._db.check(where)
        if self._db.read_only is not None:
            raise ReadOnly(f"{where} refused: {self._db.read_only}")
        if self._db.in_memory:
            raise InvalidArgument(f"{where} refused: an in-memory journal has no file to compact")
        if self._db.found.level < migrations.COMPACTION_LEVEL:
            raise InvalidArgument(f"{where} refused: this file's format cannot record a base (open it writable once)")
        path = os.path.abspath(archive)
        if path == self._db.path:
            raise InvalidArgument(f"{where} refused: the archive cannot be the journal itself")
        if not os.path.isdir(os.path.dirname(path)):
            raise InvalidArgument(f"{where} refused: the directory {os.path.dirname(path)!r} does not exist")
        if self._replica is not None:  # (the projections stored at the base must hold every process's)
            self._projector.refuse_others(self._replica.projections_known(), where, "compaction",
                                          "the journal on the server holds",
                                          "(A projection no process uses any more: drop its tables on the server "
                                          "and delete its row from projection_tables.)")
        done = compaction.compact(where, self._db, self._projector, self._ctx.now, before - 1, path, self._replica)
        if self._snapshotter is not None:
            self._snapshotter.latest = None
        return done

    def verify(self, *, anchor: tuple[int, str] | None = None, progress: Progress | None = None,
               all_snapshots: bool = False) -> VerifyReport:
        """Check the file, the journal's order and hash chain, and that every
        projection equals a rebuild row for row. ``anchor=(report.head,
        report.head_hash)`` from an earlier report also detects a cut tail.
        On PostgreSQL: the server's journal, then this process's replica
        (brought up to it) as a file, and that the two chains are one.
        In a writable process with application projections, these first fold
        what other processes appended without them (the file's own upkeep,
        as before a command). Never raises for what it finds; raises
        InvalidArgument for a bad anchor."""
        _check_progress("verify", progress)
        if anchor is not None and not (
            isinstance(anchor, tuple) and len(anchor) == 2 and type(anchor[0]) is int and anchor[0] >= 0
            and isinstance(anchor[1], str) and len(anchor[1]) == 64
        ):
            raise InvalidArgument(
                f"verify refused: anchor must be (position, 64-hex-digit head_hash), got {anchor!r:.100}"
            )
        if type(all_snapshots) is not bool:
            raise InvalidArgument(f"verify refused: all_snapshots must be a bool, got {all_snapshots!r:.60}")

        def local(anchor: tuple[int, str] | None = anchor) -> VerifyReport:
            return verify(self._db, self._projector, anchor=anchor, progress=self._db.guard("verify", progress),
                          kernel_kinds=KERNEL_STREAM_KINDS, all_snapshots=all_snapshots)

        if self._replica is not None:  # the server's journal, then the replica against it
            return self._replica.verify(lambda: local(None), anchor)
        try:
            self._fresh("verify")  # what other processes appended without this process's projections
        except KernelError as e:  # they stay behind the journal, which the report says, with why
            report = local()
            return msgspec.structs.replace(report, ok=False, problems=[
                *report.problems, f"this process's projections cannot fold what other processes appended: {e}"])
        return local()

    def catch_up(self) -> int:
        """Make this process's reads reflect every commit the journal held
        when called, another process's included; returns the head they
        reflect. On PostgreSQL the replica folds what the server holds past
        its head (one round trip when there is nothing new): reads otherwise
        lag other processes by about a notification. On a file reads see
        every commit already; this folds an application projection that
        another process's events left behind (as ``k.table`` does). Inside
        this thread's transaction on PostgreSQL, which caught up when it
        took the lock, it folds nothing."""
        where = "catch_up"
        self._db.check(where)
        self._fresh(where)
        return self.head

    def _fresh(self, doing: str) -> None:
        """Fold into this process's projections what other processes appended
        without them (a process opened without an application's projection
        still appends its events), so that a read of their tables agrees with
        the journal. One read when nothing is missing; otherwise a write
        transaction of the file's own upkeep, all of it or nothing. Raises as
        a command's catch-up does (ProjectionFailed: a projection cannot fold
        one of those events; JournalError: another process rebuilt it at
        another VERSION; JournalBusy). Only application projections can lag:
        every writer applies the kernel's own. A read-only open cannot fold
        (its reads lag until a writable process folds them). On PostgreSQL
        the replica folds what the server holds past its head (every
        projection lags there until then), except inside this thread's
        transaction, which caught up when it took the lock."""
        db, projector = self._db, self._projector
        if self._replica is not None:
            if not db.owns_write():
                self._replica.catch_up()
            return
        if not projector.user_names or db.read_only is not None:
            return
        with db.read(doing) as conn:
            head = journal.head(conn)[0]
            behind = any(name in projector.by_name and (position < head or version != projector.by_name[name].VERSION)
                         for name, (version, position) in projector.positions(conn).items())
        if behind:
            with db.write(doing, shared=False) as conn:
                projector.overtake(conn, journal.head(conn)[0])

    def checkpoint(self, mode: Literal["passive", "full", "restart", "truncate"] = "passive") -> tuple[int, int]:
        """Copy the WAL into the database file now (maintenance: the kernel
        checkpoints by itself once the WAL passes 4,000 pages; this waits for
        one in progress). Returns (WAL pages, pages copied)."""
        return self._db.checkpoint(mode)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        if self._closed:
            return
        if self._snapshotter is not None:
            self._db.after_commit = None
            self._snapshotter.close()
        if self._replica is not None:
            self._replica.close()
        try:
            with translating(f"closing {self._db.path!r}"):
                self._db.close()
        finally:
            self._remove_scratch()
        self._closed = True

    def __reduce__(self) -> Any:
        raise WrongProcess(
            "a Kernel cannot be pickled: its SQLite connections belong to the process that opened it; "
            "send the path instead and open one kernel per process"
        )

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Kernel {self._db.path!r} synchronous={self._db.synchronous}>"


def _predates(conn: apsw.Connection, name: str, column: str, args: tuple[str, ...]) -> bool:
    """Whether the subject has events before the journal's base (moved to an archive)."""
    table, key = ("base_correlations", "correlation_id") if name == "correlation_id" else ("base_streams", "stream")
    sql = f"SELECT 1 FROM {table} WHERE {column.replace('stream', key)} LIMIT 1"  # names from erase's own table
    return conn.execute(sql, args).fetchone() is not None


class _Archived:
    """A subject's events in the archive of a compacted journal: found (and
    the archive checked to be this journal's, up to the base) before the
    erasure; the projections at the base made without them; erased there
    after the live file records the erasure."""

    def __init__(self, where: str, path: str, base: tuple[int, bytes, int, str], projector: Projector, name: str,
                 column: str, args: tuple[str, ...]) -> None:
        self.where, self.path, self.column, self.args = where, path, column, args
        self.projector = projector
        if not os.path.exists(path):
            raise InvalidArgument(f"{where} refused: the archive {path!r} does not exist")
        with open(path, read_only=True, snapshot_every=0, projections=projector.user) as a, a._db.read(where) as conn:
            head = journal.head(conn)
            if head != (base[0], base[1]):
                raise InvalidArgument(
                    f"{where} refused: {path!r} is not this journal's archive (its head is position {head[0]}, "
                    f"the base is {base[0]} with another hash)")
            if journal.base(conn) is not None and _predates(conn, name, column, args):
                raise InvalidArgument(f"{where} refused: the subject has events in an older archive, before "
                                      f"{path!r}'s own base; erase it there first")
            self.rows: list[tuple[int, str, str, str | None]] = conn.execute(  # type: ignore[assignment]
                f"SELECT position, type, data, meta FROM journal WHERE {column} AND stream NOT LIKE 'erasure:%' "
                "AND position NOT IN (SELECT position FROM erased) ORDER BY position", args).fetchall()
        self.base = base

    def base_image(self) -> tuple[bytes, int]:
        """Every projection as of the base, replayed from the archive with the subject's payloads erased."""
        with open(self.path, read_only=True, snapshot_every=0, projections=self.projector.user) as a:
            mem, upto = self.projector.build_in_memory(a._db, erased=frozenset(p for p, *_ in self.rows))
        try:
            assert upto == self.base[0]
            return mem.serialize("main"), int(mem.pragma("page_size"))
        finally:
            mem.close()

    def finish(self, erasure: int) -> None:
        """Erase the rows in the archive (their ``erasure`` is the live
        file's event), rebuild its projections, rewrite it. Done again, it
        finds what is left to erase and rewrites the archive again."""
        with open(self.path, snapshot_every=0, projections=self.projector.user) as a:
            db = a._db
            with db.write(self.where) as conn:
                conn.pragma("secure_delete", True)
                try:
                    rows: list[tuple[int, str, str, str | None]] = conn.execute(  # type: ignore[assignment]
                        f"SELECT position, type, data, meta FROM journal WHERE {self.column} AND stream NOT LIKE "
                        "'erasure:%' AND position NOT IN (SELECT position FROM erased) ORDER BY position",
                        self.args).fetchall()
                    if rows:
                        conn.executemany(
                            "INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?)",
                            ((p, journal.digest(d), None if m is None else journal.digest(m), erasure)
                             for p, _, d, m in rows))
                        conn.executemany("UPDATE journal SET data = 'null', meta = NULL WHERE position = ?",
                                         ((p,) for p, *_ in rows))
                        snapshots.drop_from(conn, int(rows[0][0]))
                        types = {t for _, t, _, _ in rows}
                        touched = [m.NAME for m in a._projector.modules if not types.isdisjoint(m.HANDLES)]
                        if touched:
                            a._projector.rebuild(db, touched)
                finally:
                    try:
                        conn.pragma("secure_delete", False)
                    except apsw.Error:
                        pass
            db.vacuum(self.where)
            try:
                db.checkpoint("truncate")
            except JournalError:
                pass
