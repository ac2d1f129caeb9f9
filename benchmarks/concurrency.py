"""Concurrency: durable commands from many threads on one Kernel (group
commit), asyncio gather against sequential awaits, a lone command's latency
with group commit on and off, and how fast a subscription wakes up. Each on
the real disk and on a disk whose fsync takes 2 ms (an APSW VFS)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import eventkernel
import eventkernel.aio
from benchmarks.common import SlowSync, percentile, scratch_dir, summary

THREADS = (1, 2, 4, 8, 16)


class Ping(eventkernel.Event, tag="bench.ping"):
    sent_ns: int


def _threads(path: str, vfs: str | None, threads: int, commands: int) -> float:
    """commands/s of ``commands`` durable enqueues spread over ``threads`` threads of one kernel."""
    with eventkernel.open(path, vfs=vfs) as k:
        each = commands // threads
        barrier = threading.Barrier(threads + 1)

        def work() -> None:
            barrier.wait()
            for n in range(each):
                k.work.enqueue("bench", {"n": n})

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        return each * threads / (time.perf_counter() - start)


def _gather(path: str, vfs: str | None, n: int, together: bool) -> float:
    async def main() -> float:
        async with eventkernel.aio.open(path, vfs=vfs) as k:
            start = time.perf_counter()
            if together:
                await asyncio.gather(*(k.work.enqueue("bench", {"n": i}) for i in range(n)))
            else:
                for i in range(n):
                    await k.work.enqueue("bench", {"n": i})
            return n / (time.perf_counter() - start)

    return asyncio.run(main())


def _lone_latency(on: eventkernel.Kernel, off: eventkernel.Kernel, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Per-command latency (µs) of single durable commands, group commit on
    and off, interleaved; each round alternates which goes first."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        for k, out in ((off, b), (on, a)) if r % 2 else ((on, a), (off, b)):
            start = time.perf_counter()
            for i in range(n):
                k.work.enqueue("lone", {"n": i})
            out.append((time.perf_counter() - start) / n * 1e6)
    return a, b


def _wakeup_same_process(path: str, samples: int) -> list[float]:
    with eventkernel.open(path) as k:
        got: list[float] = []
        sub = k.subscribe(after=k.head, types=["bench.ping"])
        done = threading.Event()

        def follow() -> None:
            for r in sub:
                got.append((time.perf_counter_ns() - r.event.sent_ns) / 1000)
                if len(got) >= samples:
                    done.set()
                    return

        t = threading.Thread(target=follow)
        t.start()
        for _ in range(samples):
            time.sleep(0.005)  # the subscriber is waiting when each commit lands
            k.append("ping:x", [Ping(sent_ns=time.perf_counter_ns())])
        done.wait(30)
        sub.close()
        t.join(5)
        return got


PINGER = """
import sys, time, eventkernel
class Ping(eventkernel.Event, tag="bench.ping"):
    sent_ns: int
with eventkernel.open(sys.argv[1]) as k:
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(sys.argv[2])):
        time.sleep(0.02)
        k.append("ping:y", [Ping(sent_ns=time.time_ns())])
