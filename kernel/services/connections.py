"""Connection tracking: which clients are connected, over what, since when.

A connection is opened, kept alive by heartbeats, and closed by its client
or by the reaper, which closes every active connection whose last heartbeat
is older than a timeout — as lease expiry does for work items, the time is
the reaping command's own, so a replay reaps exactly what the first run did.
"""

from __future__ import annotations

import builtins
from typing import Any

import apsw

from eventkernel.errors import InvalidArgument, NotFound, TerminalState
from eventkernel.events.connections import ConnectionClosed, ConnectionHeartbeat, ConnectionOpened
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import connections
from eventkernel.projections.connections import Connection
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import Args, Decision, Emit, Reads, Spec, emit, run, streams_of
from eventkernel.validate import check_int, check_json_dict, check_limit, check_optional_text, check_text

MAX_TIMEOUT_MS = 100 * 366 * 24 * 3600 * 1000


def stream_of(connection_id: str) -> str:
    return f"connection:{connection_id}"


def _active(where: str, row: Connection | None, connection_id: str) -> Connection:
    if row is None:
        raise NotFound(f"{where} refused: no connection {connection_id!r}")
    if not row.is_active:
        how = "timed out" if row.close_reason == "timed_out" else "was closed"
        raise TerminalState(f"{where} refused: connection {connection_id!r} {how} at {row.closed_at}; open a new one")
    return row


def decide_open(connection_id: str, a: Args, now: int) -> Decision:
    return emit(stream_of(connection_id), ConnectionOpened(
        connection_id=connection_id, client_id=a["client_id"], user_id=a["user_id"],
        connection_type=a["connection_type"], metadata=a["metadata"]))


def decide_heartbeat(row: Connection | None, a: Args, now: int) -> Decision:
    _active("connections.heartbeat", row, a["connection_id"])
    return emit(stream_of(a["connection_id"]), ConnectionHeartbeat(connection_id=a["connection_id"],
                                                                   metadata=a["metadata"]))


def decide_close(row: Connection | None, a: Args, now: int) -> Decision:
    _active("connections.close", row, a["connection_id"])
    return emit(stream_of(a["connection_id"]), ConnectionClosed(connection_id=a["connection_id"], reason="closed"))


def decide_reap(stale: builtins.list[str], a: Args, now: int) -> Decision:
    """Every active connection silent for ``timeout_ms`` or longer is closed as timed out."""
    return Decision(emits=tuple(
        Emit(stream_of(c), (ConnectionClosed(connection_id=c, reason="timed_out", timeout_ms=a["timeout_ms"]),))
        for c in stale))


def _load_row(conn: apsw.Connection, a: Args, now: int) -> Connection | None:
    return connections.get(conn, a["connection_id"])


def _row(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Connection:
    connection_id = a.get("connection_id") or records[0].stream.partition(":")[2]
    row = connections.get(reads.conn, connection_id)
    assert row is not None
    return row


def _scope(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    return [stream_of(a["connection_id"])] if "connection_id" in a else streams_of(a, records)


OPEN: Spec[str, Connection] = Spec("connections.open", lambda conn, a, now: new_id("conn", now), decide_open, _row,
                                   connections, _scope)
HEARTBEAT: Spec[Connection | None, Connection] = Spec("connections.heartbeat", _load_row, decide_heartbeat, _row,
                                                      connections, _scope)
CLOSE: Spec[Connection | None, Connection] = Spec("connections.close", _load_row, decide_close, _row, connections,
                                                  _scope)
REAP: Spec[builtins.list[str], builtins.list[str]] = Spec(
    "connections.reap", lambda conn, a, now: connections.stale(conn, now - a["timeout_ms"]), decide_reap,
    lambda reads, a, records, outcome: [r.event.connection_id for r in records],  # type: ignore[attr-defined]
)


class Connections:
    """``k.connections``: connection tracking with heartbeats and a reaper."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def open(
        self, client_id: str, *, connection_type: str, user_id: str | None = None,
        metadata: dict[str, Any] | None = None, actor: str | None = None, command_id: str | None = None,
    ) -> Connection:
        """Record a new connection of ``client_id``; its id is made here
        (``connection_id`` of the answer). Its heartbeat counts from now."""
        where = OPEN.name
        check_text(where, "client_id", client_id)
        check_text(where, "connection_type", connection_type)
        check_optional_text(where, "user_id", user_id)
        check_json_dict(where, "metadata", metadata)
        args = {"client_id": client_id, "connection_type": connection_type, "user_id": user_id, "metadata": metadata}
        return run(self._ctx, OPEN, args, command_id=command_id, actor=actor)

    def heartbeat(self, connection_id: str, *, metadata: dict[str, Any] | None = None, actor: str | None = None,
                  command_id: str | None = None) -> Connection:
        """The connection is alive now (``metadata`` replaces its metadata).
        Raises NotFound, TerminalState (closed or timed out: open a new one)."""
        where = HEARTBEAT.name
        check_text(where, "connection_id", connection_id)
        check_json_dict(where, "metadata", metadata)
        return run(self._ctx, HEARTBEAT, {"connection_id": connection_id, "metadata": metadata},
                   command_id=command_id, actor=actor)

    def close(self, connection_id: str, *, actor: str | None = None, command_id: str | None = None) -> Connection:
        """Close the connection. Raises NotFound, TerminalState (already closed)."""
        check_text(CLOSE.name, "connection_id", connection_id)
        return run(self._ctx, CLOSE, {"connection_id": connection_id}, command_id=command_id, actor=actor)

    def reap(self, *, timeout_ms: int, actor: str | None = None, command_id: str | None = None) -> builtins.list[str]:
        """The reaper: close, as timed out, every active connection whose last
        heartbeat is ``timeout_ms`` old or older, in one command. Returns their ids."""
        check_int(REAP.name, "timeout_ms", timeout_ms, minimum=0, maximum=MAX_TIMEOUT_MS)
        return run(self._ctx, REAP, {"timeout_ms": timeout_ms}, command_id=command_id, actor=actor)

    def get(self, connection_id: str) -> Connection:
        """One connection. Raises NotFound."""
        where = "connections.get"
        check_text(where, "connection_id", connection_id)
        with self._ctx.db.statement(where) as conn:
            row = connections.get(conn, connection_id)
        if row is None:
            raise NotFound(f"{where} refused: no connection {connection_id!r}")
        return row

    def list(
        self, *, active: bool | None = None, client_id: str | None = None, user_id: str | None = None,
        limit: int | None = None, after_key: str | None = None,
    ) -> builtins.list[Connection]:
        """Connections by id, filtered (``active`` True: open ones, False:
        closed ones); at most ``limit``, after the connection ``after_key``."""
        where = "connections.list"
        if active is not None and type(active) is not bool:
            raise InvalidArgument(f"{where} refused: active must be a bool or None, got {active!r:.60}")
        check_optional_text(where, "client_id", client_id)
        check_optional_text(where, "user_id", user_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda c: connections.get(conn, c), "connection",
                              lambda row: (row.connection_id,))
            return connections.list(conn, active=active, client_id=client_id, user_id=user_id,
                                    limit=-1 if limit is None else limit, after=None if after is None else after[0])
