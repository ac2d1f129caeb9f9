"""Projection snapshots: the past without replaying the journal from position 1.

A snapshot is the image of every projection table as of a journal position:
the private SQLite database a rebuild produces, page by page (``serialize``).
It is made by loading the nearest earlier snapshot's image, folding the
events after it one by one (as live commands do), and storing only the pages
that changed, compressed, in runs of consecutive pages; its page map names,
for every page of its image, the stored run that holds it (its own, or an
earlier snapshot's). Views of the past open an image through a VFS that
decompresses a page when SQLite first reads it, so a view costs the pages
its fold and its reads touch, not the whole image. CRC-32s of each stored
run and of the whole image find damage: a damaged snapshot is replayed
around, and ``verify`` reports it.

Snapshots are derived data: ``verify`` checks them against a rebuild, an
erasure drops every snapshot from its first erased event on (they would
hold the erased values), and they can be dropped and made again at any time.
"""

from __future__ import annotations

import logging
import threading
import zlib
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apsw
import msgspec

from eventkernel import journal
from eventkernel.connection import Database, memory_connection, plan_once
from eventkernel.errors import JournalCorrupt, JournalError, KernelError
from eventkernel.projector import Progress, Projector

log = logging.getLogger("eventkernel")

DEFAULT_EVERY = 10_000
"""Events between automatic snapshots: a view of the past folds at most this
many events after loading one (about 0.15 s on a small machine)."""

_RUN = 16  # pages per stored run, at most
_LEVEL = 6  # zlib level: snapshots are written once, in the background, and read often
_THREADS = 2  # decompressing a snapshot's pages
# Pages of the images: smaller pages store less per change (a row updated in
# a 1 KiB page rewrites 1 KiB); on a 1M-event journal, 10,000 events changed
# 3.3 MB of compressed 1 KiB pages against 4.6 MB of 4 KiB ones.
_PAGE_SIZE = 1024


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One stored snapshot (``k.snapshots()``): its position, the snapshot
    whose pages it shares (None: it stores every page), the pages of its
    image and those it stores itself, the bytes it stores (compressed), when
    it was made, and whether it holds this kernel's projections (a snapshot
    made by a process with other projections or versions is not used)."""

    position: int
    parent: int | None
    page_count: int
    pages: int
    bytes: int
    created_at: int
    usable: bool


def key(projector: Projector) -> str:
    """What a snapshot must hold to be used: every projection, at its version."""
    return msgspec.json.encode(dict(sorted((m.NAME, m.VERSION) for m in projector.modules))).decode()


def covers(stored: str, projector: Projector) -> bool:
    """Whether a snapshot stored for the projections ``stored`` (its key)
    holds each of this process's at its version (it may hold others too:
    :func:`from_base` drops those)."""
    try:
        versions = msgspec.json.decode(stored, type=dict[str, int])
    except msgspec.MsgspecError:
        return False
    return all(versions.get(m.NAME) == m.VERSION for m in projector.modules)


def present(conn: apsw.Connection) -> bool:
    """Whether the file's format keeps snapshots."""
    return bool(conn.table_exists("main", "snapshots"))


def listing(conn: apsw.Connection, projector: Projector) -> list[Snapshot]:
    if not present(conn):
        return []
    want = key(projector)
    return [
        Snapshot(position=p, parent=parent, page_count=count, pages=pages, bytes=size, created_at=at,
                 usable=projections == want)
        for p, parent, count, pages, size, at, projections in conn.execute(
            "SELECT position, parent, page_count, pages, bytes, created_at, projections FROM snapshots "
            "ORDER BY position"
        )
    ]


def nearest(conn: apsw.Connection, projector: Projector, position: int) -> int | None:
    """The position of the newest usable snapshot at or before ``position``."""
    if not present(conn):
        return None
    row = conn.execute(
        "SELECT position FROM snapshots WHERE projections = ? AND position <= ? ORDER BY position DESC LIMIT 1",
        (key(projector), position),
    ).fetchone()
    return None if row is None else int(row[0])


