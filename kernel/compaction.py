"""Compaction: move a prefix of the journal into an archive file.

``k.compact(before=p, archive=PATH)`` writes the events before ``p`` into
``PATH``, a journal like any other (same positions, same hashes, its
projections rebuilt, verified), then, in one transaction of the live file,
records the base (the last event moved, its hash, each stream's version
there, the payloads live rows still read, a full snapshot of every
projection there) and deletes the moved rows; a VACUUM then gives their
space back. A crash at any moment leaves the live file either as it was or
compacted, and an archive only once complete (written under a temporary
name, verified, synced, then linked into place); a compaction stopped
between the two finds its archive on the next run and uses it.
"""

from __future__ import annotations

import os
import secrets
import zlib
from array import array
from typing import Any

import apsw
import msgspec

from eventkernel import journal, snapshots
from eventkernel.backup import fsync, link_new, remove_files
from eventkernel.connection import Database
from eventkernel.errors import InvalidArgument, JournalCorrupt, JournalError
from eventkernel.projector import Projector


class Compaction(msgspec.Struct, frozen=True, kw_only=True):
    """What ``k.compact`` did: the base (the last position moved), its hash
    (the archive's head hash), the archive, how many events it moved, how
    many payloads live rows still read were kept, and the database's size
    before and after (its pages, the WAL's included)."""

    base: int
    base_hash: str
    archive: str
    events: int
    payloads_kept: int
    bytes_before: int
    bytes_after: int


def _triggers(conn: apsw.Connection, *names: str) -> list[str]:
    return [str(sql) for (sql,) in conn.execute(
        f"SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name IN ({', '.join('?' * len(names))})", names)]


