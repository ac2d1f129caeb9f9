"""Timing, environment and the raw-APSW baseline shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import msgspec

import eventkernel
from eventkernel.connection import plan_once


def environment(synchronous: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "msgspec": msgspec.__version__,
        "eventkernel": eventkernel.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "synchronous": synchronous,
    }


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="eventkernel-bench-"))


JOURNAL_DDL = """
CREATE TABLE journal (
    position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL,
    type TEXT NOT NULL, schema INTEGER NOT NULL DEFAULT 1, data TEXT NOT NULL, meta TEXT,
    event_id TEXT UNIQUE, correlation_id TEXT, recorded_at INTEGER NOT NULL, hash BLOB NOT NULL,
    UNIQUE (stream, version)) STRICT;
CREATE INDEX journal_type ON journal (type, position);
CREATE INDEX journal_correlation ON journal (correlation_id, position) WHERE correlation_id IS NOT NULL;
"""


class RawJournal:
    """The baseline: raw APSW inserting one journal-shaped row per event, in
    WAL mode with the same synchronous mode, and SQLite's own automatic
    checkpoint at 1000 pages. (The kernel checkpoints at the same bound after
    a commit. A baseline that never checkpoints is slower, not faster: its
    WAL grows on every commit, and each fsync must then also record the new
    file size.)"""

    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = apsw.Connection(path)
        self.conn.pragma("journal_mode", "wal")
        self.conn.pragma("synchronous", synchronous.upper())
        self.conn.wal_autocheckpoint(1000)
        self.conn.execute(JOURNAL_DDL)
        self.n = 0
        self._encode = msgspec.json.Encoder().encode

    def insert(self) -> None:
        self.n += 1
        self.conn.execute(
            "INSERT INTO journal (position, stream, version, type, data, correlation_id, recorded_at, hash) "
            "VALUES (?, ?, 1, 'work_item.enqueued', ?, 'task', ?, ?)",
            (self.n, f"work_item:{self.n}", self._encode({"input": {"n": self.n}, "priority": 0}).decode(),
             time.time_ns() // 1_000_000, b"\0" * 32),
        )

    def one_per_transaction(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.insert()
        self.conn.execute("COMMIT")

    def batch(self, n: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        for _ in range(n):
            self.insert()
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class CapturedFloor:
    """The floor measured under the kernel's own settings: the exact
    statements a kernel issued on its write connection (captured with APSW's
    exec tracer, bindings included: ids, encoded payloads, hashes), replayed
    by raw APSW with none of the kernel's Python, on a file the kernel
    created (same schema, page size, auto_vacuum) opened with the kernel's
    pragmas (WAL, the same synchronous, temp_store=MEMORY, trusted_schema
    off), its plans kept from prepare (``plan_once``) and its checkpoint
    bound. ``savepoints=False`` drops the
    per-command SAVEPOINT/RELEASE pairs: what the statements cost without
    them."""

    def __init__(self, directory: Path, name: str, synchronous: str) -> None:
        self.template = str(directory / f"{name}-template.db")
        eventkernel.open(self.template).close()
        self.capture_path = str(directory / f"{name}-capture.db")
        self.replay_path = str(directory / f"{name}-replay.db")
        for target in (self.capture_path, self.replay_path):
            with open(self.template, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
        self.synchronous = synchronous
        # No background snapshots: their transactions on the write connection would be captured too, and one
        # cut by the window's edge replays as a COMMIT without its BEGIN.
        self.kernel = eventkernel.open(self.capture_path, synchronous=synchronous,  # type: ignore[arg-type]
                                       snapshot_every=0)
        self.conn = apsw.Connection(self.replay_path)
        self.conn.pragma("journal_mode", "wal")
        self.conn.pragma("synchronous", synchronous.upper())
        self.conn.pragma("temp_store", "MEMORY")
        self.conn.pragma("trusted_schema", False)
        plan_once(self.conn)
        self.conn.wal_autocheckpoint(self.kernel._db.wal_checkpoint_pages)

    def capture(self, work: Callable[[eventkernel.Kernel], None], *, reads: bool = False,
                both: bool = False) -> list[tuple[str, Any]]:
        """Run ``work`` on the capturing kernel; return the statements its
        write connection executed, in order (``reads=True``: those of this
        thread's read connection; ``both=True``: those of both, in the
        order they ran)."""
        out: list[tuple[str, Any]] = []
        db = self.kernel._db
        conns = [db.reader(), db.conn] if both else [db.reader() if reads else db.conn]

        def trace(_cursor: Any, sql: str, bindings: Any) -> bool:
            out.append((sql, bindings))
            return True

        for conn in conns:
            conn.exec_trace = trace
        try:
            work(self.kernel)
        finally:
            for conn in conns:
                conn.exec_trace = None
        return out

    def replay(self, statements: list[tuple[str, Any]], *, savepoints: bool = True) -> None:
        """Execute the statements, fetching every row each returns (a query
        stepped once and dropped would skip the rest of its rows and the
        conversion of their columns, work the kernel cannot skip)."""
        execute = self.conn.execute
        for sql, bindings in statements:
            if not savepoints and sql.startswith(("SAVEPOINT", "RELEASE")):
                continue
            for _ in execute(sql, bindings):
                pass

    def close(self) -> None:
        self.kernel.close()
        self.conn.close()


def interleaved(rounds: int, candidate: Callable[[], float], baseline: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run candidate and baseline alternately; each returns a rate (ops/s)."""
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(baseline())
        ours.append(candidate())
    return ours, theirs


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def calls(n: int, fn: Callable[[], object]) -> float:
    """The rate of ``n`` calls of ``fn``, each result dropped as it comes: a
    list of them would keep every result alive, promote it through the
    collector's generations and time its full passes over the whole heap
    (60 ms each in the LangGraph group's process, one per ~600 lists)."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class SlowSync:
    """An APSW VFS whose xSync sleeps first (default 2 ms): a stand-in for a
    disk where fsync costs milliseconds (a cloud volume, a consumer SSD).
    ``with SlowSync() as vfs:`` gives its name."""

    def __init__(self, seconds: float = 0.002) -> None:
        self.seconds = seconds
        self.name = f"bench-slow-sync-{id(self):x}"

    def __enter__(self) -> str:
        seconds = self.seconds

        class File(apsw.VFSFile):
            def xSync(self, flags: int) -> None:
                time.sleep(seconds)
                super().xSync(flags)

        class VFS(apsw.VFS):
            def xOpen(self, name: Any, flags: Any) -> apsw.VFSFile:
                return File("", name, flags)

        self.vfs = VFS(self.name, "")
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.vfs.unregister()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class InlinedEnqueue:
    """What a command's rules cost with none of the kernel's layers (the
    runner, the generic append, the projector's dispatch): work.enqueue
    written out by hand on a kernel's own connection, inside its
    transaction, doing the same work — the service's argument checks, the
    clock, a new id, the event, the stream name check, the checked encode,
    the chained hash, the journal row and the work_items row (through the
    projection's own ``apply``). The kernel against this is what its
    layering costs; this against raw APSW bounds what a leaner Python path
    could reach."""

    def __init__(self, path: str, synchronous: str) -> None:
        from eventkernel import codec, ids, journal, validate
        from eventkernel.events.work import WorkItemEnqueued
        from eventkernel.projections import work_items

        self.kernel = eventkernel.open(path, synchronous=synchronous)  # type: ignore[arg-type]
        db, ctx = self.kernel._db, self.kernel._ctx
        meta = {"command": "work.enqueue"}
        meta_text = codec.dump_json(meta)
        insert = journal.INSERT
        type_, schema = WorkItemEnqueued.__event_type__, WorkItemEnqueued.__event_schema__
        check_text, check_int, check_json = validate.check_text, validate.check_int, validate.check_json_value

        def enqueue(task_id: str, input: Any) -> str:
            w = "work.enqueue"
            check_text(w, "task_id", task_id)
            check_json(w, "input", input)
            check_int(w, "priority", 0)
            check_int(w, "max_retries", 3, minimum=0, maximum=1_000_000)
            check_text(w, "kind", "task")
            now = ctx.stamp()
            item_id = ids.new_id("wi", now)
            event = WorkItemEnqueued(work_item_id=item_id, task_id=task_id, kind="task", priority=0, max_retries=3,
                                     input=input)
            stream = journal.check_stream(w, f"work_item:{item_id}")
            data = codec.encode(event, where=w)
            position, prev, _ = db.head_cache or journal.head_row(db.conn)
            position += 1
            hash_ = journal.row_hash(prev, position, stream, 1, type_, schema, data, meta_text, None, task_id, now)
            db.conn.execute(insert, (position, stream, 1, type_, schema, data, meta_text, None, task_id, now, hash_))
            recorded = journal.Recorded(position, stream, 1, type_, event, None, task_id, meta, now, hash_)
            work_items.apply(db.apply_cursor(), recorded, event)
            db.head_cache = (position, hash_, now)
            db.appended = True
            return item_id

        self.enqueue = enqueue

    def close(self) -> None:
        self.kernel.close()