def _map(blob: bytes, count: int) -> tuple[array[int], array[int]]:
    """A page map: per page, the position of the snapshot storing it and the first page of its run."""
    raw = array("q")
    raw.frombytes(zlib.decompress(blob))
    if len(raw) != 2 * count:
        raise ValueError(f"{len(raw)} entries for {count} pages")
    return raw[:count], raw[count:]


def _map_blob(sources: array[int], firsts: array[int]) -> bytes:
    raw = array("q", sources)
    raw.extend(firsts)
    return zlib.compress(raw.tobytes(), _LEVEL)


def _fetch(conn: apsw.Connection, position: int, where: tuple[int, int]) -> bytes:
    """The stored (compressed) run ``where`` = (snapshot, first page) that
    the snapshot at ``position`` needs, checked against its CRC-32."""
    found = conn.execute("SELECT data, crc32 FROM snapshot_pages WHERE snapshot = ? AND first_page = ?",
                         where).fetchone()
    if found is None:
        raise JournalCorrupt(f"the snapshot at position {position}: pages from {where[1]} of the snapshot at "
                             f"{where[0]} are stored nowhere")
    data = bytes(found[0])
    if zlib.crc32(data) != found[1]:
        raise JournalCorrupt(f"the snapshot at position {where[0]}: the run of pages from {where[1]} is damaged "
                             "(the journal is not: `eventkernel snapshot DB --drop` drops the snapshots, which "
                             "can be made again)")
    return data


def image(conn: apsw.Connection, position: int) -> bytearray:
    """The image of the snapshot at ``position``: its page map names the
    stored run holding each page; the runs are decompressed in two threads
    (zlib lets go of the GIL). Raises JournalCorrupt when a run is missing
    or unreadable, or the pages do not compose the image recorded."""
    row = conn.execute("SELECT page_size, page_count, crc32, page_map FROM snapshots WHERE position = ?",
                       (position,)).fetchone()
    if row is None:
        raise JournalCorrupt(f"no snapshot at position {position}")
    size, count, crc = int(row[0]), int(row[1]), int(row[2])
    try:
        sources, firsts = _map(row[3], count)
    except (zlib.error, ValueError) as e:
        raise JournalCorrupt(f"the snapshot at position {position}: its page map cannot be read ({e})") from e
    # The pages each stored run gives this image, in order.
    wanted: dict[tuple[int, int], list[int]] = {}
    for i in range(count):
        wanted.setdefault((sources[i], firsts[i]), []).append(i)
    buf = bytearray(size * count)

    def unpack(where: tuple[int, int], blob: bytes) -> bytes:
        try:
            return zlib.decompress(blob)
        except zlib.error as e:
            raise JournalCorrupt(f"the snapshot at position {where[0]}: pages from {where[1]} cannot be read "
                                 f"({e})") from e

    with ThreadPoolExecutor(_THREADS) as pool:
        # Fetched here (the connection is this thread's), decompressed in the pool.
        futures = [(where, pool.submit(unpack, where, _fetch(conn, position, where))) for where in wanted]
        for (source, first), future in futures:
            data = future.result()
            pages = wanted[(source, first)]
            if len(data) < (pages[-1] - first + 1) * size:
                raise JournalCorrupt(f"the snapshot at position {source}: the run of pages from {first} is cut short")
            lo, hi = pages[0], pages[-1] + 1
            if hi - lo == len(pages):  # consecutive: one copy
                buf[lo * size:hi * size] = data[(lo - first) * size:(hi - first) * size]
                continue
            for i in pages:
                buf[i * size:(i + 1) * size] = data[(i - first) * size:(i - first + 1) * size]
    if zlib.crc32(buf) != crc:
        raise JournalCorrupt(f"the snapshot at position {position}: its pages do not compose the image recorded")
    return buf