def _write_archive(where: str, db: Database, projector: Projector, position: int, head_hash: bytes,
                   path: str) -> None:
    """The journal as of ``position`` into a new file at ``path``: a copy of
    the live file cut after ``position``, its projections (the application's
    among them) rebuilt, verified, rewritten (no page of what follows
    stays), synced, then linked into place."""
    from eventkernel.kernel import open as open_kernel  # the archive is opened as any journal is

    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with db.read(f"{where}: copying the journal") as source:
            dest = apsw.Connection(tmp)
            try:
                with dest.backup("main", source, "main") as step:
                    step.step(-1)  # one consistent snapshot of the live file
            finally:
                dest.close()
        dest = apsw.Connection(tmp)
        try:
            dest.execute("PRAGMA journal_mode=WAL")
            with dest:
                saved = _triggers(dest, "journal_no_delete", "erased_no_delete")
                dest.execute("DROP TRIGGER IF EXISTS journal_no_delete; DROP TRIGGER IF EXISTS erased_no_delete")
                dest.execute("DELETE FROM journal WHERE position > ?", (position,))
                dest.execute("DELETE FROM erased WHERE position > ?", (position,))
                for sql in saved:
                    dest.execute(sql)
                snapshots.drop_from(dest, position + 1)
                dest.execute("DELETE FROM projection_positions")  # rebuilt on the archive's first open
        finally:
            dest.close()
        # Rebuilds every projection as of ``position``: from the base before it, if any, which holds
        # the application's projections too.
        with open_kernel(tmp, snapshot_every=0, projections=projector.user) as archive:
            report = archive.verify()
            if not report.ok or report.head != position or report.head_hash != head_hash.hex():
                raise JournalCorrupt(f"{where}: the archive written to {tmp!r} does not verify: "
                                     f"{'; '.join(report.problems[:3]) or 'its head is not the base'}")
        dest = apsw.Connection(tmp)
        try:
            dest.execute("VACUUM")  # no page of the events after the base stays in the archive
            dest.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dest.close()
        fsync(tmp)
        link_new(where, tmp, path)
        fsync(directory)
    except apsw.Error as e:
        raise JournalError(f"{where} failed while writing the archive {path!r}: {e}") from e
    except OSError as e:
        raise JournalError(f"{where} failed while writing the archive {path!r}: {e}") from e
    finally:
        remove_files(tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal")


def _remove_stale(directory: str, name: str) -> None:
    """Remove what a compaction killed while writing this archive left (its
    temporary files, named after a process that is gone)."""
    prefix = f".{name}."
    for entry in os.listdir(directory):
        if not entry.startswith(prefix) or ".tmp" not in entry:
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # a live process is writing it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        try:
            os.remove(os.path.join(directory, entry))
        except FileNotFoundError:
            pass


def _archive_holds(where: str, path: str, position: int, head_hash: bytes) -> None:
    """An existing archive is used only if it is this journal up to ``position``."""
    from eventkernel.kernel import open as open_kernel

    try:
        with open_kernel(path, read_only=True) as archive:
            report = archive.verify()
    except JournalError as e:
        raise InvalidArgument(f"{where} refused: {path!r} exists and is not a journal ({e})") from e
    if not report.ok or report.head != position or report.head_hash != head_hash.hex():
        raise InvalidArgument(
            f"{where} refused: {path!r} exists and is not this journal's archive up to position {position} "
            f"(its head is {report.head}{'' if report.ok else ', and it does not verify'}); give a new path"
        )


def _base_image(db: Database, projector: Projector, position: int) -> tuple[bytes, int]:
    """Every projection as of ``position``, as a database image, and its page size."""
    mem, upto = snapshots.build(db, projector, position)
    try:
        if upto != position:
            raise JournalError(f"the projections as of position {position} cannot be built")
        return mem.serialize("main"), int(mem.pragma("page_size"))
    finally:
        mem.close()


def _store_full(conn: apsw.Connection, projector: Projector, position: int, img: bytes, size: int, now: int,
                projections: str | None = None) -> None:
    """Store ``img`` as a snapshot at ``position`` that needs no other, of
    ``projections`` (a snapshot key; by default this process's)."""
    runs = snapshots._runs(None, img, size)
    count = len(img) // size
    sources, firsts = array("q", [0]) * count, array("q", [0]) * count
    for first, n, _ in runs:
        sources[first:first + n] = array("q", [position]) * n
        firsts[first:first + n] = array("q", [first]) * n
    conn.execute(
        "INSERT INTO snapshots (position, parent, projections, page_size, page_count, pages, bytes, crc32, page_map, "
        "created_at) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
        (position, projections or snapshots.key(projector), size, count, count, sum(len(d) for _, _, d in runs),
         zlib.crc32(img),
         snapshots._map_blob(sources, firsts), now),
    )
    conn.executemany(
        "INSERT INTO snapshot_pages (snapshot, first_page, pages, data, crc32) VALUES (?, ?, ?, ?, ?)",
        ((position, first, n, data, zlib.crc32(data)) for first, n, data in runs),
    )


def payload_positions(projector: Projector) -> str | None:
    """SQL selecting the journal positions whose payload live rows read
    (each projection's ``PAYLOADS``), or None."""
    parts = [str(m.PAYLOADS) for m in projector.modules if isinstance(getattr(m, "PAYLOADS", None), str)]
    return " UNION ".join(parts) if parts else None


class Base(msgspec.Struct, frozen=True, kw_only=True):
    """What a compaction recorded in the file, for the journal on PostgreSQL
    (:class:`eventkernel.postgres.Replica` sends it with the transaction's
    COMMIT): the base row, the projections there as an image, and the
    payloads kept."""

    position: int
    hash: bytes
    recorded_at: int
    archive: str
    compacted_at: int
    projections: str
    page_size: int
    image: bytes
    payloads: list[tuple[Any, ...]]


class Rebase(msgspec.Struct, frozen=True, kw_only=True):
    """What an erasure reaching into the archive changed at the base, for
    the journal on PostgreSQL: the projections there made again without the
    erased events, and the kept payloads it dropped."""

    position: int
    projections: str
    page_size: int
    image: bytes
    dropped: list[int]


def record(conn: apsw.Connection, projector: Projector, position: int, head_hash: bytes, recorded_at: int,
           archive: str, compacted_at: int, img: bytes, size: int) -> tuple[int, int]:
    """In the open write transaction: record the base at ``position`` (its
    row, each stream's version there, the correlation ids and the payloads
    live rows still read of the events up to it, the projections there as a
    full snapshot) and delete the journal's rows up to it. Returns (rows
    deleted, payloads kept)."""
    counted: Any = conn.execute("SELECT count(*) FROM journal WHERE position <= ?", (position,)).fetchone()
    moved = int(counted[0])
    conn.execute(
        "INSERT INTO journal_base (position, hash, recorded_at, archive, compacted_at) VALUES (?, ?, ?, ?, ?)",
        (position, head_hash, recorded_at, archive, compacted_at),
    )
    conn.execute(
        "INSERT INTO base_streams (stream, version) SELECT stream, max(version) FROM journal WHERE position <= ? "
        "GROUP BY stream ON CONFLICT (stream) DO UPDATE SET version = excluded.version", (position,),
    )
    conn.execute(
        "INSERT OR IGNORE INTO base_correlations (correlation_id) SELECT DISTINCT correlation_id FROM journal "
        "WHERE position <= ? AND correlation_id IS NOT NULL", (position,),
    )
    kept = 0
    payloads = payload_positions(projector)
    if payloads is not None:
        conn.execute(
            "INSERT OR REPLACE INTO base_payloads (position, stream, type, schema, data, correlation_id) "
            f"SELECT position, stream, type, schema, data, correlation_id FROM journal WHERE position <= ? "
            f"AND position IN ({payloads})", (position,),
        )
        kept = int(conn.changes())
        # Those no live row reads any more (an earlier base's) go.
        conn.execute(f"DELETE FROM base_payloads WHERE position NOT IN ({payloads})")
    snapshots.drop_from(conn, 0, keep_base=False)
    _store_full(conn, projector, position, img, size, compacted_at)
    conn.execute("DELETE FROM journal WHERE position <= ?", (position,))
    conn.execute("DELETE FROM erased WHERE position <= ?", (position,))
    return moved, kept


def compact(where: str, db: Database, projector: Projector, now: Any, position: int, path: str,
            replica: Any = None) -> Compaction:
    """Move the events up to ``position`` into the archive at ``path`` (see
    the module). With ``replica`` (the journal is on PostgreSQL, ``db`` its
    replica), the archive is written from the replica and the base is
    recorded on the server too, in one transaction of both."""
    if replica is not None:
        replica.pull()  # (the replica at the server's head: the archive is written from it)
    with db.read(where) as conn:
        projector.unapplied(conn, where, "compaction")  # (they would miss the events moved away)
        head = journal.head(conn)[0]
        current = journal.base(conn)
        start = 0 if current is None else current[0]
        if not start < position < head:
            raise InvalidArgument(
                f"{where} refused: before must be between {start + 2} and the head {head} (the events before it move "
                f"to the archive; at least one moves and the last event stays), got {position + 1}"
            )
        found = conn.execute("SELECT hash, recorded_at FROM journal WHERE position = ?", (position,)).fetchone()
        assert found is not None  # positions are dense after the base
        head_hash, recorded_at = bytes(found[0]), int(found[1])
        marker = snapshots._marker(conn)
    _remove_stale(os.path.dirname(path), os.path.basename(path))
    if os.path.lexists(path):
        _archive_holds(where, path, position, head_hash)
    else:
        _write_archive(where, db, projector, position, head_hash, path)
    img, size = _base_image(db, projector, position)
    before = _database_bytes(db, where)
    with db.write(where) as conn:  # (on PostgreSQL: under the server's lock, the replica caught up)
        if snapshots._marker(conn) != marker or journal.base(conn) != current or (
                replica is not None and replica.server_base != start):  # (another process's, on the server)
            raise JournalError(f"{where} failed: an erasure or another compaction ran meanwhile; compact again "
                               f"(the archive {path!r} is kept and will be used)")
        # This process's projections fold first what other processes appended without them: the
        # events moved away would never reach them afterwards.
        projector.overtake(conn, journal.head(conn)[0])
        compacted_at = now()
        moved, kept = record(conn, projector, position, head_hash, recorded_at, path, compacted_at, img, size)
        if replica is not None:
            replica.compacting = Base(
                position=position, hash=head_hash, recorded_at=recorded_at, archive=path, compacted_at=compacted_at,
                projections=snapshots.key(projector), page_size=size, image=img,
                payloads=[tuple(r) for r in conn.execute(
                    "SELECT position, stream, type, schema, data, correlation_id FROM base_payloads ORDER BY position")],
            )
    db.vacuum(where)  # the moved rows' pages back to the file system
    if replica is not None:
        replica.pg.vacuum()  # the server's dead rows made reusable
    try:
        db.checkpoint("truncate")
    except JournalError:
        pass  # another connection holds the WAL; it is truncated by a later checkpoint
    return Compaction(base=position, base_hash=head_hash.hex(), archive=path, events=moved, payloads_kept=kept,
                      bytes_before=before, bytes_after=_database_bytes(db, where))


def _database_bytes(db: Database, where: str) -> int:
    """The database's size: its pages, those the WAL holds included (the
    file's size once checkpointed; the file alone may not hold them yet)."""
    with db.read(where) as conn:
        return int(conn.pragma("page_count")) * int(conn.pragma("page_size"))
