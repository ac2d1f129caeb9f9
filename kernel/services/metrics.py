"""Metrics: samples recorded as events, windowed aggregates over them, and
the kernel's own health figures read from the journal.

``record`` appends one ``metric.recorded`` event per sample (``record_many``:
several in one command). Aggregates (count, sum, min, max, mean, p50, p95,
p99) cover a time range, filtered by tags, per tag value (``by=``) or per
window (``windows``). Percentiles interpolate linearly between the two
nearest ranks (NumPy's default, Hyndman & Fan type 7).

``health`` derives, from the journal over a recent span: commands per type
per minute, lease expiries, the retry rate of work, the success rate of
recovery attempts, and each projection's lag behind the head.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Mapping
from typing import Any

import apsw
import msgspec

from eventkernel import codec, journal
from eventkernel.errors import InvalidArgument
from eventkernel.events.metrics import MetricRecorded
from eventkernel.events.recovery import RecoveryAttemptFinished
from eventkernel.events.work import WorkItemClaimed, WorkItemFailed, WorkItemLeaseExpired
from eventkernel.journal import Recorded
from eventkernel.projections import metrics
from eventkernel.services.base import Context
from eventkernel.services.runner import Args, Decision, Emit, Reads, Spec, run
from eventkernel.validate import INT64_MAX, check_int, check_optional_text, check_text

MAX_TAGS = 64
MINUTE_MS = 60_000


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The aggregate of the samples of one metric in a range (None figures: no sample)."""

    count: int
    sum: float
    min: float | None
    max: float | None
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """The samples recorded in [start, start + window_ms)."""

    start: int
    summary: Summary


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The kernel's health over [since, until] (ms), read from the journal.

    ``commands_per_minute``: per command name, the commands of that name per
    minute (a command's events are consecutive; one that appends several
    says how many in its metadata, so each command counts once).
    ``lease_expiries``: leases that ran out. ``retry_rate``: of the work
    items' failed attempts (failures and expiries), the share sent back to
    pending (None: none failed). ``recovery_success_rate``: of the recovery
    attempts finished, the share that succeeded (None: none finished).
    ``projection_lag``: per projection, events behind the head."""

    since: int
    until: int
    head: int
    events: int
    commands_per_minute: dict[str, float]
    lease_expiries: int
    work_claims: int
    retry_rate: float | None
    recovery_attempts: int
    recovery_success_rate: float | None
    projection_lag: dict[str, int]


def percentile(ordered: builtins.list[float], q: float) -> float:
    """The q-th percentile (0–100) of sorted values, interpolated linearly."""
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float]) -> Summary:
    ordered = sorted(values)
    if not ordered:
        return Summary(count=0, sum=0.0, min=None, max=None, mean=None, p50=None, p95=None, p99=None)
    total = math.fsum(ordered)
    return Summary(count=len(ordered), sum=total, min=ordered[0], max=ordered[-1], mean=total / len(ordered),
                   p50=percentile(ordered, 50), p95=percentile(ordered, 95), p99=percentile(ordered, 99))


def _check_tags(where: str, tags: Any, name: str = "tags") -> dict[str, str] | None:
    if tags is None:
        return None
    if type(tags) is not dict:
        raise InvalidArgument(f"{where} refused: {name} must be a dict of str to str, got {tags!r:.60}")
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{where} refused: {name} has {len(tags)} entries; at most {MAX_TAGS}")
    for k, v in tags.items():
        check_text(where, f"a key of {name}", k)
        check_text(where, f"{name}[{k!r}]", v)
    return dict(tags)


def _check_value(where: str, value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > 1.7e308:
        raise InvalidArgument(f"{where} refused: value must be a finite int or float, got {value!r:.60}")
    return float(value)


def decide_record(_: None, a: Args, now: int) -> Decision:
    by_name: dict[str, builtins.list[MetricRecorded]] = {}
    for name, value, tags in a["samples"]:
        by_name.setdefault(name, []).append(MetricRecorded(name=name, value=value, tags=tags))
    return Decision(emits=tuple(Emit(f"metric:{name}", tuple(events)) for name, events in by_name.items()))


def _positions(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> builtins.list[int]:
    order: dict[str, builtins.list[int]] = {}
    for r in records:
        order.setdefault(r.stream, []).append(r.position)
    out: builtins.list[int] = []
    seen: dict[str, int] = {}
    for name, _, _ in a["samples"]:  # in the order given
        i = seen.get(name, 0)
        out.append(order[f"metric:{name}"][i])
        seen[name] = i + 1
    return out


RECORD: Spec[None, builtins.list[int]] = Spec("metrics.record", lambda conn, a, now: None, decide_record, _positions)


class Metrics:
    """``k.metrics``: recorded samples, their aggregates, and the kernel's health."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def record(self, name: str, value: float, *, tags: Mapping[str, str] | None = None, actor: str | None = None,
               command_id: str | None = None) -> int:
        """Record one sample of ``name`` now; returns its position."""
        return self.record_many([(name, value, tags)], actor=actor, command_id=command_id)[0]

    def record_many(self, samples: Iterable[tuple[str, float, Mapping[str, str] | None]], *,
                    actor: str | None = None, command_id: str | None = None) -> builtins.list[int]:
        """Record (name, value, tags) samples in one command; their positions, in order."""
        where = "metrics.record"
        checked = []
        if isinstance(samples, str | bytes) or not isinstance(samples, Iterable):
            raise InvalidArgument(f"{where} refused: samples must be a list of (name, value, tags) tuples, "
                                  f"got {type(samples).__name__}")
        for i, sample in enumerate(samples):
            if not isinstance(sample, tuple) or len(sample) != 3:
                raise InvalidArgument(f"{where} refused: sample {i} must be a (name, value, tags) tuple, "
                                      f"got {sample!r:.60}")
            name, value, tags = sample
            check_text(where, "name", name)
            checked.append([name, _check_value(where, value), _check_tags(where, tags)])
        if not checked:
            raise InvalidArgument(f"{where} refused: no samples given")
        return run(self._ctx, RECORD, {"samples": checked}, command_id=command_id, actor=actor)

    def _range(self, where: str, since: int | None, until: int | None) -> tuple[int, int]:
        lo = 0 if since is None else check_int(where, "since", since, minimum=0)
        hi = INT64_MAX if until is None else check_int(where, "until", until, minimum=0)
        return lo, hi

    def aggregate(self, name: str, *, since: int | None = None, until: int | None = None,
                  tags: Mapping[str, str] | None = None, by: str | None = None) -> Summary | dict[str, Summary]:
        """count, sum, min, max, mean, p50, p95, p99 of the samples of
        ``name`` recorded in [since, until] (ms; None: unbounded) whose tags
        include ``tags``; with ``by`` a tag key, one Summary per value of that
        tag (samples without it are left out)."""
        where = "metrics.aggregate"
        check_text(where, "name", name)
        lo, hi = self._range(where, since, until)
        want = _check_tags(where, tags)
        check_optional_text(where, "by", by)
        with self._ctx.db.read(where) as conn:
            rows = builtins.list(metrics.samples(conn, name, lo, hi, want is not None or by is not None))
        rows = [r for r in rows if _matches(r[2], want)]
        if by is None:
            return summarize(v for _, v, _ in rows)
        groups: dict[str, builtins.list[float]] = {}
        for _, v, t in rows:
            if t is not None and by in t:
                groups.setdefault(t[by], []).append(v)
        return {k: summarize(vs) for k, vs in sorted(groups.items())}

    def windows(self, name: str, *, window_ms: int, since: int, until: int | None = None,
                tags: Mapping[str, str] | None = None) -> builtins.list[Window]:
        """The aggregate per window of ``window_ms`` from ``since`` (each
        [start, start + window_ms)), up to ``until`` (None: the last sample);
        windows without samples are included (count 0)."""
        where = "metrics.windows"
        check_text(where, "name", name)
        check_int(where, "window_ms", window_ms, minimum=1)
        lo, hi = self._range(where, since, until)
        want = _check_tags(where, tags)
        with self._ctx.db.read(where) as conn:
            rows = [r for r in metrics.samples(conn, name, lo, hi, want is not None) if _matches(r[2], want)]
        if until is None:
            hi = rows[-1][0] if rows else lo
        buckets: dict[int, builtins.list[float]] = {}
        for at, v, _ in rows:
            buckets.setdefault((at - lo) // window_ms, []).append(v)
        count = (hi - lo) // window_ms + 1
        if count > 100_000:
            raise InvalidArgument(f"{where} refused: {count} windows of {window_ms} ms; at most 100000")
        return [Window(start=lo + i * window_ms, summary=summarize(buckets.get(i, ()))) for i in range(count)]

    def names(self) -> builtins.list[str]:
        """Every metric name with samples."""
        with self._ctx.db.read("metrics.names") as conn:
            return metrics.names(conn)

    def health(self, *, window_ms: int = 60 * MINUTE_MS, now: int | None = None) -> Health:
        """The kernel's health over the ``window_ms`` up to ``now`` (default:
        the kernel's clock, or the head's time if later, as a command would
        stamp it), read from the journal (see :class:`Health`)."""
        where = "metrics.health"
        check_int(where, "window_ms", window_ms, minimum=1)
        if now is not None:
            check_int(where, "now", now, minimum=0)
        with self._ctx.db.read(where) as conn:
            head, _, last_at = journal.head_row(conn)
            # now as a command would stamp it: never before the head's time
            until = max(self._ctx.now(), last_at) if now is None else now
            since = max(0, until - window_ms)
            head = journal.head(conn)[0]
            lags = {name: head - position for name, (_, position) in
                    sorted(self._ctx.projector.positions(conn).items())}
            first = _first_at(conn, since, head)
            return _health(conn, first, head, since, until, window_ms, lags)


def _matches(tags: dict[str, str] | None, want: dict[str, str] | None) -> bool:
    return want is None or (tags is not None and all(tags.get(k) == v for k, v in want.items()))


def _first_at(conn: apsw.Connection, since: int, head: int) -> int:
    """The first position recorded at or after ``since``: a binary search, since
    times never go backwards along the journal (head + 1: none)."""
    lo, hi = head + 1, head + 1
    for (first,) in conn.execute("SELECT min(position) FROM journal"):
        lo = first or lo
    while lo < hi:
        mid = (lo + hi) // 2
        at = conn.execute("SELECT recorded_at FROM journal WHERE position = ?", (mid,)).fetchone()
        if at is not None and at[0] >= since:
            hi = mid
        else:
            lo = mid + 1
    return lo


_EXPIRED = WorkItemLeaseExpired.__event_type__
_FAILED = WorkItemFailed.__event_type__
_CLAIMED = WorkItemClaimed.__event_type__
_FINISHED = RecoveryAttemptFinished.__event_type__


def _health(conn: apsw.Connection, first: int, head: int, since: int, until: int, window_ms: int,
            lags: dict[str, int]) -> Health:
    commands: dict[str, int] = {}
    events = expiries = claims = failed_attempts = retried = finished = succeeded = 0
    rest = 0  # events still to come of the command being read
    current: tuple[str, int] | None = None
    for type_, meta, at, data in conn.execute(
            "SELECT type, meta, recorded_at, CASE WHEN type IN (?, ?, ?) THEN data END FROM journal "
            "WHERE position >= ? AND position <= ? ORDER BY position",
            (_EXPIRED, _FAILED, _FINISHED, first, head)):
        if at > until:
            break
        events += 1
        if rest and (meta, at) == current:  # (a command's events share its metadata and time)
            rest -= 1
        elif meta is not None:
            current, rest = (meta, at), 0
            decoded = codec.decode_json(meta)
            name = decoded.get("command") if type(decoded) is dict else None
            if type(name) is str:
                commands[name] = commands.get(name, 0) + 1
                n = decoded.get("events")
                rest = n - 1 if type(n) is int and n > 1 else 0
        if type_ == _CLAIMED:
            claims += 1
        elif type_ in (_EXPIRED, _FAILED):
            expiries += type_ == _EXPIRED
            failed_attempts += 1
            retried += bool(codec.decode_json(data).get("retry"))
        elif type_ == _FINISHED:
            finished += 1
            succeeded += bool(codec.decode_json(data).get("success"))
    minutes = window_ms / MINUTE_MS
    return Health(
        since=since, until=until, head=head, events=events,
        commands_per_minute={k: n / minutes for k, n in sorted(commands.items())},
        lease_expiries=expiries, work_claims=claims,
        retry_rate=retried / failed_attempts if failed_attempts else None,
        recovery_attempts=finished, recovery_success_rate=succeeded / finished if finished else None,
        projection_lag=lags,
    )
