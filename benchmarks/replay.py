"""Replaying a large mixed journal: full rebuild (events/s) against a raw APSW
scan that decodes every payload, ``k.at(position)`` in the middle, and
``replay --out`` (the view saved as a standalone file); views of the past at
ten positions with and without snapshots, the snapshots' cost and space;
the erasure of one subject; and the compaction of the first half into an
archive."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import apsw
import msgspec

import eventkernel
from benchmarks.common import scratch_dir


def build(path: str, events: int, seed: int = 1, snapshot_every: int = 0) -> eventkernel.Kernel:
    """A seeded mixed workload over every domain, in transactions of 500
    commands (no snapshots unless asked: the benchmark makes them itself)."""
    rng = random.Random(seed)
    clock = eventkernel.FrozenClock(1_700_000_000_000)
    k = eventkernel.open(path, clock=clock, synchronous="normal", snapshot_every=snapshot_every)
    sessions = [k.sessions.create("bench", f"user-{i % 50}").session_id for i in range(200)]
    n = 0
    while k.head < events:
        with k.transaction():
            for _ in range(500):
                n += 1
                r = rng.random()
                task = f"task-{rng.randrange(2_000)}"
                if r < 0.25:
                    k.work.enqueue(task, {"n": n, "prompt": "summarise the findings"}, priority=rng.randrange(3))
                elif r < 0.45:
                    item = k.work.claim(f"w{rng.randrange(8)}", lease_ms=60_000)
                    if item is not None:
                        k.work.complete(item.work_item_id, item.lease_holder, item.token, output={"ok": True})
                elif r < 0.6:
                    k.memory.put(f"user:{rng.randrange(500)}", f"k{rng.randrange(20)}", {"v": n})
                elif r < 0.75:
                    k.sessions.append_event(rng.choice(sessions), actor="user", content={"text": f"turn {n}"},
                                            state_delta={"turn": n})
                elif r < 0.9:
                    k.checkpoints.record(task, "llm_response", {"n": n})
                else:
                    k.recovery.record_failure(task, "timeout", f"no answer after {rng.randrange(5000)} ms")
        clock.advance(1_000)
    return k


def raw_decode_scan(path: str) -> float:
    """Baseline: read every event and decode its JSON payload, nothing else."""
    conn = apsw.Connection(path)
    decode = msgspec.json.Decoder().decode
    start = time.perf_counter()
    n = 0
    for _type, data in conn.execute("SELECT type, data FROM journal ORDER BY position"):
        decode(data)
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def sql_floor(k: eventkernel.Kernel) -> float:
    """The rebuild's own SQL, without its Python: capture every statement a
    fold into memory executes, then time raw APSW executing the same list on
    a fresh in-memory database (events/s). Reading and decoding the journal
    is not included, so this bounds what any fold issuing these statements
    can reach."""
    from eventkernel import connection, projector

    captured: list[tuple[str, Any]] = []
    original = connection.memory_connection

    def traced(**options: Any) -> apsw.Connection:
        conn = original(**options)
        conn.exec_trace = lambda _cursor, sql, bindings: captured.append((sql, bindings)) is None
        return conn

    projector.memory_connection = traced  # type: ignore[attr-defined]
    try:
        mem, upto = k._projector.build_in_memory(k._db, second_thread=False)  # every statement on one connection
        mem.close()
    finally:
        projector.memory_connection = original  # type: ignore[attr-defined]
    target = original()
    target.pragma("journal_mode", "off")
    start = time.perf_counter()
    for sql, bindings in captured:
        for _ in target.execute(sql, bindings):  # every row a query returns, as the fold reads them
            pass
    elapsed = time.perf_counter() - start
    target.close()
    return upto / elapsed


def read_floor(path: str, until: int) -> float:
    """Reading the journal as a fold does (the columns the kernel's
    projections read, in pages of 1,000), nothing else (events/s). With
    ``sql_floor``: what a fold would cost without any Python of its own."""
    from eventkernel import journal

    conn = apsw.Connection(path)
    start = time.perf_counter()
    for _ in journal.read_rows(conn, until=until, columns=journal.PROJECTED):
        pass
    elapsed = time.perf_counter() - start
    conn.close()
    return until / elapsed


def _build_rates(k: eventkernel.Kernel, rounds: int = 3) -> tuple[float, float, float]:
    """events/s of a build of every projection into memory (the first half
    of a rebuild) by the projections' folds (as the kernel builds: with a
    second thread on a machine of two cores or more), by the folds on one
    thread, and by applying every event: medians of ``rounds`` interleaved
    rounds."""
    ways = {"folds": {}, "folds, one thread": {"second_thread": False}, "applied": {"bulk": False}}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(rounds):
        for way, options in ways.items():
            start = time.perf_counter()
            mem, upto = k._projector.build_in_memory(k._db, **options)
            times[way].append(time.perf_counter() - start)
            mem.close()
    folded, alone, applied = (upto / _median(times[way]) for way in ways)
    return folded, alone, applied


SNAPSHOT_EVERY = 10_000


def _views(k: eventkernel.Kernel, positions: list[int]) -> list[float]:
    """Seconds to open ``k.at(p)`` and read one memory namespace, per position."""
    out = []
    for p in positions:
        start = time.perf_counter()
        with k.at(p) as view:
            view.memory.list("user:1")
        out.append(time.perf_counter() - start)
    return out


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _space(k: eventkernel.Kernel, tables: tuple[str, ...]) -> float:
    """MiB of the pages of ``tables`` and their indexes (SQLite's dbstat)."""
    marks = ", ".join("?" * len(tables))
    with k._db.read("measuring") as conn:
        row = conn.execute(
            f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks}) OR name IN "
            f"(SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN ({marks}))",
            (*tables, *tables),
        ).fetchone()
    return float(row[0] or 0) / 2**20


