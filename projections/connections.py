"""Projection ``connections``: every tracked connection and its state."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.connections import ConnectionClosed, ConnectionHeartbeat, ConnectionOpened
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Target, columns, dump, loader, where_all

NAME = "connections"
VERSION = 1
HANDLES = frozenset(
    c.__event_type__ for c in (ConnectionOpened, ConnectionHeartbeat, ConnectionClosed)
) | {retention.FORGOTTEN}


class Connection(msgspec.Struct, frozen=True):
    connection_id: str
    client_id: str
    user_id: str | None
    connection_type: str
    is_active: bool
    metadata: dict[str, Any] | None
    created_at: int
    updated_at: int
    last_heartbeat_at: int
    closed_at: int | None
    close_reason: str | None
    position: int


_COLS = columns(Connection)
_load = loader(Connection, json=["metadata"], flags=["is_active"])


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if retention.forget(conn, event, NAME, "connection_id"):
        return
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, ConnectionOpened):
        conn.execute(
            f"INSERT INTO connections ({_COLS}) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, NULL, NULL, ?)",
            (event.connection_id, event.client_id, event.user_id, event.connection_type, dump(event.metadata),
             at, at, at, pos),
        )
    elif isinstance(event, ConnectionHeartbeat):
        if event.metadata is None:
            conn.execute("UPDATE connections SET last_heartbeat_at = ?, updated_at = ?, position = ? "
                         "WHERE connection_id = ?", (at, at, pos, event.connection_id))
        else:
            conn.execute("UPDATE connections SET last_heartbeat_at = ?, updated_at = ?, position = ?, metadata = ? "
                         "WHERE connection_id = ?", (at, at, pos, dump(event.metadata), event.connection_id))
    elif isinstance(event, ConnectionClosed):
        conn.execute("UPDATE connections SET is_active = 0, closed_at = ?, close_reason = ?, updated_at = ?, "
                     "position = ? WHERE connection_id = ?", (at, event.reason, at, pos, event.connection_id))


# --- queries ----------------------------------------------------------------------


def get(conn: apsw.Connection, connection_id: str) -> Connection | None:
    row = conn.execute(f"SELECT {_COLS} FROM connections WHERE connection_id = ?", (connection_id,)).fetchone()
    return None if row is None else _load(row)


def list(
    conn: apsw.Connection, *, active: bool | None = None, client_id: str | None = None, user_id: str | None = None,
    limit: int = -1, after: str | None = None,
) -> builtins.list[Connection]:
    """By connection id; filtered (every filter's column leads an index)."""
    where, args = where_all(("client_id = ?", client_id), ("user_id = ?", user_id),
                            ("is_active = ?", None if active is None else int(active)),
                            ("connection_id > ?", after))
    return [_load(r) for r in conn.execute(
        f"SELECT {_COLS} FROM connections{where} ORDER BY connection_id LIMIT ?", (*args, limit))]


def stale(conn: apsw.Connection, cutoff: int) -> builtins.list[str]:
    """Active connections whose last heartbeat is at or before ``cutoff``."""
    return [c for (c,) in conn.execute(
        "SELECT connection_id FROM connections WHERE is_active = 1 AND last_heartbeat_at <= ? "
        "ORDER BY last_heartbeat_at, connection_id", (cutoff,))]
