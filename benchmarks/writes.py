"""Write throughput: one durable command per transaction, and 1000 commands
in one transaction, each against raw APSW inserting the same number of
journal-shaped rows in the same kind of transaction."""

from __future__ import annotations

from typing import Any

import kernel
from benchmarks.common import RawJournal, interleaved, rate, scratch_dir, summary


def run(*, quick: bool, synchronous: str) -> list[dict[str, Any]]:
    where = scratch_dir()
    k = kernel.open(str(where / "kernel.db"), synchronous=synchronous)  # type: ignore[arg-type]
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

    results = []
    for name, ours, theirs, target in (
        ("work.enqueue, one durable transaction each", ours_single, raw_single, 0.8),
        ("work.enqueue x1000 in one k.transaction()", ours_batch, raw_batch, 0.5),
    ):
        a, b = interleaved(rounds, ours, theirs)
        sa, sb = summary(a), summary(b)
        results.append({
            "name": name, "value": sa["median"], "min": sa["min"], "max": sa["max"], "unit": "commands/s",
            "baseline": "raw APSW insert of journal-shaped rows", "baseline_value": sb["median"],
            "ratio": sa["median"] / sb["median"], "target": target,
        })
    k.close()
    raw.close()
    return results
