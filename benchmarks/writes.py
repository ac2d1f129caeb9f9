"""Write throughput: one durable command per transaction, and 1000 commands
in one transaction, each against raw APSW inserting the same number of
journal-shaped rows in the same kind of transaction; and against the floors:
the kernel's own statements replayed (with and without savepoints), and the
same work written out by hand without the kernel's layers."""

from __future__ import annotations

from typing import Any

import eventkernel
from benchmarks.common import CapturedFloor, InlinedEnqueue, RawJournal, interleaved, rate, scratch_dir, summary

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

    results = []
    for name, ours, theirs, baseline, target in (
        ("work.enqueue, one durable transaction each", ours_single, raw_single, RAW, 0.7),
        ("work.enqueue x1000 in one k.transaction()", ours_batch, raw_batch, RAW, 0.3),
        ("  the same, vs the kernel's own SQL", ours_single, floor_single, FLOOR, None),
        ("  (the kernel's SQL, one durable each, vs raw APSW)", floor_single, raw_single, RAW, None),
        ("  the same, vs the same work inlined", ours_single, inlined_single, INLINED, None),
        ("  (the inlined work, one durable each, vs raw APSW)", inlined_single, raw_single, RAW, None),
        ("  x1000, vs the kernel's own SQL", ours_batch, floor_batch, FLOOR, None),
        ("  x1000, vs its SQL without savepoints", ours_batch, bare_batch, BARE, None),
        ("  (the kernel's SQL x1000 vs raw APSW)", floor_batch, raw_batch, RAW, None),
        ("  (the same without savepoints vs raw APSW)", bare_batch, raw_batch, RAW, None),
        ("  x1000, vs the same work inlined", ours_batch, inlined_batch, INLINED, None),
        ("  (the inlined work x1000 vs raw APSW)", inlined_batch, raw_batch, RAW, None),
    ):
        # A batch's round is short, and a WAL checkpoint lands in one round and not the next:
        # three times the rounds keep the median steady.
        a, b = interleaved(rounds * 3 if "x1000" in name else rounds, ours, theirs)
        sa, sb = summary(a), summary(b)
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
