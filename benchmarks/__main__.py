"""``python -m benchmarks [--quick] [--json FILE] [--synchronous full|normal]``"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import adk, common, concurrency, peers, postgres, reads, replay, search, workers, writes
from benchmarks import langgraph as langgraph_group


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes, a few rounds")
    p.add_argument("--json", metavar="FILE", help="also write the results as a JSON list")
    p.add_argument("--synchronous", choices=["full", "normal"], default="full")
    p.add_argument("--only", choices=["writes", "reads", "replay", "workers", "peers", "concurrency", "langgraph",
                                        "adk", "search", "postgres"],
                   help="run one group")
    p.add_argument("--events", type=int, help="size of the replay journal (default 1,000,000; --quick 20,000)")
    args = p.parse_args(argv)
    env = common.environment(args.synchronous)
    print(" · ".join(f"{k} {v}" for k, v in env.items()))
    results = []
    if args.only in (None, "writes"):
        results += writes.run(quick=args.quick, synchronous=args.synchronous)
    if args.only in (None, "reads"):
        results += reads.run(quick=args.quick)
    if args.only in (None, "workers"):
        results += workers.run(quick=args.quick)
    if args.only in (None, "peers"):
        results += peers.run(quick=args.quick, synchronous=args.synchronous)
    if args.only in (None, "concurrency"):
        results += concurrency.run(quick=args.quick)
    if args.only in (None, "langgraph"):
        results += langgraph_group.run(quick=args.quick)
    if args.only in (None, "adk"):
        results += adk.run(quick=args.quick)
    if args.only in (None, "search"):
        results += search.run(quick=args.quick)
    if args.only in (None, "postgres"):
        results += postgres.run(quick=args.quick)
    if args.only in (None, "replay"):
        results += replay.run(quick=args.quick, events=args.events)
    print(f"{'figure':<50} {'median':>12} {'(min–max)':>22} {'unit':>10} {'baseline':>12} {'ratio':>6} {'target':>7}")
    for r in results:
        fine = r["unit"] in ("s", "ms", "µs", "%", "ratio", "MiB")
        spread = f"({r['min']:,.2f}–{r['max']:,.2f})" if fine else f"({r['min']:,.0f}–{r['max']:,.0f})"
        value = f"{r['value']:,.2f}" if fine else f"{r['value']:,.0f}"
        base = f"{r['baseline_value']:,.2f}" if fine else f"{r['baseline_value']:,.0f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        if r["target"] is None:
            target = ""
        elif r["unit"] == "items":
            target = f"=={r['target']}"
        else:
            target = ("<=" if r["unit"] in ("ms", "µs", "MiB") else ">=") + str(r["target"])
        print(f"{r['name']:<50} {value:>12} {spread:>22} {r['unit']:>10} {base:>12} {ratio:>6} {target:>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: r[k] for k in ("name", "value", "unit", "baseline", "baseline_value", "ratio", "target")}
                       for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
