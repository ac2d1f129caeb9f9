"""Projection ``metrics``: every recorded sample, for windowed aggregates."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

import apsw

from eventkernel import codec
from eventkernel.codec import Event
from eventkernel.events.metrics import MetricRecorded
from eventkernel.events.retention import RowsForgotten
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Target, dump

NAME = "metrics"
VERSION = 1
HANDLES = frozenset({MetricRecorded.__event_type__, retention.FORGOTTEN})


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if isinstance(event, MetricRecorded):
        conn.execute("INSERT INTO metrics (position, name, value, tags, recorded_at) VALUES (?, ?, ?, ?, ?)",
                     (recorded.position, event.name, event.value, dump(event.tags), recorded.recorded_at))
    elif isinstance(event, RowsForgotten) and event.table == NAME:
        conn.executemany("DELETE FROM metrics WHERE position = ?", ((int(k),) for k in event.keys))


# --- queries ----------------------------------------------------------------------


def samples(conn: apsw.Connection, name: str, since: int, until: int,
            with_tags: bool) -> Iterator[tuple[int, float, dict[str, str] | None]]:
    """(recorded_at, value, tags) of the samples of ``name`` in [since, until], by time."""
    if not with_tags:
        for at, value in conn.execute("SELECT recorded_at, value FROM metrics WHERE name = ? AND recorded_at >= ? "
                                      "AND recorded_at <= ? ORDER BY recorded_at", (name, since, until)):
            yield at, value, None
        return
    for at, value, tags in conn.execute("SELECT recorded_at, value, tags FROM metrics WHERE name = ? AND "
                                        "recorded_at >= ? AND recorded_at <= ? ORDER BY recorded_at",
                                        (name, since, until)):
        yield at, value, None if tags is None else codec.decode_json(tags)


def names(conn: apsw.Connection) -> builtins.list[str]:
    """Every metric name with samples, in order (a skip-scan of the index)."""
    out: builtins.list[str] = []
    row = conn.execute("SELECT name FROM metrics ORDER BY name LIMIT 1").fetchone()
    while row is not None:
        out.append(row[0])
        row = conn.execute("SELECT name FROM metrics WHERE name > ? ORDER BY name LIMIT 1", (row[0],)).fetchone()
    return out
