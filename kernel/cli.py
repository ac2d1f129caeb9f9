"""The ``eventkernel`` command line: a thin layer over the library.

``main(argv) -> int``; one function per subcommand; ``--json`` for machines
(one object per line for row streams); errors, usage errors included, are
one line on stderr and exit status 1. Read commands open the file read-only:
they never create, migrate or write it. Long work shows progress on a
terminal and stays quiet when piped.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import msgspec

from eventkernel import demo, postgres, readonly, secrets, transfer
from eventkernel.backup import restore
from eventkernel.errors import InvalidArgument, JournalCorrupt, KernelError
from eventkernel.journal import LogEntry
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel
from eventkernel.validate import INT64_MAX
from eventkernel.verify import VerifyReport
from eventkernel.version import VERSION

_json = msgspec.json.Encoder()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIGITS = re.compile(r"[0-9]+")
_HASH = re.compile(r"[0-9a-f]{64}")
_WIDTH = 100  # characters of data shown per event by `log` without --full


def _dump(obj: Any) -> str:
    return _json.encode(obj).decode()


def _iso(ms: int) -> str:
    """ISO 8601 in UTC for any ms since the epoch (years 1 to 9999); the bare
    number outside that range."""
    try:
        return (_EPOCH + dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return f"{ms} ms"


def _whole(text: str, what: str) -> int:
    """A whole number of ASCII digits within 0..2**63-1 (not '²', not '١')."""
    if not _DIGITS.fullmatch(text) or int(text) > INT64_MAX:
        raise InvalidArgument(f"{what} must be a whole number from 0 to {INT64_MAX}, got {text!r}")
    return int(text)


def _arg(what: str) -> Callable[[str], int]:
    """An argparse type for a whole number, named in its error."""

    def parse(text: str) -> int:
        try:
            return _whole(text, what)
        except InvalidArgument:
            # argparse names the argument itself ("argument --to: …")
            raise argparse.ArgumentTypeError(
                f"must be a whole number from 0 to {INT64_MAX}, got {text!r}"
            ) from None

    parse.__name__ = what
    return parse


def _time(text: str, what: str) -> int:
    """ms since the epoch from a whole number or an ISO 8601 time (UTC unless it says otherwise)."""
    if re.fullmatch(r"-?[0-9]+", text):
        value = int(text)
        if abs(value) > INT64_MAX:
            raise InvalidArgument(f"{what} {text!r} is out of range")
        return value
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"cannot read {what} {text!r} as a time: give ms since the epoch or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


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


def _read(args: argparse.Namespace) -> Kernel:
    """The file, opened read-only: never created, migrated or written. A
    ``postgresql://`` URL: its journal copied into a temporary SQLite file
    (the projections rebuilt there), removed when the command ends."""
    return open_kernel(_local(args), read_only=True)


def _local(args: argparse.Namespace) -> str:
    """The path of the journal: the file given, or for a URL a temporary copy."""
    if not postgres.is_url(args.db):
        return str(args.db)
    folder = tempfile.mkdtemp(prefix="eventkernel-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "journal.db")
    transfer.copy(args.db, path, schema=_schema(args), progress=_progress("reading the journal"))
    return path


def _schema(args: argparse.Namespace) -> str:
    return str(getattr(args, "schema", postgres.DEFAULT_SCHEMA))


def _journal(args: argparse.Namespace) -> Kernel | postgres.PgJournal:
    """What ``log`` and ``verify`` read: the file (read-only) or the journal on PostgreSQL itself."""
    if postgres.is_url(args.db):
        return postgres.open_journal(args.db, schema=_schema(args), create=False)
    return open_kernel(args.db, read_only=True)


def _position(k: Kernel, text_or_int: str | int, what: str, *, event: bool = False) -> int:
    """A journal position given on the command line, checked against the head
    (``event``: it must name an event, so 0 is refused too)."""
    position = text_or_int if isinstance(text_or_int, int) else _whole(text_or_int, what)
    head = k.head
    if event and not 1 <= position <= head:
        span = f"positions run from 1 to the head, {head}" if head else "the journal is empty"
        raise InvalidArgument(f"there is no event at position {position} ({span})")
    if position > head:
        raise InvalidArgument(f"{what} {position} is past the journal head {head}")
    return position


# --- subcommands ------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    with open_kernel(args.db) as k:
        head = k.head
    _emit(args, {"db": args.db, "head": head}, f"initialised {args.db} (head {head})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.json:
        return demo.run(args.db, seed=args.seed, out=None, events=lambda e: _print(_dump(e)))
    return demo.run(args.db, seed=args.seed, out=_print)


def _print(text: str) -> None:
    print(text, flush=True)


def _print_entry(args: argparse.Namespace, e: LogEntry) -> None:
    if args.json:
        _print(_dump(e))
        return
    data = _dump(e.data)
    if not args.full and len(data) > _WIDTH:
        data = data[: _WIDTH - 1] + "…"
    _print(f"{e.position:>8}  {_iso(e.recorded_at)}  {e.stream}  v{e.version}  {e.type}  {data}")


def cmd_log(args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "stream": args.stream, "stream_prefix": args.prefix, "types": args.type or (),
        "correlation_id": args.correlation, "before": args.before,
        "since_ms": None if args.since is None else _time(args.since, "--since"),
        "until_ms": None if args.until is None else _time(args.until, "--until"),
    }
    with _journal(args) as k:
        for type_ in args.type or ():
            if not any(True for _ in k.log(types=[type_], limit=1)):
                print(f"eventkernel log: no event of type {type_!r} in {args.db}", file=sys.stderr)
        last, shown = args.after, 0
        for e in k.log(after=last, limit=args.limit, **filters):
            _print_entry(args, e)
            last, shown = e.position, shown + 1
        if args.follow and (args.limit is None or shown < args.limit) and isinstance(k, postgres.PgJournal):
            while args.limit is None or shown < args.limit:  # woken by the NOTIFY of each commit
                k.wait(last, 1.0)
                for e in k.log(after=last, limit=None if args.limit is None else args.limit - shown, **filters):
                    _print_entry(args, e)
                    last, shown = e.position, shown + 1
        elif args.follow and (args.limit is None or shown < args.limit):
            assert isinstance(k, Kernel)
            # Woken by the commits of any process on the file (a subscription).
            with k.follow(after=last, stream=args.stream, stream_prefix=args.prefix, types=args.type or (),
                          correlation_id=args.correlation, poll_ms=args.poll) as events:
                for e in events:
                    if filters["before"] is not None and e.position >= filters["before"]:
                        break
                    if (filters["since_ms"] is not None and e.recorded_at < filters["since_ms"]) or \
                            (filters["until_ms"] is not None and e.recorded_at > filters["until_ms"]):
                        continue
                    _print_entry(args, e)
                    shown += 1
                    if args.limit is not None and shown >= args.limit:
                        break
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _read(args) as k:
        target = args.target
        if _DIGITS.fullmatch(target):
            position = _position(k, target, "position", event=True)
            entries = list(k.log(after=position - 1, limit=1))
        else:
            entries = list(k.log(stream=target))
            if not entries:
                raise InvalidArgument(f"there is no stream {target!r} (nor a position: positions are whole numbers)")
    for e in entries:
        if args.json:
            _print(_dump(e))
            continue
        _print(f"position {e.position}  {e.stream} v{e.version}  {e.type} (schema {e.schema})")
        _print(f"  recorded_at    {e.recorded_at} ({_iso(e.recorded_at)})")
        for name in ("event_id", "correlation_id"):
            if getattr(e, name) is not None:
                _print(f"  {name:<14} {getattr(e, name)}")
        if e.meta:
            _print(f"  meta           {_dump(e.meta)}")
        _print(f"  hash           {e.hash}")
        _print("  data           " + json.dumps(e.data, indent=2, ensure_ascii=False).replace("\n", "\n                 "))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    with _read(args) as k:
        if args.to is not None:
            position = _position(k, args.to, "--to")
        else:
            position = k.position_at(_time(args.at, "--at"))
        with k.at(position, progress=_progress("replaying")) as view:
            if args.out:
                view.save(args.out)
            counts = {table: len(view.table(table)[1]) for table in view.table_names()}
            head_entry = list(view.log(after=position - 1, limit=1)) if position else []
    at = _iso(head_entry[0].recorded_at) if head_entry else "-"
    summary: dict[str, Any] = {"position": position, "recorded_at": at, "tables": counts}
    if args.out:
        summary["out"] = args.out
    if args.json:
        _print(_dump(summary))
        return 0
    _print(f"as of position {position} ({at}):")
    for table, n in counts.items():
        _print(f"  {table:<24} {n:>8} rows")
    if args.out:
        _print(f"written to {args.out}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    with _read(args) as k:
        a, b = _position(k, args.a, "A"), _position(k, args.b, "B")
        diffs = k.diff(a, b, progress=_progress("replaying"))
    for d in diffs:
        if not (d.added or d.removed or d.changed):
            continue
        if args.json:
            def row(r: tuple[Any, ...], columns: list[str] = d.columns) -> dict[str, Any]:
                return dict(zip(columns, r, strict=True))

            _print(_dump({"table": d.table, "added": [row(r) for r in d.added], "removed": [row(r) for r in d.removed],
                          "changed": [{"before": row(x), "after": row(y)} for x, y in d.changed]}))
            continue
        _print(f"{d.table}: +{len(d.added)} -{len(d.removed)} ~{len(d.changed)}")
        for r in d.added:
            _print(f"  + {dict(zip(d.columns, r, strict=True))}")
        for r in d.removed:
            _print(f"  - {dict(zip(d.columns, r, strict=True))}")
        for before, after in d.changed:
            changes = {c: (x, y) for c, x, y in zip(d.columns, before, after, strict=True) if x != y}
            _print(f"  ~ {before[0]!r}: " + ", ".join(f"{c} {x!r} -> {y!r}" for c, (x, y) in changes.items()))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    with open_kernel(args.db, create=False) as k:
        head = k.rebuild(args.name, progress=_progress("rebuilding"))
    what = args.name or "every projection"
    _emit(args, {"rebuilt": args.name, "head": head}, f"rebuilt {what} up to position {head}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor is not None:
        position, sep, hash_hex = args.anchor.partition(":")
        if not sep or not _DIGITS.fullmatch(position) or int(position) > INT64_MAX or not _HASH.fullmatch(hash_hex):
            raise InvalidArgument(
                f"--anchor must be POSITION:HASH (a whole number, a colon, 64 lowercase hex digits), "
                f"got {args.anchor!r}"
            )
        anchor = (int(position), hash_hex)
    if args.expect_head is not None and not _HASH.fullmatch(args.expect_head):
        raise InvalidArgument(f"--expect-head must be 64 lowercase hex digits, got {args.expect_head!r}")
    if postgres.is_url(args.db):
        with postgres.open_journal(args.db, schema=args.schema, create=False) as j:
            report = j.verify(anchor=anchor)
        return _verdict(args, report)
    try:
        k = _read(args)
    except JournalCorrupt as e:
        # A journal too damaged to open fails verification: say so as a report.
        report = VerifyReport(ok=False, problems=[str(e)], head=0, head_hash="")
    else:
        with k:
            report = k.verify(anchor=anchor, progress=_progress("verifying"), all_snapshots=args.all_snapshots)
    return _verdict(args, report)


def _verdict(args: argparse.Namespace, report: VerifyReport) -> int:
    problems = list(report.problems)
    if args.expect_head and args.expect_head != report.head_hash:
        problems.append(
            f"head hash is {report.head_hash} at position {report.head}, expected {args.expect_head}: "
            "the tail was truncated or rewritten"
        )
    ok = not problems
    if args.json:
        _print(_dump({"ok": ok, "head": report.head, "head_hash": report.head_hash,
                      "first_bad_position": report.first_bad_position, "problems": problems,
                      "notes": report.notes}))
    else:
        _print(f"{'ok' if ok else 'FAILED'}: head {report.head}, hash {report.head_hash}")
        for p in problems:
            _print(f"  {p}")
        for n in report.notes:
            _print(f"  note: {n}")
        if report.first_bad_position is not None:
            _print(f"  first bad position: {report.first_bad_position}")
    return 0 if ok else 1


def cmd_copy(args: argparse.Namespace) -> int:
    head = transfer.copy(args.db, args.target, schema=args.schema, progress=_progress("copying"))
    target = postgres.redact(args.target) if postgres.is_url(args.target) else args.target
    _emit(args, {"copied": target, "head": head}, f"copied {head} events to {target}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    with _read(args) as k:
        head = k.backup(args.out)
    _emit(args, {"backup": args.out, "head": head}, f"backed up {head} events to {args.out} (verified)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    head = restore(args.db, args.target, force=args.force)
    _emit(args, {"restored": args.target, "head": head}, f"restored {head} events to {args.target}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    with open_kernel(args.db, create=False) as k:
        done = k.erase(stream=args.stream, stream_prefix=args.prefix, correlation_id=args.correlation,
                       reason=args.reason, actor=args.actor, archive=args.archive)
    _emit(args, {"erasure": done.position, "events": done.events, "projections": done.projections,
                 "wal_cleared": done.wal_cleared},
          f"erased the payloads of {done.events} events (recorded at position {done.position}); rebuilt "
          f"{', '.join(done.projections) or 'no projection'}" + ("" if done.wal_cleared else
                                                                 "; the WAL is still in use: checkpoint it again"))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    if args.drop:
        with open_kernel(args.db, create=False, snapshot_every=0) as k:
            dropped = k.drop_snapshots()
        _emit(args, {"dropped": dropped}, f"dropped {dropped} snapshots")
        return 0
    if args.list:
        with _read(args) as k:
            stored = k.snapshots()
        if args.json:
            for s in stored:
                _print(_dump(s))
            return 0
        for s in stored:
            base = "every page" if s.parent is None else f"pages changed since {s.parent}"
            _print(f"{s.position:>10}  {s.pages:>7} of {s.page_count:>7} pages ({base}), {s.bytes:,} bytes"
                   + ("" if s.usable else "  (other projections: not used)"))
        return 0
    with open_kernel(args.db, create=False, snapshot_every=0) as k:
        before = {s.position for s in k.snapshots()}
        head = k.snapshot(every=args.every, progress=_progress("snapshotting"))
        stored = k.snapshots()
    made = [s for s in stored if s.position not in before]
    _emit(args, {"head": head, "made": [s.position for s in made], "bytes": sum(s.bytes for s in made),
                 "snapshots": len(stored), "total_bytes": sum(s.bytes for s in stored)},
          f"made {len(made)} snapshots ({sum(s.bytes for s in made):,} bytes) up to position {head}; "
          f"{len(stored)} stored, {sum(s.bytes for s in stored):,} bytes in all")
    return 0


def cmd_retain(args: argparse.Namespace) -> int:
    from eventkernel.events.retention import Policy
    from eventkernel.services.retention import SEED_DEFAULTS

    given: list[Policy] | None = None
    if args.defaults or args.set:
        given = list(SEED_DEFAULTS) if args.defaults else []
        for text in args.set or []:
            rule, sep, days = text.partition("=")
            if not sep:
                raise InvalidArgument(f"--set takes RULE=DAYS, got {text!r}")
            given = [p for p in given if p.rule != rule] + [Policy(rule=rule, days=_whole(days, f"--set {rule}"))]
    with (_read(args) if args.dry_run else open_kernel(args.db, create=False, snapshot_every=0)) as k:
        if given is not None and not args.dry_run:
            k.retention.set_policies(given)
        report = k.retention.apply(dry_run=args.dry_run, policies=given if args.dry_run else None)
        policies = given if given is not None else k.retention.policies()
    if args.json:
        _print(_dump({"dry_run": report.dry_run, "position": report.position,
                      "policies": [{"rule": p.rule, "days": p.days} for p in policies],
                      "results": [{"rule": r.rule, "table": r.table, "days": r.days, "cutoff_ms": r.cutoff_ms,
                                   "rows": len(r.keys), "keys": r.keys} for r in report.results]}))
        return 0
    if not policies:
        _print("no retention policies (set some with --set RULE=DAYS or --defaults)")
        return 0
    verb = "would forget" if report.dry_run else "forgot"
    for r in report.results:
        _print(f"{r.rule} ({r.days} days): {verb} {len(r.keys)} rows of {r.table}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    with open_kernel(args.db, create=False, snapshot_every=0) as k:
        done = k.compact(before=_whole(args.before, "--before"), archive=args.archive)
    _emit(args, {"base": done.base, "base_hash": done.base_hash, "archive": done.archive, "events": done.events,
                 "payloads_kept": done.payloads_kept, "bytes_before": done.bytes_before,
                 "bytes_after": done.bytes_after},
          f"moved {done.events} events (to position {done.base}) into {done.archive} (verified); the journal now "
          f"starts after {done.base} (hash {done.base_hash}); {done.bytes_before:,} bytes before, "
          f"{done.bytes_after:,} after")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _read(args) as k:
        stats = k.stats()
        if args.metrics:
            window = _whole(args.window, "--window") * 60_000
            if window == 0:
                raise InvalidArgument("--window must be at least 1 minute")
            health = k.metrics.health(window_ms=window)
            names = k.metrics.names()
            samples = {n: k.metrics.aggregate(n, since=health.since, until=health.until) for n in names}
    if args.json:
        if args.metrics:
            _print(_dump({"stats": stats, "health": health, "metrics": samples}))
        else:
            _print(_dump(stats))
        return 0
    _print(f"head {stats.head}, database {stats.database_bytes:,} bytes")
    for name, size in stats.files.items():
        _print(f"  {name:<28} {size:>14,} bytes")
    _print("events by type:")
    for t, n in stats.events_by_type.items():
        _print(f"  {t:<28} {n:>10,}")
    _print("events by stream kind:")
    for kind, n in stats.events_by_stream_kind.items():
        _print(f"  {kind:<28} {n:>10,}")
    _print("projections:")
    for name, p in stats.projections.items():
        _print(f"  {name:<28} v{p['version']} at {p['position']:,} (lag {p['lag']:,})")
    if args.metrics:
        _print_health(health, samples)
    return 0


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _print_health(health: Any, samples: dict[str, Any]) -> None:
    minutes = (health.until - health.since) / 60_000
    _print(f"health over the last {minutes:g} minutes ({_iso(health.since)} to {_iso(health.until)}): "
           f"{health.events:,} events")
    _print("  commands per minute:")
    for name, rate in sorted(health.commands_per_minute.items(), key=lambda kv: (-kv[1], kv[0])):
        _print(f"    {name:<26} {rate:>10.2f}")
    _print(f"  lease expiries {health.lease_expiries:,}; work claims {health.work_claims:,}; "
           f"retry rate {_rate(health.retry_rate)}")
    _print(f"  recovery attempts finished {health.recovery_attempts:,}; success rate "
           f"{_rate(health.recovery_success_rate)}")
    lagging = {n: lag for n, lag in health.projection_lag.items() if lag}
    _print(f"  projection lag: {', '.join(f'{n} {lag:,}' for n, lag in lagging.items()) or 'none'}")
    if samples:
        _print("metrics over the same span (count, mean, p50, p95, p99, max):")
        for name, s in samples.items():
            if s.count:
                _print(f"  {name:<28} {s.count:>8,} {s.mean:>10.4g} {s.p50:>10.4g} {s.p95:>10.4g} {s.p99:>10.4g} "
                       f"{s.max:>10.4g}")
            else:
                _print(f"  {name:<28} {0:>8}")


def cmd_keygen(args: argparse.Namespace) -> int:
    key = secrets.generate_key()
    _emit(args, {"key": key, "key_id": secrets.key_id(key)}, key)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _read(args) as k:
        if args.table is None:
            if args.format != "jsonl":
                raise InvalidArgument("the events export only as jsonl; --format csv needs --table")
            total, done = k.head, 0
            progress = _progress("exporting")
            for e in k.log():
                _print(_dump(e))
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
            _print(_dump(dict(zip(columns, [_plain(v) for v in r], strict=True))))
    return 0


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def _csv(value: Any) -> Any:
    return "" if value is None else _plain(value)


def cmd_query(args: argparse.Namespace) -> int:
    columns, rows = readonly.query(_local(args), args.sql)
    if args.json:
        for r in rows:
            _print(_dump(dict(zip(columns, [_plain(v) for v in r], strict=True))))
        return 0
    materialised = [[("NULL" if v is None else str(_plain(v))) for v in r] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in materialised]) for i, c in enumerate(columns)]
    _print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    _print("  ".join("-" * w for w in widths))
    for line in materialised:
        _print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    return 0


def _emit(args: argparse.Namespace, obj: dict[str, object], text: str) -> None:
    _print(_dump(obj) if args.json else text)


# --- the parser -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 1, like every error."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, _one_line(f"{self.prog}: {message} (see {self.prog} --help)") + "\n")


def _one_line(text: str) -> str:
    """A message as one printable line: newlines, other control characters
    and lone surrogates (undecodable bytes of argv) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="eventkernel", description="Inspect and operate an eventkernel journal.")
    p.add_argument("--version", action="version", version=f"eventkernel {VERSION}",
                   help="print the version of eventkernel and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")

    read_only = "path of the journal (opened read-only), or a postgresql:// URL"

    def command(name: str, fn: object, help_: str, *, db: str = read_only) -> Any:
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        sp.add_argument("db", metavar="DB", help=db)
        sp.add_argument("--json", action="store_true", help="print JSON (one object per line for rows)")
        if "postgresql://" in db:
            sp.add_argument("--schema", default=postgres.DEFAULT_SCHEMA,
                            help=f"the PostgreSQL schema of the journal (default {postgres.DEFAULT_SCHEMA})")
        sp.set_defaults(fn=fn)
        return sp

    command("init", cmd_init, "create a journal in a new or empty file (an existing journal is left as it is)",
            db="path of the file to create")
    d = command("demo", cmd_demo, "run a small simulated orchestration on a file, in one transaction",
                db="path of the journal to run it on (created if missing)")
    d.add_argument("--seed", type=_arg("--seed"), default=7, help="seed of the simulation (default 7)")
    log = command("log", cmd_log, "list events, filtered; --follow prints new ones as they are appended")
    log.add_argument("--stream", help="one stream, e.g. work_item:wi_01…")
    log.add_argument("--prefix", help="streams starting with this, e.g. memory:user:alice")
    log.add_argument("--type", action="append", help="an event type, e.g. work_item.claimed (repeatable)")
    log.add_argument("--correlation", help="a correlation id (a task id)")
    log.add_argument("--after", type=_arg("--after"), default=0, help="positions after this one")
    log.add_argument("--before", type=_arg("--before"), help="positions before this one")
    log.add_argument("--since", help="recorded at or after this time (ms since the epoch, or ISO 8601; UTC unless "
                                     "it says otherwise)")
    log.add_argument("--until", help="recorded at or before this time (as --since)")
    log.add_argument("--limit", type=_arg("--limit"), help="at most this many events")
    log.add_argument("--full", action="store_true", help=f"show the whole data of each event (default: the first "
                                                         f"{_WIDTH} characters)")
    log.add_argument("--follow", action="store_true", help="keep printing events as they are appended (Ctrl-C stops)")
    log.add_argument("--poll", type=_arg("--poll"), default=20, help=argparse.SUPPRESS)  # ms between checks for other processes' commits
    show = command("show", cmd_show, "one event (by position) or every event of a stream, in full")
    show.add_argument("target", metavar="POSITION|STREAM", help="a journal position (1, 2, …) or a stream name")
    replay = command("replay", cmd_replay, "every projection as of a position or a time")
    when = replay.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", type=_arg("--to"), metavar="POSITION", help="the journal position to replay to")
    when.add_argument("--at", metavar="TIME", help="replay to the last event recorded at or before this time (ms "
                                                   "since the epoch, or ISO 8601)")
    replay.add_argument("--out", metavar="FILE", help="write the projection tables as of then to a new SQLite file "
                                                      "(refused if FILE exists)")
    diff = command("diff", cmd_diff, "rows added, removed and changed between two positions")
    diff.add_argument("a", type=_arg("A"), metavar="A", help="the earlier journal position")
    diff.add_argument("b", type=_arg("B"), metavar="B", help="the later journal position")
    r = command("rebuild", cmd_rebuild, "rebuild projections from the journal (opens the file for writing)",
                db="path of an existing journal")
    r.add_argument("name", nargs="?", help="one projection, e.g. work_items (default: all)")
    v = command("verify", cmd_verify, "check integrity, order, hash chain and projections")
    v.add_argument("--expect-head", metavar="HASH", help="the head hash recorded earlier (detects a cut tail)")
    v.add_argument("--all-snapshots", action="store_true",
                   help="also compare every snapshot, row for row, with the journal replayed to its position")
    v.add_argument("--anchor", metavar="POSITION:HASH",
                   help="a head and its hash recorded earlier: names where a cut tail began")
    st = command("stats", cmd_stats, "head, events per type and stream kind, sizes, projection lag")
    st.add_argument("--metrics", action="store_true", help="also the kernel's health (commands per minute, lease "
                    "expiries, retry and recovery rates) and the recorded metrics, over a recent span")
    st.add_argument("--window", default="60", metavar="MINUTES", help="the span of --metrics (default 60)")
    er = command("erase", cmd_erase, "erase a subject's payloads from the journal, keeping the chain verifiable",
                 db="path of an existing journal")
    which = er.add_mutually_exclusive_group(required=True)
    which.add_argument("--stream", help="every event of this stream, e.g. session:s-42")
    which.add_argument("--prefix", help="every event of the streams starting with this, e.g. memory:user:alice/")
    which.add_argument("--correlation", help="every event with this correlation id, e.g. a LangGraph thread")
    er.add_argument("--reason", required=True, help="why (recorded in the erasure's event)")
    er.add_argument("--actor", help="who asked (recorded too)")
    er.add_argument("--archive", metavar="FILE", help="after a compaction: the archive holding the subject's "
                                                     "older events, erased there too")
    sn = command("snapshot", cmd_snapshot, "store a snapshot of every projection at the head, so that views of the "
                                           "past start from it", db="path of an existing journal")
    sn.add_argument("--every", type=_arg("--every"), metavar="N",
                    help="also fill the history: no two snapshots more than N events apart")
    sn.add_argument("--list", action="store_true", help="list the stored snapshots instead (read-only)")
    sn.add_argument("--drop", action="store_true", help="drop every stored snapshot instead")
    rt = command("retain", cmd_retain, "forget the rows the file's retention policies select (recorded as events)",
                 db="path of an existing journal")
    rt.add_argument("--dry-run", action="store_true", help="say what would be forgotten, write nothing (read-only)")
    rt.add_argument("--set", action="append", metavar="RULE=DAYS",
                    help="record this rule in the file's policies first (repeatable; replaces the policies), e.g. "
                         "work_items_finished=30")
    rt.add_argument("--defaults", action="store_true", help="start from the seed's defaults: successful recovery "
                    "attempts and single failure patterns after 90 days, expired idempotency keys")
    cp = command("compact", cmd_compact, "move the events before a position into an archive journal and give "
                                         "their space back", db="path of an existing journal")
    cp.add_argument("--before", required=True, metavar="P", help="the events before this position move")
    cp.add_argument("--archive", required=True, metavar="FILE", help="path of the archive (a new journal file; "
                                                                      "an existing one only if it is this "
                                                                      "journal up to there)")
    cp = command("copy", cmd_copy, "copy a journal, every row as it is (positions, hashes), between SQLite files "
                                   "and PostgreSQL; an SQLite copy has its projections rebuilt",
                 db="path of the journal, or a postgresql:// URL")
    cp.add_argument("target", metavar="DST", help="a new file, or a postgresql:// URL (a destination holding the "
                                                  "start of the same journal is continued)")
    b = command("backup", cmd_backup, "an online, verified copy of the journal in a new file, while others write")
    b.add_argument("out", metavar="OUT", help="path of the copy (refused if it exists)")
    rs = command("restore", cmd_restore, "put a backup in place of a journal that is not open (refused if that "
                                         "would lose or replace events, unless --force)", db="path of the backup")
    rs.add_argument("target", metavar="DB", help="path of the journal to restore (created if missing)")
    rs.add_argument("--force", action="store_true", help="restore even over a longer or different journal, or "
                                                         "a file that is not a journal")
    ex = command("export", cmd_export, "the events as JSON lines, or one projection table")
    ex.add_argument("--table", help="a projection table instead of the events, e.g. work_items")
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="jsonl (default) or csv (tables)")
    kg = sub.add_parser("keygen", help="print a new secret key (for open(secret_key=…) or "
                                      "$EVENTKERNEL_SECRET_KEY)", description="Print a new secret key: 32 random "
                        "bytes as URL-safe base64, for secret configuration values.")
    kg.add_argument("--json", action="store_true", help="print the key and its id as JSON")
    kg.set_defaults(fn=cmd_keygen)
    q = command("query", cmd_query, "run one read-only SQL statement")
    q.add_argument("sql", metavar="SQL", help="one SELECT statement (writes, ATTACH and PRAGMA are refused)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help and --version (0), usage errors (1), already printed
        return e.code if isinstance(e.code, int) else 1
    try:
        if getattr(args, "db", None) in ("", ":memory:"):
            raise InvalidArgument(f"DB must be the path of a file, got {args.db!r}")
        return int(args.fn(args))
    except KernelError as e:
        print(_one_line(f"eventkernel {args.command}: {e}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and Python
        # must not complain while flushing stdout at exit.
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
