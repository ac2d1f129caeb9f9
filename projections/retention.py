"""Projection ``retention``: the file's retention policies and the audit of
what each retention run forgot. The rows themselves are dropped by the
projections that own them, each folding ``retention.rows_forgotten``."""

from __future__ import annotations

import builtins

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.retention import Policy, RetentionPoliciesSet, RowsForgotten
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Target

NAME = "retention"
VERSION = 1
HANDLES = frozenset(c.__event_type__ for c in (RetentionPoliciesSet, RowsForgotten))
FORGOTTEN = RowsForgotten.__event_type__


class Forgotten(msgspec.Struct, frozen=True):
    """One entry of the audit: a rule forgot ``rows`` rows of ``table_name``."""

    position: int
    rule: str
    table_name: str
    rows: int
    days: int
    cutoff_ms: int
    applied_at: int


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, RetentionPoliciesSet):
        conn.execute("DELETE FROM retention_policies")
        for p in event.policies:
            conn.execute("INSERT INTO retention_policies (rule, days, set_at, position) VALUES (?, ?, ?, ?)",
                         (p.rule, p.days, at, pos))
    elif isinstance(event, RowsForgotten):
        conn.execute(
            "INSERT INTO retention_log (position, rule, table_name, rows, days, cutoff_ms, applied_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pos, event.rule, event.table, len(event.keys), event.days, event.cutoff_ms, at),
        )


def forget(conn: Target, event: Event, table: str, key: str, *also: str) -> bool:
    """For the projection owning ``table``: drop the rows a
    ``retention.rows_forgotten`` event names (and the rows of ``also``
    tables with the same key column). Whether the event was for ``table``."""
    if not isinstance(event, RowsForgotten) or event.table != table:
        return False
    for name in (table, *also):  # names from the projections' code, never from input
        conn.executemany(f'DELETE FROM "{name}" WHERE "{key}" = ?', ((k,) for k in event.keys))
    return True


# --- queries ----------------------------------------------------------------------


def policies(conn: apsw.Connection) -> builtins.list[Policy]:
    return [Policy(rule=r, days=d) for r, d in conn.execute("SELECT rule, days FROM retention_policies ORDER BY rule")]


def log(conn: apsw.Connection, *, limit: int = 100, before: int | None = None) -> builtins.list[Forgotten]:
    """The most recent entries of the audit first (before a position: the next page)."""
    return [Forgotten(*row) for row in conn.execute(
        "SELECT position, rule, table_name, rows, days, cutoff_ms, applied_at FROM retention_log "
        "WHERE position < ? ORDER BY position DESC LIMIT ?", ((1 << 63) - 1 if before is None else before, limit))]
