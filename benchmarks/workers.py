"""Claim + complete throughput with several worker processes on one file,
against the same loop over a hand-built queue table in raw APSW.

Each worker claims an item, completes it with its fencing token, and goes on
until the queue is empty. Afterwards the journal is read back: every item
must be completed exactly once (``double completions`` must be 0).
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import apsw

import eventkernel
from benchmarks.common import scratch_dir, summary

WORKERS = 4

QUEUE_DDL = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL, holder TEXT,
    token INTEGER NOT NULL DEFAULT 0, lease_expires_at INTEGER, output TEXT) STRICT;
CREATE INDEX IF NOT EXISTS queue_dequeue ON queue (status, priority DESC, id);
"""


def _ours(path: str, name: str, start: Any) -> int:
    k = eventkernel.open(path)
    start.wait()
    done = 0
    while True:
        item = k.work.claim(name, lease_ms=60_000)
        if item is None:
            break
        k.work.complete(item.work_item_id, name, item.token, output={"by": name})
        done += 1
    k.close()
    return done


def _raw(path: str, name: str, start: Any) -> int:
    conn = apsw.Connection(path)
    conn.set_busy_timeout(10_000)
    conn.pragma("synchronous", "FULL")
    start.wait()
    done = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT id, token FROM queue WHERE status = 'pending' ORDER BY priority DESC, id LIMIT 1"
        ).fetchone()
        if row is None:
            conn.execute("COMMIT")
            break
        conn.execute(
            "UPDATE queue SET status = 'in_progress', holder = ?, token = token + 1, lease_expires_at = ? WHERE id = ?",
            (name, time.time_ns() // 1_000_000 + 60_000, row[0]),
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE queue SET status = 'completed', output = ? WHERE id = ? AND holder = ? AND token = ?",
            ('{"by":"' + name + '"}', row[0], name, row[1] + 1),
        )
        conn.execute("COMMIT")
        done += 1
    conn.close()
    return done


def _worker(target: Any, path: str, name: str, start: Any, results: Any) -> None:
    results.put(target(path, name, start))


def _run_workers(target: Any, path: str) -> float:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(target, path, f"w{i}", start, results)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    done = sum(results.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return done / elapsed


def _double_completions(path: str, items: int) -> int:
    """Items completed more than once, or not at all, according to the journal."""
    k = eventkernel.open(path)
    counts: dict[str, int] = {}
    for r in k.read(types=["work_item.completed"]):
        counts[r.stream] = counts.get(r.stream, 0) + 1
    k.close()
    return sum(n - 1 for n in counts.values() if n > 1) + (items - len(counts))


def run(*, quick: bool) -> list[dict[str, Any]]:
    items = 200 if quick else 2_000
    rounds = 1 if quick else 3
    ours, theirs, doubles = [], [], 0
    for r in range(rounds):
        where = scratch_dir()
        raw_path = str(where / f"raw-{r}.db")
        conn = apsw.Connection(raw_path)
        conn.pragma("journal_mode", "wal")
        conn.execute(QUEUE_DDL)
        with conn:
            conn.executemany("INSERT INTO queue (status, priority) VALUES ('pending', 0)", [()] * items)
        conn.close()
        theirs.append(_run_workers(_raw, raw_path))

        path = str(where / f"kernel-{r}.db")
        k = eventkernel.open(path)
        with k.transaction():
            for i in range(items):
                k.work.enqueue(f"task-{i}", {"n": i})
        k.close()
        ours.append(_run_workers(_ours, path))
        doubles += _double_completions(path, items)
    a, b = summary(ours), summary(theirs)
    return [
        {"name": f"claim+complete, {WORKERS} processes, {items:,} items", "value": a["median"], "min": a["min"],
         "max": a["max"], "unit": "items/s",
         "baseline": "raw APSW: the same claim and complete transactions on a hand-built queue table",
         "baseline_value": b["median"], "ratio": a["median"] / b["median"], "target": None},
        {"name": "  double or missing completions", "value": doubles, "min": doubles, "max": doubles,
         "unit": "items", "baseline": "required", "baseline_value": 0, "ratio": None, "target": 0},
    ]
