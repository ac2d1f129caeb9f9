"""Write throughput: one durable command per transaction, and 1000 commands
in one transaction, each against raw APSW inserting the same number of
journal-shaped rows in the same kind of transaction; and against the floors:
the kernel's own statements replayed (with and without savepoints), and the
same work written out by hand without the kernel's layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import eventkernel
from benchmarks.common import CapturedFloor, InlinedEnqueue, RawJournal, rate, scratch_dir, summary

RAW = "raw APSW insert of journal-shaped rows"
FLOOR = "raw APSW replaying the statements the kernel issued, with its settings"
BARE = "the same statements without the per-command savepoints"
INLINED = "the same work written out by hand, without the kernel's layers"


def run(*, quick: bool, synchronous: str) -> list[dict[str, Any]]:
    where = scratch_dir()
    k = eventkernel.open(str(where / "eventkernel.db"), synchronous=synchronous)  # type: ignore[arg-type]
    raw = RawJournal(str(where / "raw.db"), synchronous)
    single_n = 50 if quick else 300
    batch_n = 1000
    rounds = 3 if quick else 7
    counter = iter(range(10**9))

    def ours_single() -> float:
        return rate(single_n, lambda: [k.work.enqueue("bench", {"n": next(counter)}) for _ in range(single_n)])

    def raw_single() -> float:
        return rate(single_n, lambda: [raw.one_per_transaction() for _ in range(single_n)])

    def ours_batch() -> float:
        def go() -> None:
            with k.transaction():
                for _ in range(batch_n):
                    k.work.enqueue("bench", {"n": next(counter)})
        return rate(batch_n, go)

    def raw_batch() -> float:
        return rate(batch_n, lambda: raw.batch(batch_n))

    floor = CapturedFloor(where, "floor", synchronous)

    def replayed(n: int, work: Any, *, savepoints: bool = True) -> Any:
        def measure() -> float:
            statements = floor.capture(work)  # not timed: the kernel issuing them
            return rate(n, lambda: floor.replay(statements, savepoints=savepoints))
        return measure

    def single_work(kc: eventkernel.Kernel) -> None:
        for _ in range(single_n):
            kc.work.enqueue("bench", {"n": next(counter)})

    def batch_work(kc: eventkernel.Kernel) -> None:
        with kc.transaction():
            for _ in range(batch_n):
                kc.work.enqueue("bench", {"n": next(counter)})

    inlined = InlinedEnqueue(str(where / "inlined.db"), synchronous)

    def inlined_batch() -> float:
        def go() -> None:
            with inlined.kernel.transaction():
                for _ in range(batch_n):
                    inlined.enqueue("bench", {"n": next(counter)})
        return rate(batch_n, go)

    def inlined_single() -> float:
        def go() -> None:
            for _ in range(single_n):
                with inlined.kernel.transaction():
                    inlined.enqueue("bench", {"n": next(counter)})
        return rate(single_n, go)

    floor_single = replayed(single_n, single_work)
    floor_batch = replayed(batch_n, batch_work)
    bare_batch = replayed(batch_n, batch_work, savepoints=False)

    # Every series of a kind measured side by side in each round (in a turning order), so that each
    # ratio compares rounds run moments apart: a batch is 20-60 ms, and a WAL checkpoint or a slow
    # moment of the machine lands in one round and not the next.
    singles = {"ours": ours_single, "raw": raw_single, "floor": floor_single, "inlined": inlined_single}
    batches = {"ours": ours_batch, "raw": raw_batch, "floor": floor_batch, "bare": bare_batch, "inlined": inlined_batch}
    measured = {"single": _side_by_side(singles, rounds), "batch": _side_by_side(batches, rounds * 3)}
    results = []
    for name, kind, ours, theirs, baseline, target in (
        ("work.enqueue, one durable transaction each", "single", "ours", "raw", RAW, 0.7),
        ("work.enqueue x1000 in one k.transaction()", "batch", "ours", "raw", RAW, 0.3),
        ("  the same, vs the kernel's own SQL", "single", "ours", "floor", FLOOR, None),
        ("  (the kernel's SQL, one durable each, vs raw APSW)", "single", "floor", "raw", RAW, None),
        ("  the same, vs the same work inlined", "single", "ours", "inlined", INLINED, None),
        ("  (the inlined work, one durable each, vs raw APSW)", "single", "inlined", "raw", RAW, None),
        ("  x1000, vs the kernel's own SQL", "batch", "ours", "floor", FLOOR, None),
        ("  x1000, vs its SQL without savepoints", "batch", "ours", "bare", BARE, None),
        ("  (the kernel's SQL x1000 vs raw APSW)", "batch", "floor", "raw", RAW, None),
        ("  (the same without savepoints vs raw APSW)", "batch", "bare", "raw", RAW, None),
        ("  x1000, vs the same work inlined", "batch", "ours", "inlined", INLINED, None),
        ("  (the inlined work x1000 vs raw APSW)", "batch", "inlined", "raw", RAW, None),
    ):
        sa, sb = summary(measured[kind][ours]), summary(measured[kind][theirs])
        results.append({
            "name": name, "value": sa["median"], "min": sa["min"], "max": sa["max"], "unit": "commands/s",
            "baseline": baseline, "baseline_value": sb["median"],
            "ratio": sa["median"] / sb["median"], "target": target,
        })
    k.close()
    raw.close()
    floor.close()
    inlined.close()
    return results


def _side_by_side(series: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each function's rates over ``rounds`` rounds, every function once per
    round, the order turning by one each round."""
    names = list(series)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(series[name]())
    return out
