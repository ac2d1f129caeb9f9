"""Point reads: ``memory.get``, ``sessions.get`` and ``work.get`` latency,
p50 and p99, against a raw APSW primary-key select of the same row."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import apsw

import eventkernel
from benchmarks.common import scratch_dir


def _latencies(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        fn(i)
        out.append((clock() - start) / 1000)  # µs
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(*, quick: bool) -> list[dict[str, Any]]:
    rng = random.Random(3)
    where = scratch_dir()
    path = str(where / "reads.db")
    k = eventkernel.open(path)
    rows = 500 if quick else 5_000
    with k.transaction():
        items = [k.work.enqueue("t", {"n": i}) for i in range(rows)]
        sessions = [k.sessions.create("app", f"u{i % 50}", state={"n": i}).session_id for i in range(rows)]
        for i in range(rows):
            k.memory.put(f"user:{i}", "prefs", {"lang": "fr", "n": i})
    raw = apsw.Connection(path)
    n = 2_000 if quick else 20_000
    pick = [rng.randrange(rows) for _ in range(n)]
    cases = [
        ("memory.get", lambda i: k.memory.get(f"user:{pick[i]}", "prefs"),
         lambda i: raw.execute("SELECT * FROM memory_entries WHERE namespace = ? AND key = ? AND is_latest = 1",
                               (f"user:{pick[i]}", "prefs")).fetchone()),
        ("sessions.get", lambda i: k.sessions.get(sessions[pick[i]]),
         lambda i: raw.execute("SELECT * FROM sessions WHERE session_id = ?", (sessions[pick[i]],)).fetchone()),
        ("work.get", lambda i: k.work.get(items[pick[i]]),
         lambda i: raw.execute("SELECT * FROM work_items WHERE work_item_id = ?", (items[pick[i]],)).fetchone()),
    ]
    results = []
    for name, ours, theirs in cases:
        _latencies(ours, 200), _latencies(theirs, 200)  # warm the caches
        a, b = [], []
        for _ in range(5):  # interleaved rounds
            b += _latencies(theirs, n // 5)
            a += _latencies(ours, n // 5)
        for q, target in ((50, 2.0), (99, None)):
            value, base = _p(a, q), _p(b, q)
            results.append({
                "name": f"{name} p{q}", "value": value, "min": min(a), "max": max(a), "unit": "µs",
                "baseline": "raw APSW primary-key select of the same row", "baseline_value": base,
                "ratio": value / base, "target": target,
            })
    raw.close()
    k.close()
    return results
