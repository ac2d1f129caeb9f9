"""Retention: declarative policies that forget old rows of the projections,
recording what they forget as events.

A policy is a list of rules, each a named selection of rows (see
:data:`RETENTION_RULES`) and an age in days. ``k.retention.set_policies`` records the
file's policies (an event); ``k.retention.apply()`` finds the rows each rule
selects and appends one ``retention.rows_forgotten`` event per rule (naming
every key), which the owning projections fold by dropping those rows, so a
rebuild drops them again. The events that made the rows stay in the journal:
compaction or erasure removes them; until then the past (``k.at``) still
shows the rows."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from eventkernel import journal
from eventkernel.errors import InvalidArgument
from eventkernel.events.retention import Policy, RetentionPoliciesSet, RowsForgotten
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.retention import Forgotten
from eventkernel.services.base import Context
from eventkernel.services.runner import Args, Decision, Reads, Spec, emit, run
from eventkernel.validate import check_int

DAY_MS = 24 * 3600 * 1000
MAX_DAYS = 100 * 366

RETENTION_RULES: dict[str, tuple[str, str, str]] = {
    # rule: (table, key column, the rows it selects: those matching this and last changed before the cutoff)
    "recovery_attempts_succeeded": ("recovery_attempts", "attempt_id", "success = 1 AND finished_at <= ?"),
    "recovery_attempts_failed": ("recovery_attempts", "attempt_id", "success = 0 AND finished_at <= ?"),
    "failure_patterns_single": ("failure_patterns", "pattern_signature", "occurrence_count = 1 AND last_seen_at <= ?"),
    "work_items_finished": ("work_items", "work_item_id", "status IN ('completed', 'cancelled') AND updated_at <= ?"),
    "work_items_failed": ("work_items", "work_item_id", "status = 'failed' AND updated_at <= ?"),
    "sessions_archived": ("sessions", "session_id", "status = 'archived' AND updated_at <= ?"),
    "idempotency_keys_expired": ("idempotency_keys", "key", "expires_at IS NOT NULL AND expires_at <= ?"),
    "connections_closed": ("connections", "connection_id", "is_active = 0 AND updated_at <= ?"),
    "metrics_samples": ("metrics", "position", "recorded_at <= ?"),
}
"""Every rule a policy may use: the table it forgets rows of, and which rows."""
RULES = RETENTION_RULES

SEED_DEFAULTS: tuple[Policy, ...] = (
    Policy(rule="recovery_attempts_succeeded", days=90),
    Policy(rule="failure_patterns_single", days=90),
    Policy(rule="idempotency_keys_expired", days=0),
)
"""Successful recovery attempts and failure patterns seen once, after 90
days (frequent patterns and failed attempts are kept); idempotency keys once
expired."""

_CHUNK = 10_000  # keys per event


class RuleResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one rule forgot (or, in a dry run, would forget)."""

    rule: str
    table: str
    days: int
    cutoff_ms: int
    keys: list[str]


class RetentionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``apply`` did: per rule, the keys it forgot; ``position`` of the
    last event it appended (None when it appended nothing, as a dry run)."""

    dry_run: bool
    results: list[RuleResult]
    position: int | None

    @property
    def forgotten(self) -> int:
        return sum(len(r.keys) for r in self.results)


def check_policies(where: str, policies: Any) -> list[Policy]:
    """Policies given as Policy objects or as a {rule: days} mapping, checked."""
    if isinstance(policies, Mapping):
        policies = [Policy(rule=r, days=d) for r, d in policies.items()]
    if isinstance(policies, str) or not isinstance(policies, Sequence):
        raise InvalidArgument(f"{where} refused: policies must be a list of Policy or a {{rule: days}} mapping, "
                              f"got {policies!r:.60}")
    out, seen = [], set()
    for p in policies:
        if not isinstance(p, Policy):
            raise InvalidArgument(f"{where} refused: each policy must be an eventkernel.Policy, got {p!r:.60}")
        if p.rule not in RULES:
            raise InvalidArgument(f"{where} refused: no retention rule {p.rule!r}; known: {', '.join(RULES)}")
        if p.rule in seen:
            raise InvalidArgument(f"{where} refused: rule {p.rule!r} is given twice")
        check_int(where, f"days of {p.rule}", p.days, minimum=0, maximum=MAX_DAYS)
        seen.add(p.rule)
        out.append(p)
    return out


def _given(args: Args) -> builtins.list[Policy] | None:
    raw = args["policies"]
    return None if raw is None else [Policy(rule=r, days=d) for r, d in raw]


def _load_apply(conn: Any, a: Args, now: int) -> tuple[str, builtins.list[RuleResult]]:
    given = _given(a)
    chosen = retention.policies(conn) if given is None else given
    return f"retention:{new_id('ret', now)}", _select(conn, chosen, now)


def decide_apply(state: tuple[str, builtins.list[RuleResult]], a: Args, now: int) -> Decision:
    """One event per rule that selected rows (per 10,000 of them); none
    selected: nothing to record (the outcome keeps the time, for a retry)."""
    stream, results = state
    events = [
        RowsForgotten(rule=r.rule, table=r.table, keys=r.keys[i:i + _CHUNK], days=r.days, cutoff_ms=r.cutoff_ms)
        for r in results for i in range(0, len(r.keys), _CHUNK)
    ]
    return emit(stream, *events) if events else Decision(outcome=str(now))


def _applied(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> RetentionReport:
    given = _given(a)
    chosen = retention.policies(reads.conn) if given is None else given  # as of the first call
    forgot = [r for r in records if isinstance(r.event, RowsForgotten)]
    now = forgot[0].recorded_at if forgot else int(outcome or 0)
    keys: dict[str, builtins.list[str]] = {}
    for r in forgot:
        keys.setdefault(r.event.rule, []).extend(r.event.keys)  # type: ignore[attr-defined]
    return RetentionReport(dry_run=False, position=forgot[-1].position if forgot else None, results=[
        RuleResult(rule=p.rule, table=RULES[p.rule][0], days=p.days, cutoff_ms=now - p.days * DAY_MS,
                   keys=keys.get(p.rule, [])) for p in chosen
    ])


def decide_set(_: None, a: Args, now: int) -> Decision:
    return emit("retention:policies", RetentionPoliciesSet(policies=_given(a) or []))


APPLY = Spec("retention.apply", _load_apply, decide_apply, _applied, projection=retention)
SET = Spec("retention.set_policies", lambda conn, a, now: None, decide_set,
           lambda reads, a, records, outcome: retention.policies(reads.conn), projection=retention)


def _args(where: str, policies: Any) -> builtins.list[builtins.list[Any]] | None:
    return None if policies is None else [[p.rule, p.days] for p in check_policies(where, policies)]


class Retention:
    """``k.retention``: the file's retention policies, applying them, and the audit."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def set_policies(self, policies: Sequence[Policy] | Mapping[str, int], *, actor: str | None = None,
                     command_id: str | None = None) -> list[Policy]:
        """Record the file's retention policies (replacing those before; an
        empty list: none), e.g. ``{"work_items_finished": 30}`` or
        :data:`SEED_DEFAULTS`. Returns them."""
        args = {"policies": _args(SET.name, policies)}
        return run(self._ctx, SET, args, command_id=command_id, actor=actor)

    def policies(self) -> list[Policy]:
        """The file's retention policies, by rule."""
        with self._ctx.db.read("reading the retention policies") as conn:
            return retention.policies(conn)

    def log(self, *, limit: int = 100, before: int | None = None) -> list[Forgotten]:
        """What retention runs forgot, the most recent first; ``before`` a
        position (the last entry's) for the next page."""
        check_int("retention.log", "limit", limit, minimum=0)
        if before is not None:
            check_int("retention.log", "before", before, minimum=0)
        with self._ctx.db.read("reading the retention log") as conn:
            return retention.log(conn, limit=limit, before=before)

    def apply(self, *, dry_run: bool = False, policies: Sequence[Policy] | Mapping[str, int] | None = None,
              actor: str | None = None, command_id: str | None = None) -> RetentionReport:
        """Forget the rows the file's policies (or ``policies``, for this run
        only) select as of now: one ``retention.rows_forgotten`` event per
        rule (per 10,000 rows), all in one transaction; the projections drop
        the rows. A retry with ``command_id`` returns the first run's report.
        ``dry_run`` says what would be forgotten and writes nothing."""
        where = APPLY.name
        if type(dry_run) is not bool:
            raise InvalidArgument(f"{where} refused: dry_run must be a bool, got {dry_run!r:.60}")
        args = {"policies": _args(where, policies)}
        if not dry_run:
            return run(self._ctx, APPLY, args, command_id=command_id, actor=actor)
        if command_id is not None:
            raise InvalidArgument(f"{where} refused: a dry run writes nothing, so it takes no command_id")
        ctx = self._ctx
        with ctx.db.read(where) as conn:
            now = max(ctx.now(), journal.head_row(conn)[2])  # as a run would stamp it
            given = _given(args)
            chosen = retention.policies(conn) if given is None else given
            return RetentionReport(dry_run=True, results=_select(conn, chosen, now), position=None)


def _select(conn: Any, policies: builtins.list[Policy], now: int) -> builtins.list[RuleResult]:
    out = []
    for p in policies:
        table, key, condition = RULES[p.rule]
        cutoff = now - p.days * DAY_MS
        keys = sorted(str(k) for (k,) in conn.execute(  # names from RULES, never from input
            f'SELECT "{key}" FROM "{table}" WHERE {condition}', (cutoff,)))
        out.append(RuleResult(rule=p.rule, table=table, days=p.days, cutoff_ms=cutoff, keys=keys))
    return out
