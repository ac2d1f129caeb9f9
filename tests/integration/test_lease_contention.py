"""Lease contention: worker processes with short leases claim, heartbeat,
stall past their lease, fail and complete, while the test SIGKILLs them at
random and starts replacements. A checker then reads the whole history
from the journal, where every time comes from the one clock all processes
share (the system clock, stamped by the kernel), and proves:

- no two leases on an item overlap: a claim comes after the previous lease
  ended or expired;
- fencing: every heartbeat, completion and failure carries the live token
  of the live lease, so an item has at most one completion (no duplicate
  effects);
- every item ends completed or failed;
- every completion a worker saw acknowledged is in the journal.

On a file and on PostgreSQL (workers on the server's journal, each with its
own replica; a quarter of the items). CI: 8 workers, 400 items; EVENTKERNEL_STRESS=1:
12 workers, 3,000 items.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import pytest
from conftest import spawn

import eventkernel

STRESS = os.environ.get("EVENTKERNEL_STRESS", "") not in ("", "0")
WORKERS = 12 if STRESS else 8
ITEMS = 3_000 if STRESS else 400
LEASE_MS = 150


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        if line.endswith("\n"):  # (a line cut short by the kill acknowledged nothing)
            lines.append(line.strip())


def check_history(k: eventkernel.Kernel) -> Counter[str]:
    """Replay every work item's stream and check the lease rules; returns counts."""
    counts: Counter[str] = Counter()
    lease: dict[str, tuple[str, int, int] | None] = {}  # item -> (holder, token, expires_at) of the live lease
    tokens: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    final: dict[str, str] = {}
    for r in k.read():
        e, t, item = r.event, r.recorded_at, r.stream
        if r.type == "work_item.enqueued":
            lease[item] = None
            final[item] = "pending"
        elif r.type == "work_item.claimed":
            live = lease[item]
            assert live is None or t >= live[2], f"{item}: claimed at {t} while token {live[1]} ran to {live[2]}"
            tokens[item] += 1
            assert e.token == tokens[item], f"{item}: token {e.token} after {tokens[item] - 1} claims"
            lease[item] = (e.worker, e.token, e.lease_expires_at)
            final[item] = "in_progress"
            counts["claims"] += 1
        elif r.type in ("work_item.lease_extended", "work_item.completed", "work_item.failed"):
            live = lease[item]
            assert live is not None, f"{item}: {r.type} without a lease"
            holder, token, expires = live
            assert (e.worker, e.token) == (holder, token), f"{item}: {r.type} by {e.worker}/{e.token}, lease {live}"
            assert t < expires, f"{item}: {r.type} at {t}, after the lease expired at {expires}"
            if r.type == "work_item.lease_extended":
                lease[item] = (holder, token, e.lease_expires_at)
                counts["heartbeats"] += 1
            else:
                lease[item] = None
                if r.type == "work_item.completed":
                    completed[item] += 1
                    final[item] = "completed"
                else:
                    final[item] = "pending" if e.retry else "failed"
                    counts["failures"] += 1
        elif r.type == "work_item.lease_expired":
            live = lease[item]
            assert live is not None and t >= live[2] and e.token == live[1], f"{item}: early expiry {live} at {t}"
            lease[item] = None
            final[item] = "pending" if e.retry else "failed"
            counts["expiries"] += 1
    assert not [i for i, n in completed.items() if n > 1], "an item was completed twice"
    unfinished = {i: s for i, s in final.items() if s not in ("completed", "failed")}
    assert not unfinished, f"{len(unfinished)} items did not finish, e.g. {list(unfinished.items())[:3]}"
    counts["completed"] = sum(completed.values())
    counts["failed"] = sum(1 for s in final.values() if s == "failed")
    return counts


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "postgres-one-round-trip"])
def test_leases_never_overlap_and_fencing_prevents_duplicate_effects(engine, tmp_path, child_env, request):
    """Workers claim, stall past their leases, heartbeat, fail and are killed
    at random: no two hold an item at once, a fenced completion never lands,
    no acknowledged completion is lost. On PostgreSQL the workers are
    processes sharing the server's journal (their commands taking the lock
    first, as by default, or committed in one round trip)."""
    one_round_trip = "1" if engine == "postgres-one-round-trip" else ""
    engine = engine.split("-")[0]
    rng = random.Random(7)
    # On PostgreSQL the workers are processes sharing the journal on the server, each with its own replica.
    path = str(tmp_path / "contention.db") if engine == "sqlite" else request.getfixturevalue("pg_url")
    items = ITEMS
    with eventkernel.open(path) as k, k.transaction():
        for i in range(items):
            k.work.enqueue(f"task-{i}", {"n": i}, max_retries=8)
    lines: list[str] = []
    live: list[tuple[object, threading.Thread]] = []
    started = kills = 0

    def start(slot: int) -> None:
        nonlocal started
        # On PostgreSQL a worker keeps its replica file, as a supervisor restarting it on its machine would:
        # the replacement reopens the file its killed predecessor was writing.
        replica = str(tmp_path / f"replica-{slot}.db") if engine == "postgres" else ""
        child = spawn(child_env, "contender", path, f"w{started}", str(started), str(LEASE_MS), replica,
                      one_round_trip)
        started += 1
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        reader = threading.Thread(target=_collect, args=(child.stdout, lines))
        reader.start()
        live.append((child, reader, slot))

    def reap(child, reader) -> None:
        child.wait()
        reader.join()
        child.stdout.close()
        child.stderr.close()

    for slot in range(WORKERS):
        start(slot)
    deadline = time.monotonic() + (900 if STRESS else 240)
    # (a replacement worker on PostgreSQL first opens its replica and catches up with the server: a
    # little more time between kills lets the survivors finish items)
    pause = (0.05, 0.25) if engine == "sqlite" else (0.1, 0.3)
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(*pause))
        for child, reader, slot in [w for w in live if w[0].poll() is not None]:
            live.remove((child, reader, slot))
            assert child.returncode == 0, child.stderr.read()
            reap(child, reader)
        if not live:
            break
        if kills == 0 or rng.random() < 0.6:  # (at once the first time: every run kills)
            child, reader, slot = live.pop(rng.randrange(len(live)))
            child.send_signal(signal.SIGKILL)
            kills += 1
            reap(child, reader)
            start(slot)  # a replacement, as a supervisor would
    else:
        raise AssertionError("the workers did not finish in time")

    with eventkernel.open(path) as k:
        counts = check_history(k)
        completions = {(r.stream.split(":", 1)[1], r.event.token) for r in k.read(types=["work_item.completed"])}
        assert k.verify().ok
    acked = [tuple(line.split()[1:]) for line in lines if line.startswith("completed")]
    missing = [a for a in acked if (a[0], int(a[1])) not in completions]
    assert not missing, f"acknowledged completions lost: {missing[:5]}"
    fenced = sum(1 for line in lines if line.startswith("fenced"))
    assert counts["completed"] + counts["failed"] == items
    assert kills > 0 and counts["expiries"] > 0 and fenced > 0, (kills, counts, fenced)
    print(f"\nlease contention: {started} workers started, {kills} killed, {dict(counts)}, {fenced} fenced")
