"""The ``eventkernel`` command line: a thin layer over the library.

``main(argv) -> int``; one function per subcommand; ``--json`` for machines
(one object per line for row streams); errors are one line on stderr and
exit status 1. Long work shows progress on a terminal and stays quiet when
piped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from eventkernel import demo, readonly
from eventkernel.errors import InvalidArgument, KernelError
from eventkernel.journal import LogEntry
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel

_json = msgspec.json.Encoder()


def _dump(obj: Any) -> str:
    return _json.encode(obj).decode()


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(text: str) -> int:
    """ms since the epoch from an int or an ISO 8601 time (UTC unless it says otherwise)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"cannot read {text!r} as a time: give ms since the epoch or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress display on a terminal's stderr; None when piped."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and done < total:
            return
        last[0] = now
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{label}: {done:,}/{total:,} ({pct}%)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _open(args: argparse.Namespace) -> Kernel:
    return open_kernel(args.db)


# --- subcommands ------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    with _open(args) as k:
        head = k.head
    _emit(args, {"db": args.db, "head": head}, f"initialised {args.db} (head {head})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.json:
        return demo.run(args.db, seed=args.seed, out=lambda text: print(_dump({"line": text})))
    return demo.run(args.db, seed=args.seed)


def _print_entry(args: argparse.Namespace, e: LogEntry) -> None:
    if args.json:
        print(_dump(e), flush=True)
    else:
        data = _dump(e.data)
        if len(data) > 100:
            data = data[:99] + "…"
        print(f"{e.position:>8}  {_iso(e.recorded_at)}  {e.stream}  v{e.version}  {e.type}  {data}", flush=True)


def cmd_log(args: argparse.Namespace) -> int:
    filters = dict(
        stream=args.stream, stream_prefix=args.prefix, types=args.type or (), correlation_id=args.correlation,
        before=args.before, since_ms=None if args.since is None else _time(args.since),
        until_ms=None if args.until is None else _time(args.until),
    )
    with _open(args) as k:
        last, shown = args.after, 0
        for e in k.log(after=last, limit=args.limit, **filters):
            _print_entry(args, e)
            last, shown = e.position, shown + 1
        while args.follow and (args.limit is None or shown < args.limit):
            time.sleep(args.poll)
            for e in k.log(after=last, **filters):
                _print_entry(args, e)
                last, shown = e.position, shown + 1
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as k:
        target = args.target
        if target.isdigit():
            entries = list(k.log(after=int(target) - 1, limit=1))
            if not entries or entries[0].position != int(target):
                raise InvalidArgument(f"no event at position {target} (the head is {k.head})")
        else:
            entries = list(k.log(stream=target))
            if not entries:
                raise InvalidArgument(f"no stream {target!r}")
    for e in entries:
        if args.json:
            print(_dump(e))
        else:
            print(f"position {e.position}  {e.stream} v{e.version}  {e.type} (schema {e.schema})")
            print(f"  recorded_at    {e.recorded_at} ({_iso(e.recorded_at)})")
            for name in ("event_id", "correlation_id"):
                if getattr(e, name) is not None:
                    print(f"  {name:<14} {getattr(e, name)}")
            if e.meta:
                print(f"  meta           {_dump(e.meta)}")
            print(f"  hash           {e.hash}")
            print("  data           " + json.dumps(e.data, indent=2, ensure_ascii=False).replace("\n", "\n                 "))
    return 0


def _position_of(k: Kernel, args: argparse.Namespace) -> int:
    if args.to is not None:
        return int(args.to)
    with k.at(time_ms=_time(args.at)) as view:
        return view.position


def cmd_replay(args: argparse.Namespace) -> int:
    with _open(args) as k:
        position = _position_of(k, args)
        with k.at(position, progress=_progress("replaying")) as view:
            if args.out:
                view.save(args.out)
            counts = {}
            for names in k._projector.tables.values():
                for table in names:
                    counts[table] = len(view.table(table)[1])
            head_entry = list(view.log(after=position - 1, limit=1)) if position else []
    at = _iso(head_entry[0].recorded_at) if head_entry else "-"
    summary = {"position": position, "recorded_at": at, "tables": counts}
    if args.out:
        summary["out"] = args.out
    if args.json:
        print(_dump(summary))
    else:
        print(f"as of position {position} ({at}):")
        for table, n in counts.items():
            print(f"  {table:<24} {n:>8} rows")
        if args.out:
            print(f"written to {args.out}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    with _open(args) as k:
        diffs = k.diff(args.a, args.b, progress=_progress("replaying"))
    for d in diffs:
        if not (d.added or d.removed or d.changed):
            continue
        if args.json:
            def row(r: tuple[Any, ...], columns: list[str] = d.columns) -> dict[str, Any]:
                return dict(zip(columns, r, strict=True))

            print(_dump({"table": d.table, "added": [row(r) for r in d.added], "removed": [row(r) for r in d.removed],
                         "changed": [{"before": row(a), "after": row(b)} for a, b in d.changed]}))
            continue
        print(f"{d.table}: +{len(d.added)} -{len(d.removed)} ~{len(d.changed)}")
        for r in d.added:
            print(f"  + {dict(zip(d.columns, r, strict=True))}")
        for r in d.removed:
            print(f"  - {dict(zip(d.columns, r, strict=True))}")
        for before, after in d.changed:
            changes = {c: (x, y) for c, x, y in zip(d.columns, before, after, strict=True) if x != y}
            key = before[0]
            print(f"  ~ {key!r}: " + ", ".join(f"{c} {x!r} -> {y!r}" for c, (x, y) in changes.items()))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    with _open(args) as k:
        head = k.rebuild(args.name, progress=_progress("rebuilding"))
    what = args.name or "every projection"
    _emit(args, {"rebuilt": args.name, "head": head}, f"rebuilt {what} up to position {head}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor:
        position, sep, hash_hex = args.anchor.partition(":")
        if not sep or not position.isdigit():
            raise InvalidArgument(f"verify refused: --anchor must be POSITION:HASH, got {args.anchor!r}")
        anchor = (int(position), hash_hex)
    with _open(args) as k:
        report = k.verify(anchor=anchor, progress=_progress("verifying"))
    problems = list(report.problems)
    if args.expect_head and args.expect_head != report.head_hash:
        problems.append(
            f"head hash is {report.head_hash} at position {report.head}, expected {args.expect_head}: "
            "the tail was truncated or rewritten"
        )
    ok = not problems
    if args.json:
        print(_dump({"ok": ok, "head": report.head, "head_hash": report.head_hash,
                     "first_bad_position": report.first_bad_position, "problems": problems}))
    else:
        print(f"{'ok' if ok else 'FAILED'}: head {report.head}, hash {report.head_hash}")
        for p in problems:
            print(f"  {p}")
        if report.first_bad_position is not None:
            print(f"  first bad position: {report.first_bad_position}")
    return 0 if ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as k:
        stats = k.stats()
    if args.json:
        print(_dump(stats))
        return 0
    print(f"head {stats.head}, database {stats.database_bytes:,} bytes")
    for name, size in stats.files.items():
        print(f"  {name:<28} {size:>14,} bytes")
    print("events by type:")
    for t, n in stats.events_by_type.items():
        print(f"  {t:<28} {n:>10,}")
    print("events by stream kind:")
    for kind, n in stats.events_by_stream_kind.items():
        print(f"  {kind:<28} {n:>10,}")
    print("projections:")
    for name, p in stats.projections.items():
        print(f"  {name:<28} v{p['version']} at {p['position']:,} (lag {p['lag']:,})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as k:
        if args.table is None:
            if args.format != "jsonl":
                raise InvalidArgument("events export only as jsonl; --format csv needs --table")
            total, done = k.head, 0
            progress = _progress("exporting")
            for e in k.log():
                print(_dump(e))
                done += 1
                if progress and done % 4096 == 0:
                    progress(done, total)
            if progress:
                progress(total, total)
            return 0
        columns, rows = k.table(args.table)
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([_csv(v) for v in r] for r in rows)
    else:
        for r in rows:
            print(_dump(dict(zip(columns, [_plain(v) for v in r], strict=True))))
    return 0


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def _csv(value: Any) -> Any:
    return "" if value is None else _plain(value)


def cmd_query(args: argparse.Namespace) -> int:
    columns, rows = readonly.query(args.db, args.sql)
    if args.json:
        for r in rows:
            print(_dump(dict(zip(columns, [_plain(v) for v in r], strict=True))))
        return 0
    materialised = [[("NULL" if v is None else str(_plain(v))) for v in r] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in materialised]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in materialised:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    return 0


def _emit(args: argparse.Namespace, obj: dict[str, object], text: str) -> None:
    print(_dump(obj) if args.json else text)


# --- the parser -------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eventkernel", description="Inspect and operate an eventkernel journal.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, fn: object, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("db", help="path of the SQLite file")
        sp.add_argument("--json", action="store_true", help="print JSON (one object per line for rows)")
        sp.set_defaults(fn=fn)
        return sp

    command("init", cmd_init, "create the journal and projections in a file")
    d = command("demo", cmd_demo, "run a small simulated orchestration on a file")
    d.add_argument("--seed", type=int, default=7, help="seed of the simulation (default 7)")
    log = command("log", cmd_log, "list events, filtered; --follow tails new ones")
    log.add_argument("--stream", help="one stream, e.g. work_item:wi_01…")
    log.add_argument("--prefix", help="streams starting with this, e.g. memory:user:alice")
    log.add_argument("--type", action="append", help="an event type (repeatable)")
    log.add_argument("--correlation", help="a correlation id (a task id)")
    log.add_argument("--after", type=int, default=0, help="positions after this one")
    log.add_argument("--before", type=int, help="positions before this one")
    log.add_argument("--since", help="recorded at or after (ms or ISO 8601)")
    log.add_argument("--until", help="recorded at or before (ms or ISO 8601)")
    log.add_argument("--limit", type=int, help="at most this many events")
    log.add_argument("--follow", action="store_true", help="keep printing events as they are appended")
    log.add_argument("--poll", type=float, default=0.2, help=argparse.SUPPRESS)
    show = command("show", cmd_show, "one event (by position) or every event of a stream, in full")
    show.add_argument("target", metavar="POSITION|STREAM")
    replay = command("replay", cmd_replay, "every projection as of a position or time")
    when = replay.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", type=int, metavar="POSITION")
    when.add_argument("--at", metavar="TIME", help="ms since the epoch or ISO 8601")
    replay.add_argument("--out", metavar="FILE", help="write the projection tables as of then to a new SQLite file")
    diff = command("diff", cmd_diff, "rows added, removed and changed between two positions")
    diff.add_argument("a", type=int, metavar="A")
    diff.add_argument("b", type=int, metavar="B")
    r = command("rebuild", cmd_rebuild, "rebuild projections from the journal")
    r.add_argument("name", nargs="?", help="one projection (default: all)")
    v = command("verify", cmd_verify, "check integrity, order, hash chain and projections")
    v.add_argument("--expect-head", metavar="HASH", help="the head hash recorded earlier (detects a cut tail)")
    v.add_argument("--anchor", metavar="POSITION:HASH",
                   help="a head and its hash recorded earlier: names where a cut tail began")
    command("stats", cmd_stats, "head, events per type and stream kind, sizes, projection lag")
    ex = command("export", cmd_export, "events as JSON lines, or one projection table")
    ex.add_argument("--table", help="a projection table instead of the events")
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    q = command("query", cmd_query, "run one read-only SQL statement")
    q.add_argument("sql", metavar="SQL")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KernelError as e:
        print(f"eventkernel {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
