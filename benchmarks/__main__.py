"""``python -m benchmarks [--quick] [--json FILE] [--synchronous full|normal]``"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import common, writes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes, a few rounds")
    p.add_argument("--json", metavar="FILE", help="also write the results as a JSON list")
    p.add_argument("--synchronous", choices=["full", "normal"], default="full")
    args = p.parse_args(argv)
    env = common.environment(args.synchronous)
    print(" · ".join(f"{k} {v}" for k, v in env.items()))
    results = writes.run(quick=args.quick, synchronous=args.synchronous)
    print(f"{'figure':<46} {'median':>10} {'(min–max)':>22} {'raw APSW':>10} {'ratio':>6} {'target':>7}")
    for r in results:
        spread = f"({r['min']:,.0f}–{r['max']:,.0f})"
        print(f"{r['name']:<46} {r['value']:>10,.0f} {spread:>22} {r['baseline_value']:>10,.0f} "
              f"{r['ratio']:>6.2f} {'>=' + str(r['target']):>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: r[k] for k in ("name", "value", "unit", "baseline", "baseline_value", "ratio", "target")}
                       for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