def load(conn: apsw.Connection, position: int) -> apsw.Connection:
    """A private in-memory database holding the snapshot's whole image."""
    mem = memory_connection()
    try:
        mem.deserialize("main", image(conn, position))
        mem.pragma("journal_mode", "off")
    except BaseException:
        mem.close()
        raise
    return mem


class _Image:
    """The pages of one snapshot's image, each decompressed when first read,
    and the pages written over them since (a view folding the events after
    the snapshot). Reading a page that is neither raises JournalCorrupt."""

    def __init__(self, source: apsw.Connection, position: int, size: int, count: int, sources: array[int],
                 firsts: array[int]) -> None:
        self.source = source  # a connection to the file, holding a read transaction: its runs cannot go
        self.position, self.size, self.length = position, size, size * count
        self.count, self.sources, self.firsts = count, sources, firsts
        self.runs: dict[tuple[int, int], bytes] = {}
        self.written: dict[int, bytes] = {}

    def close(self) -> None:
        try:
            self.source.close()
        except apsw.Error:
            pass

    def page(self, i: int) -> bytes:
        found = self.written.get(i)
        if found is not None:
            return found
        if i >= self.count:
            return bytes(self.size)
        where = (self.sources[i], self.firsts[i])
        data = self.runs.get(where)
        if data is None:
            blob = _fetch(self.source, self.position, where)
            try:
                data = self.runs[where] = zlib.decompress(blob)
            except zlib.error as e:
                raise JournalCorrupt(f"the snapshot at position {where[0]}: pages from {where[1]} cannot be read "
                                     f"({e})") from e
        at = (i - where[1]) * self.size
        if at + self.size > len(data):
            raise JournalCorrupt(f"the snapshot at position {where[0]}: the run of pages from {where[1]} is cut short")
        return data[at:at + self.size]

    def read(self, amount: int, offset: int) -> bytes:
        size = self.size
        end = min(offset + amount, self.length)
        if offset % size == 0 and end - offset == size:
            return self.page(offset // size)
        parts = []
        at = offset
        while at < end:
            i, skip = divmod(at, size)
            take = min(size - skip, end - at)
            parts.append(self.page(i)[skip:skip + take])
            at += take
        return b"".join(parts)

    def write(self, data: bytes, offset: int) -> None:
        size = self.size
        at, done = offset, 0
        while done < len(data):
            i, skip = divmod(at, size)
            take = min(size - skip, len(data) - done)
            if skip == 0 and take == size:
                self.written[i] = bytes(data[done:done + size])
            else:
                page = bytearray(self.page(i))
                page[skip:skip + take] = data[done:done + take]
                self.written[i] = bytes(page)
            at += take
            done += take
        self.length = max(self.length, offset + len(data))

    def truncate(self, length: int) -> None:
        self.length = length
        pages = -(-length // self.size)
        for i in [i for i in self.written if i >= pages]:
            del self.written[i]
        self.count = min(self.count, pages)


class _File:
    """The file SQLite sees for an :class:`_Image`: reads and writes go to
    it; locks, syncs and file controls have nothing to do."""

    def __init__(self, image: _Image) -> None:
        self.image = image

    def xRead(self, amount: int, offset: int) -> bytes:
        return self.image.read(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        self.image.write(data, offset)

    def xFileSize(self) -> int:
        return self.image.length

    def xTruncate(self, newsize: int) -> None:
        self.image.truncate(newsize)

    def xSync(self, flags: int) -> None:
        pass

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 0

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        self.image.close()


class _VFS(apsw.VFS):
    """Opens the images registered under their names; anything else (a
    temporary file) through the default VFS."""

    NAME = "eventkernel-snapshot"

    def __init__(self) -> None:
        super().__init__(self.NAME, "")
        self.images: dict[str, _Image] = {}
        self.lock = threading.Lock()

    def xFullPathname(self, name: str) -> str:
        with self.lock:
            if name in self.images:
                return name  # not a path: the name it is registered under
        return str(super().xFullPathname(name))

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> Any:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        with self.lock:
            image = self.images.get(filename) if filename is not None else None
        if image is None:
            return super().xOpen(name, flags)
        return _File(image)


_vfs: _VFS | None = None
_vfs_lock = threading.Lock()


def _the_vfs() -> _VFS:
    global _vfs
    with _vfs_lock:
        if _vfs is None:
            _vfs = _VFS()
        return _vfs


def open_lazily(db: Database, conn: apsw.Connection, position: int) -> apsw.Connection:
    """A private database holding the snapshot's image, whose stored runs
    are read and decompressed only when SQLite first reads one of their
    pages: opening it costs a page map, and a view that folds a few thousand
    events and reads a few rows touches a few thousand pages, not the whole
    image. It reads the file through a connection of its own holding a read
    transaction until it is closed (as a long read does: the WAL cannot be
    checkpointed past it meanwhile). Written pages stay in memory. A kernel
    in memory, or a thread inside its write transaction, gets the whole
    image at once."""
    if db.in_memory or db.owns_write():
        # No file to read, or this thread's transaction may have changed the
        # snapshots: a reader of its own would not see that.
        return load(conn, position)
    source = db.open_reader()
    try:
        source.execute("BEGIN DEFERRED")
        row = source.execute("SELECT page_size, page_count, page_map FROM snapshots WHERE position = ?",
                             (position,)).fetchone()
        if row is None:
            # Dropped since the caller's snapshot found it (an erasure, a compaction, a replica following
            # one): read it whole from the caller's snapshot, which still holds it.
            source.close()
            return load(conn, position)
        size, count = int(row[0]), int(row[1])
        try:
            sources, firsts = _map(row[2], count)
        except (zlib.error, ValueError) as e:
            raise JournalCorrupt(f"the snapshot at position {position}: its page map cannot be read ({e})") from e
        image_ = _Image(source, position, size, count, sources, firsts)
    except BaseException:
        source.close()
        raise
    vfs = _the_vfs()
    name = f"eventkernel-snapshot-{position}-{id(image_):x}"
    with vfs.lock:
        vfs.images[name] = image_
    try:
        lazy = apsw.Connection(name, vfs=vfs.NAME, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI)
    except BaseException:
        image_.close()
        raise
    finally:
        with vfs.lock:
            del vfs.images[name]  # opened (or not): the connection's file holds the image
    try:
        lazy.execute("PRAGMA main.locking_mode = exclusive")  # not the journal a view attaches
        lazy.pragma("journal_mode", "off")
        lazy.pragma("synchronous", "off")
        lazy.pragma("temp_store", "memory")
        plan_once(lazy)
        lazy.pragma("cache_size", -(size * count // 1024 + 65536))  # every page read stays cached
    except BaseException:
        lazy.close()
        raise
    return lazy


def fold(projector: Projector, conn: apsw.Connection, mem: apsw.Connection, after: int, until: int,
         progress: Progress | None = None) -> None:
    """Apply the events ``after < position <= until`` to every projection in ``mem``."""
    if until <= after:
        return
    report = None if progress is None else (lambda n: progress(n, until - after))
    rows = journal.read_rows(conn, after=after, until=until, page=10_000, columns=projector.journal_columns())
    mem.execute("BEGIN")
    try:
        projector._fold_rows(mem.cursor(), rows, projector.modules, progress=report)
    except BaseException:
        mem.execute("ROLLBACK")
        raise
    mem.execute("COMMIT")


def build(db: Database, projector: Projector, until: int, progress: Progress | None = None, *,
          shared: bool = False) -> tuple[apsw.Connection, int]:
    """Every projection as of ``until`` (at most the head) in a private
    database: the nearest usable snapshot's image (its pages decompressed
    as they are read) with the events after it folded, or, without one, a
    replay from position 1 in memory (``shared``: for a rebuild's swap, see
    ``Projector.build_in_memory``). A snapshot found damaged on the way is
    reported in the log and replayed around."""
    with db.read("replaying the journal") as conn:
        head = journal.head(conn)[0]
        upto = min(until, head)
        base = nearest(conn, projector, upto)
        if base is not None:
            try:
                mem = open_lazily(db, conn, base)
                try:
                    fold(projector, conn, mem, base, upto, progress)
                except BaseException:
                    mem.close()
                    raise
            except (KernelError, apsw.Error) as e:
                if db.closed:
                    raise
                log.warning("snapshot at position %d of %r cannot be used (%s); replaying from position 1",
                            base, db.path, e)
            else:
                if progress is not None:
                    progress(upto - base, upto - base)
                return mem, upto
    return projector.build_in_memory(db, until=upto, progress=progress, shared=shared)


def _runs(prev: bytes | None, img: bytes, size: int) -> list[tuple[int, int, bytes]]:
    """(first page, pages, compressed bytes) of the runs of pages of ``img``
    that differ from ``prev`` (every page when there is none)."""
    count = len(img) // size
    new = memoryview(img)
    if prev is None:
        changed: Sequence[int] = range(count)
    else:
        old = memoryview(prev)
        had = len(prev) // size
        changed = [i for i in range(count) if i >= had or old[i * size:(i + 1) * size] != new[i * size:(i + 1) * size]]
    runs: list[tuple[int, int, bytes]] = []
    i = 0
    while i < len(changed):
        first = changed[i]
        n = 1
        while i + n < len(changed) and n < _RUN and changed[i + n] == first + n:
            n += 1
        runs.append((first, n, zlib.compress(new[first * size:(first + n) * size], _LEVEL)))
        i += n
    return runs


def _marker(conn: apsw.Connection) -> tuple[int, int]:
    """What an erasure changes: a snapshot made before one must not be stored after it."""
    if not conn.table_exists("main", "erased"):
        return 0, 0
    row: Any = conn.execute("SELECT count(*), coalesce(max(erasure), 0) FROM erased").fetchone()
    return int(row[0]), int(row[1])


def take(db: Database, projector: Projector, now: Callable[[], int], positions: Sequence[int],
         progress: Progress | None = None) -> list[int]:
    """Make snapshots at ``positions`` (ascending, at most the head), each
    from the one before it (the first from the nearest stored one, or a
    replay). Skips positions that have one already. Returns the positions
    stored. Each is stored in a transaction of its own; making stops, with
    what it stored so far, when an erasure or another process's snapshot
    gets in the way (what was made would no longer fit)."""
    want = key(projector)
    made: list[int] = []
    mem: apsw.Connection | None = None
    prev: bytes | None = None
    sources, firsts = array("q"), array("q")  # the page map of the image in ``mem``
    at = 0
    parent: int | None = None
    try:
        for i, position in enumerate(positions):
            with db.read("making a snapshot") as conn:
                if not present(conn):
                    raise KernelError("this file's format keeps no snapshots (open it writable once to upgrade it)")
                if conn.execute("SELECT 1 FROM snapshots WHERE position = ?", (position,)).fetchone():
                    if mem is not None:
                        mem.close()
                    mem, prev = None, None  # the next starts from the stored one
                    continue
                marker = _marker(conn)
                if mem is None:
                    parent = nearest(conn, projector, position)
                    if parent is not None:
                        mem = load(conn, parent)
                        prev, at = mem.serialize("main"), parent
                        row: Any = conn.execute("SELECT page_count, page_map FROM snapshots WHERE position = ?",
                                                (parent,)).fetchone()
                        sources, firsts = _map(row[1], int(row[0]))
                    else:
                        mem, at = projector.build_in_memory(db, until=position, page_size=_PAGE_SIZE)
                        prev, sources, firsts = None, array("q"), array("q")
                fold(projector, conn, mem, at, position)
                at = position
            img = mem.serialize("main")
            size = int(mem.pragma("page_size"))
            runs = _runs(prev, img, size)
            count = len(img) // size
            del sources[count:], firsts[count:]
            sources.extend(array("q", [0]) * (count - len(sources)))
            firsts.extend(array("q", [0]) * (count - len(firsts)))
            for first, n, _ in runs:
                sources[first:first + n] = array("q", [position]) * n
                firsts[first:first + n] = array("q", [first]) * n
            with db.write("storing a snapshot", shared=False) as conn:
                if _marker(conn) != marker or (parent is not None and not conn.execute(
                        "SELECT 1 FROM snapshots WHERE position = ?", (parent,)).fetchone()) \
                        or conn.execute("SELECT 1 FROM snapshots WHERE position = ?", (position,)).fetchone():
                    return made
                conn.execute(
                    "INSERT INTO snapshots (position, parent, projections, page_size, page_count, pages, bytes, "
                    "crc32, page_map, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (position, parent, want, size, count, sum(n for _, n, _ in runs),
                     sum(len(d) for _, _, d in runs), zlib.crc32(img), _map_blob(sources, firsts), now()),
                )
                conn.executemany(
                    "INSERT INTO snapshot_pages (snapshot, first_page, pages, data, crc32) VALUES (?, ?, ?, ?, ?)",
                    ((position, first, n, data, zlib.crc32(data)) for first, n, data in runs),
                )
            made.append(position)
            prev, parent = img, position
            if progress is not None:
                progress(i + 1, len(positions))
    finally:
        if mem is not None:
            mem.close()
    return made


def plan(conn: apsw.Connection, projector: Projector, head: int, every: int | None) -> list[int]:
    """Where snapshots are missing: the head, and with ``every``, positions
    filling each gap wider than ``every`` between position 0, the stored
    snapshots and the head."""
    targets = []
    if every is not None:
        want = key(projector)
        stored = [int(p) for (p,) in conn.execute(
            "SELECT position FROM snapshots WHERE projections = ? ORDER BY position", (want,))] if present(conn) else []
        found = journal.base(conn)
        last = 0 if found is None else found[0]
        for p in [*stored, head]:
            while p - last > every:
                last += every
                targets.append(last)
            last = p
    if head and head not in targets:
        targets.append(head)
    return sorted(set(targets))


def drop_from(conn: apsw.Connection, position: int, *, keep_base: bool = True) -> int:
    """Drop every snapshot at or after ``position`` (an erasure's first
    erased event: they hold what it erases) but the base's (the projections
    where the journal starts after a compaction). Returns how many."""
    if not present(conn):
        return 0
    base = journal.base(conn) if keep_base else None
    keep = -1 if base is None else base[0]
    conn.execute("DELETE FROM snapshot_pages WHERE snapshot >= ? AND snapshot != ?", (position, keep))
    conn.execute("DELETE FROM snapshots WHERE position >= ? AND position != ?", (position, keep))
    return int(conn.changes())


def from_base(db: Database, projector: Projector, modules: Sequence[Any], base: tuple[int, bytes, int, str],
              until: int | None, progress: Progress | None, erased: frozenset[int] = frozenset(),
              ) -> tuple[apsw.Connection, int]:
    """A build of a compacted journal: the base snapshot's image (every
    projection where the journal now starts) with the events after it
    applied one by one (only ``modules``'; the other tables stay as at the
    base). Raises JournalError when the base snapshot does not hold these
    projections' versions: their rebuild needs the archive's events."""
    position = base[0]
    with db.read("replaying the journal") as conn:
        head = journal.head(conn)[0]
        upto = head if until is None else min(until, head)
        if upto < position:
            raise JournalError(f"position {upto} is before the journal's base {position}: the events up to it "
                               f"were moved to the archive {base[3]!r}; open it to see them")
        row = conn.execute("SELECT projections FROM snapshots WHERE position = ?", (position,)).fetchone()
        stored = {} if row is None else msgspec.json.decode(row[0], type=dict[str, int])
        wanted = {m.NAME: m.VERSION for m in modules}
        if any(stored.get(name) != version for name, version in wanted.items()):
            # (a projection the image holds and this process does not apply, an application's, is left out)
            raise JournalError(
                f"the projections cannot be rebuilt: the journal starts after position {position} (the events "
                f"before it are in the archive {base[3]!r}), and the projections there were stored for "
                f"{'no projection' if row is None else row[0]}, which lacks "
                f"{msgspec.json.encode({n: v for n, v in wanted.items() if stored.get(n) != v}).decode()} (a "
                "projection new or changed in version since the compaction)"
            )
        mem = load(conn, position)
        try:
            _drop_others(mem, projector)
            mem.execute("BEGIN")
            report = None if progress is None else (lambda n: progress(n, upto - position))
            rows = journal.read_rows(conn, after=position, until=upto, page=10_000,
                                     columns=projector.journal_columns(modules))
            if erased:
                rows = ((*r[:5], journal.ERASED_DATA, *r[6:]) if r[0] in erased else r for r in rows)
            projector._fold_rows(mem.cursor(), rows, modules, progress=report)
            mem.execute("COMMIT")
        except BaseException:
            mem.close()
            raise
    if progress is not None:
        progress(upto - position, upto - position)
    return mem, upto


def _drop_others(mem: apsw.Connection, projector: Projector) -> None:
    """Drop from a base image the tables of projections this process does
    not apply (an application's, stored by a process that had it): they
    would stay as at the base while the journal goes on."""
    known = {t for names in projector.tables.values() for t in names}
    for _, name, kind, *_ in mem.execute("PRAGMA main.table_list").fetchall():
        if kind in ("table", "virtual") and name not in known and not str(name).startswith("sqlite_"):
            quoted = str(name).replace('"', '""')  # a name from the image's own schema, quoted as one
            mem.execute(f'DROP TABLE IF EXISTS main."{quoted}"')


def _check_each(conn: apsw.Connection, projector: Projector, problem: Callable[[str], None], limit: int) -> None:
    base = journal.base(conn)
    start = 0 if base is None else base[0]
    positions = [int(p) for (p,) in conn.execute(
        "SELECT position FROM snapshots WHERE projections = ? AND position > ? ORDER BY position",
        (key(projector), start))]
    if not positions:
        return
    if base is None:
        replay = memory_connection()
        replay.pragma("journal_mode", "off")
        for m in projector.modules:
            replay.execute(projector.ddl(m))
    else:
        replay = load(conn, start)
    try:
        at = start
        for position in positions:
            fold(projector, conn, replay, at, position)
            at = position
            try:
                mem = load(conn, position)
            except KernelError as e:
                problem(str(e))
                continue
            try:
                for text in projector.compare(mem, replay, limit=limit):
                    problem(f"snapshot at position {position}: {text}")
            finally:
                mem.close()
    finally:
        replay.close()


def check(conn: apsw.Connection, projector: Projector, rebuilt: apsw.Connection | None, head: int,
          problem: Callable[[str], None], limit: int, *, every: bool = False) -> None:
    """For ``verify``: every stored run of pages reads back whole, every
    snapshot's page map names stored runs of itself or its ancestors, the
    newest usable snapshot's pages compose its recorded image, and with the
    events after it folded it equals ``rebuilt`` (a rebuild at ``head``)
    row for row. ``every``: each usable snapshot is also compared, row for
    row, with the journal replayed to its position (one pass, applying every
    event; a compare per snapshot)."""
    if not present(conn):
        return
    if every:
        _check_each(conn, projector, problem, limit)
    for snapshot, first, n, blob, crc in conn.execute(
            "SELECT snapshot, first_page, pages, data, crc32 FROM snapshot_pages"):
        if zlib.crc32(blob) != crc:
            problem(f"snapshot at position {snapshot}: the run of pages from {first} is damaged")
            continue
        try:
            size = len(zlib.decompress(blob))
        except zlib.error as e:
            problem(f"snapshot at position {snapshot}: pages from {first} cannot be read ({e})")
            continue
        if size % n or not size:
            problem(f"snapshot at position {snapshot}: the run of {n} pages from {first} holds {size} bytes")
    stored = {(int(a), int(b)) for a, b in conn.execute("SELECT snapshot, first_page FROM snapshot_pages")}
    parents = {int(p): None if q is None else int(q) for p, q in conn.execute("SELECT position, parent FROM snapshots")}
    newest = None
    want = key(projector)
    rows: list[tuple[int, int, bytes, str]] = conn.execute(  # type: ignore[assignment]
        "SELECT position, page_count, page_map, projections FROM snapshots ORDER BY position").fetchall()
    for position, count, blob, projections in rows:
        if position > head:
            problem(f"snapshot at position {position}: past the journal head {head}")
            continue
        chain: set[int] = set()
        at: int | None = position
        while at is not None and at not in chain:
            chain.add(at)
            at = parents.get(at)
        try:
            sources, firsts = _map(blob, count)
        except (zlib.error, ValueError) as e:
            problem(f"snapshot at position {position}: its page map cannot be read ({e})")
            continue
        for where in set(zip(sources, firsts, strict=True)):
            if where not in stored or where[0] not in chain:
                problem(f"snapshot at position {position}: pages from {where[1]} of the snapshot at {where[0]} "
                        "are stored nowhere it can read")
                break
        else:
            if projections == want:
                newest = position
    if newest is None:
        return
    try:
        mem = load(conn, newest)
    except KernelError as e:
        problem(str(e))
        return
    try:
        if rebuilt is not None:
            fold(projector, conn, mem, newest, head)
            for text in projector.compare(mem, rebuilt, limit=limit):
                problem(f"snapshot at position {newest} (with the events after it): {text}")
    finally:
        mem.close()


class Snapshotter:
    """Makes a snapshot in a background thread of its own once the head is
    ``every`` events past the newest one (a write of this process wakes it),
    and fills any wider gap it finds in the history (where an erasure or a
    compaction dropped snapshots). Failures are logged, never raised:
    snapshots are an optimisation."""

    def __init__(self, db: Database, projector: Projector, now: Callable[[], int], every: int) -> None:
        self.db, self.projector, self.now, self.every = db, projector, now, every
        self.latest: int | None = None  # the newest usable snapshot, learnt by the thread
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.made = 0

    def committed(self, head: int) -> None:
        """Called after each commit of this process with the head it reached."""
        latest = self.latest
        if latest is None or head - latest >= self.every:
            with self._lock:
                if self._stop:
                    return
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="eventkernel-snapshots", daemon=True)
                    self._thread.start()
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                with self.db.read("looking for a snapshot to make") as conn:
                    head = journal.head(conn)[0]
                    latest = nearest(conn, self.projector, head) or 0
                    # Gaps wider than ``every`` anywhere (an erasure or a
                    # compaction drops snapshots) are filled too, then the head.
                    targets = [p for p in plan(conn, self.projector, head, self.every) if p != head]
                self.latest = latest
                if head - latest >= self.every:
                    targets.append(head)
                if targets:
                    made = take(self.db, self.projector, self.now, targets)
                    self.made += len(made)
                    if made and made[-1] == head:
                        self.latest = head
            except Exception:
                if self._stop or self.db.closed:
                    return
                log.warning("making a snapshot of %r failed; will try again after later commits", self.db.path,
                            exc_info=True)

    def close(self) -> None:
        """Stop the thread, after the snapshot it may be making."""
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
