"""The ``eventkernel`` command line: a thin layer over the library.

``main(argv) -> int``; one function per subcommand; errors are one line on
stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from kernel import demo
from kernel.errors import KernelError
from kernel.kernel import open as open_kernel


def cmd_init(args: argparse.Namespace) -> int:
    with open_kernel(args.db) as k:
        head = k.head
    _emit(args, {"db": args.db, "head": head}, f"initialised {args.db} (head {head})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo.run(args.db, seed=args.seed)


def cmd_verify(args: argparse.Namespace) -> int:
    with open_kernel(args.db) as k:
        report = k.verify()
    problems = list(report.problems)
    if args.expect_head and args.expect_head != report.head_hash:
        problems.append(
            f"head hash is {report.head_hash} at position {report.head}, expected {args.expect_head}: "
            "the tail was truncated or rewritten"
        )
    ok = not problems
    if args.json:
        print(json.dumps({"ok": ok, "head": report.head, "head_hash": report.head_hash,
                          "first_bad_position": report.first_bad_position, "problems": problems}))
    else:
        print(f"{'ok' if ok else 'FAILED'}: head {report.head}, hash {report.head_hash}")
        for p in problems:
            print(f"  {p}")
        if report.first_bad_position is not None:
            print(f"  first bad position: {report.first_bad_position}")
    return 0 if ok else 1


def cmd_rebuild(args: argparse.Namespace) -> int:
    with open_kernel(args.db) as k:
        head = k.rebuild(args.name)
    what = args.name or "every projection"
    _emit(args, {"rebuilt": args.name, "head": head}, f"rebuilt {what} up to position {head}")
    return 0


def _emit(args: argparse.Namespace, obj: dict[str, object], text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eventkernel", description="Inspect and operate an eventkernel journal.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, fn: object, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("db", help="path of the SQLite file")
        sp.add_argument("--json", action="store_true", help="print JSON instead of text")
        sp.set_defaults(fn=fn)
        return sp

    command("init", cmd_init, "create the journal and projections in a file")
    d = command("demo", cmd_demo, "run a small simulated orchestration on a file")
    d.add_argument("--seed", type=int, default=7, help="seed of the simulation (default 7)")
    v = command("verify", cmd_verify, "check integrity, order, hash chain and projections")
    v.add_argument("--expect-head", metavar="HASH", help="the head hash recorded earlier (detects a cut tail)")
    r = command("rebuild", cmd_rebuild, "rebuild projections from the journal")
    r.add_argument("name", nargs="?", help="one projection (default: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KernelError as e:
        print(f"eventkernel {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