"""


def _wakeup_other_process(path: str, samples: int) -> list[float]:
    with eventkernel.open(path) as k:
        sub = k.subscribe(after=k.head, types=["bench.ping"])
        with subprocess.Popen([sys.executable, "-c", PINGER, path, str(samples)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None and child.stdin is not None
            child.stdout.readline()
            child.stdin.write("go\n")
            child.stdin.flush()
            got = []
            for r in sub:
                got.append((time.time_ns() - r.event.sent_ns) / 1000)
                if len(got) >= samples:
                    break
            child.wait()
        sub.close()
        return got


def _idle_cpu(path: str, seconds: float) -> float:
    """The share of a core an idle subscription costs (its thread's CPU time over wall time)."""
    with eventkernel.open(path) as k:
        sub = k.subscribe(after=k.head)
        used: list[float] = []

        def follow() -> None:
            start = time.thread_time()
            for _ in sub:
                pass
            used.append(time.thread_time() - start)

        t = threading.Thread(target=follow)
        t.start()
        time.sleep(seconds)
        sub.close()
        t.join(5)
        return used[0] / seconds


def _row(name: str, values: list[float], unit: str, baseline: str, base: float, target: float | None) -> dict[str, Any]:
    s = summary(values)
    return {"name": name, "value": s["median"], "min": s["min"], "max": s["max"], "unit": unit,
            "baseline": baseline, "baseline_value": base, "ratio": s["median"] / base if base else None,
            "target": target}


def run(*, quick: bool) -> list[dict[str, Any]]:
    where = scratch_dir()
    commands = 96 if quick else 480
    rounds = 2 if quick else 3
    results = []
    for disk, slow in (("2 ms fsync", True), ("real disk", False)):
        sync = SlowSync() if slow else None
        vfs = sync.__enter__() if sync else None
        try:
            medians: dict[int, float] = {}
            samples: dict[int, list[float]] = {}
            for threads in THREADS if not quick else (1, 8):
                samples[threads] = [_threads(str(where / f"t{disk}{threads}-{r}.db"), vfs, threads, commands)
                                    for r in range(rounds)]
                medians[threads] = statistics.median(samples[threads])
            for threads in samples:
                if threads == 1:
                    continue
                target = 5.0 if slow and threads == 8 else None
                results.append(_row(f"durable work.enqueue, {threads} threads, {disk}", samples[threads],
                                    "commands/s", f"1 thread, {disk}", medians[1], target))
            n = 100 if quick else 400
            together = [_gather(str(where / f"g{disk}-{r}.db"), vfs, n, True) for r in range(rounds)]
            one_by_one = [_gather(str(where / f"s{disk}-{r}.db"), vfs, n, False) for r in range(rounds)]
            results.append(_row(f"asyncio: {n} gathered enqueues, {disk}", together, "commands/s",
                                f"{n} sequential awaits, {disk}", statistics.median(one_by_one), 5.0 if slow else None))
        finally:
            if sync:
                sync.__exit__()
    on = eventkernel.open(str(where / "on.db"))
    off = eventkernel.open(str(where / "off.db"), group_commit=False)
    a, b = _lone_latency(on, off, 50 if quick else 100, 4 if quick else 30)
    on.close()
    off.close()
    # The ratio is the median of the rounds' ratios (each pair ran side by side), min–max the rounds'.
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    row = _row("a lone durable command, group commit on", a, "µs", "group commit off", statistics.median(b), 1.05)
    row["ratio"] = statistics.median(ratios)
    results.append(row)
    results.append({"name": "  its rounds' ratios, quartiles", "value": statistics.median(ratios),
                    "min": statistics.quantiles(ratios, n=4)[0], "max": statistics.quantiles(ratios, n=4)[2],
                    "unit": "ratio", "baseline": "", "baseline_value": 0.0, "ratio": None, "target": None})
    n = 30 if quick else 200
    same = _wakeup_same_process(str(where / "wake.db"), n)
    other = _wakeup_other_process(str(where / "wake2.db"), 20 if quick else 100)
    for name, values in (("subscription wake-up, same process", same), ("subscription wake-up, another process", other)):
        for p in (0.5, 0.99):
            v = percentile(values, p)
            results.append({"name": f"{name}, p{int(p * 100)}", "value": v, "min": min(values), "max": max(values),
                            "unit": "µs", "baseline": "", "baseline_value": 0.0, "ratio": None, "target": None})
    idle = _idle_cpu(str(where / "idle.db"), 1.0 if quick else 5.0)
    results.append({"name": "an idle subscription, share of a core", "value": idle * 100, "min": idle * 100,
                    "max": idle * 100, "unit": "%", "baseline": "", "baseline_value": 0.0, "ratio": None,
                    "target": None})
    return results


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for r in run(quick="--quick" in sys.argv):
        print(r)