def run(*, quick: bool, events: int | None = None) -> list[dict[str, Any]]:
    target = events or (20_000 if quick else 1_000_000)
    where = scratch_dir()
    path = str(where / "replay.db")
    t0 = time.perf_counter()
    k = build(path, target)
    built = time.perf_counter() - t0
    head = k.head
    print(f"  built a {head:,}-event mixed journal in {built:.0f} s", flush=True)

    baseline = raw_decode_scan(path)
    start = time.perf_counter()
    k.rebuild()
    rebuild_rate = head / (time.perf_counter() - start)

    floor = sql_floor(k)
    folded, alone, applied = _build_rates(k)
    # A fold reads the journal and issues these statements: with no Python of its own it would take
    # the two floors' time together, which bounds how much faster than applying every event it can be.
    fold_floor = 1 / (1 / read_floor(path, head) + 1 / floor)

    middle = head // 2
    start = time.perf_counter()
    with k.at(middle) as view:
        at_s = time.perf_counter() - start
        view.memory.list("user:1")
    start = time.perf_counter()
    with k.at(middle) as view:
        view.save(str(where / "then.db"))
    out_s = time.perf_counter() - start
    # Views of the past at ten positions spread over the journal, replayed
    # from position 1, then from snapshots every SNAPSHOT_EVERY events.
    rng = random.Random(20261202)  # positions anywhere, not on the snapshots' multiples of 10,000
    spread = sorted(head * i // 10 + rng.randrange(head // 10) for i in range(10))
    replayed = _views(k, spread)
    every = 2_000 if quick else SNAPSHOT_EVERY
    start = time.perf_counter()
    k.snapshot(every=every)
    snapshot_s = time.perf_counter() - start
    stored = k.snapshots()
    snapshot_mib, journal_mib = _space(k, ("snapshots", "snapshot_pages")), _space(k, ("journal",))
    from_snapshots = _views(k, spread)
    print(f"  {len(stored)} snapshots every {every:,} events made in {snapshot_s:.1f} s: {snapshot_mib:.0f} MiB "
          f"(the journal and its indexes: {journal_mib:.0f} MiB); k.at at {len(spread)} positions: "
          f"{_median(replayed):.2f} s (max {max(replayed):.2f}) replayed, {_median(from_snapshots):.3f} s "
          f"(max {max(from_snapshots):.3f}) from snapshots", flush=True)
    # Last, as it rewrites the file: erase one subject (the first session) among all of it.
    subject = next(r.stream for r in k.read(types=["session.created"], limit=1))
    size = os.path.getsize(path)
    start = time.perf_counter()
    erased = k.erase(stream=subject, reason="benchmark")
    erase_s = time.perf_counter() - start
    print(f"  erased {erased.events} events of {subject} among {head:,} ({size / 2**20:.0f} MiB, then "
          f"{os.path.getsize(path) / 2**20:.0f} MiB): {erase_s:.1f} s", flush=True)
    # Then move the first half into an archive, and make the snapshots
    # the two dropped again (the background thread would, by default).
    start = time.perf_counter()
    done = k.compact(before=middle + 1, archive=str(where / "archive.db"))
    compact_s = time.perf_counter() - start
    start = time.perf_counter()
    k.snapshot(every=every)
    again_s = time.perf_counter() - start
    after_views = _views(k, [p for p in spread if p >= middle])
    print(f"  compacted {done.events:,} events into an archive in {compact_s:.1f} s: "
          f"{done.bytes_before / 2**20:.0f} MiB -> {done.bytes_after / 2**20:.0f} MiB "
          f"(archive {os.path.getsize(where / 'archive.db') / 2**20:.0f} MiB); snapshots made again in "
          f"{again_s:.1f} s; k.at after it: {_median(after_views):.3f} s (max {max(after_views):.3f})", flush=True)
    k.close()
    return [
        {"name": f"rebuild of every projection, {head:,} events", "value": rebuild_rate, "min": rebuild_rate,
         "max": rebuild_rate, "unit": "events/s", "baseline": "raw APSW scan decoding every payload",
         "baseline_value": baseline, "ratio": rebuild_rate / baseline, "target": None},
        {"name": "  the same, vs raw APSW running its SQL", "value": rebuild_rate, "min": rebuild_rate,
         "max": rebuild_rate, "unit": "events/s",
         "baseline": "raw APSW executing the statements the rebuild issues (journal not read)",
         "baseline_value": floor, "ratio": rebuild_rate / floor, "target": None},
        {"name": "  building in memory: folds vs every event applied", "value": folded, "min": folded,
         "max": folded, "unit": "events/s", "baseline": "the same build applying each event, as live commands do",
         "baseline_value": applied, "ratio": folded / applied, "target": 2.0},
        {"name": "  the same, the folds on one thread", "value": alone, "min": alone,
         "max": alone, "unit": "events/s", "baseline": "the same build applying each event, as live commands do",
         "baseline_value": applied, "ratio": alone / applied, "target": None},
        {"name": "  the fold's floor: the journal read and its SQL, no Python", "value": fold_floor,
         "min": fold_floor, "max": fold_floor, "unit": "events/s",
         "baseline": "the same build applying each event (the best a fold could do against it)",
         "baseline_value": applied, "ratio": fold_floor / applied, "target": None},
        {"name": f"k.at({middle:,}) of {head:,} events", "value": at_s, "min": at_s, "max": at_s, "unit": "s",
         "baseline": "raw APSW scan decoding every payload (to the middle)", "baseline_value": middle / baseline,
         "ratio": at_s / (middle / baseline), "target": None},
        {"name": f"replay --to {middle:,} --out FILE", "value": out_s, "min": out_s, "max": out_s, "unit": "s",
         "baseline": "raw APSW scan decoding every payload (to the middle)", "baseline_value": middle / baseline,
         "ratio": out_s / (middle / baseline), "target": None},
        {"name": f"k.at(p) at 10 positions of {head:,}, replayed", "value": _median(replayed),
         "min": min(replayed), "max": max(replayed), "unit": "s",
         "baseline": "raw APSW scan decoding every payload (to the middle)", "baseline_value": middle / baseline,
         "ratio": _median(replayed) / (middle / baseline), "target": None},
        {"name": f"  the same, from snapshots every {every:,}", "value": _median(from_snapshots),
         "min": min(from_snapshots), "max": max(from_snapshots), "unit": "s",
         "baseline": "the same views replayed from position 1", "baseline_value": _median(replayed),
         "ratio": _median(from_snapshots) / _median(replayed), "target": None},
        {"name": f"  making those {len(stored)} snapshots", "value": snapshot_s, "min": snapshot_s,
         "max": snapshot_s, "unit": "s", "baseline": "raw APSW scan decoding every payload",
         "baseline_value": head / baseline, "ratio": snapshot_s / (head / baseline), "target": None},
        {"name": "  their space, vs the journal and its indexes", "value": snapshot_mib, "min": snapshot_mib,
         "max": snapshot_mib, "unit": "MiB", "baseline": "pages of the journal table and its indexes",
         "baseline_value": journal_mib, "ratio": snapshot_mib / journal_mib, "target": 1.0},
        {"name": f"k.compact of the first {done.events:,} events", "value": compact_s, "min": compact_s,
         "max": compact_s, "unit": "s", "baseline": "raw APSW scan decoding every payload",
         "baseline_value": head / baseline, "ratio": compact_s / (head / baseline), "target": None},
        {"name": "  the file after it, vs before", "value": done.bytes_after / 2**20,
         "min": done.bytes_after / 2**20, "max": done.bytes_after / 2**20, "unit": "MiB",
         "baseline": "the file before", "baseline_value": done.bytes_before / 2**20,
         "ratio": done.bytes_after / done.bytes_before, "target": None},
        {"name": f"k.erase of one session among {head:,} events", "value": erase_s, "min": erase_s, "max": erase_s,
         "unit": "s", "baseline": "raw APSW scan decoding every payload", "baseline_value": head / baseline,
         "ratio": erase_s / (head / baseline), "target": None},
    ]
