"""Projection ``idempotency_keys``: the latest generation of each key."""

from __future__ import annotations

from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.idempotency import IdempotencyKeyCompleted, IdempotencyKeyFailed, IdempotencyKeyStarted
from eventkernel.journal import Recorded
from eventkernel.projections import retention
from eventkernel.projections.rows import Target, columns, dump, loader, placeholders

NAME = "idempotency_keys"
VERSION = 1
HANDLES = frozenset(
    c.__event_type__ for c in (IdempotencyKeyStarted, IdempotencyKeyCompleted, IdempotencyKeyFailed)
) | {retention.FORGOTTEN}


class IdempotencyKey(msgspec.Struct, frozen=True):
    key: str
    request_hash: str
    task_id: str | None
    status: str  # pending | completed | failed
    response: Any
    error: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    position: int


_COLS = columns(IdempotencyKey)
_load = loader(IdempotencyKey, json=["response"])


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if retention.forget(conn, event, NAME, "key"):
        return
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, IdempotencyKeyStarted):
        conn.execute(
            f"INSERT OR REPLACE INTO idempotency_keys ({_COLS}) VALUES ({placeholders(IdempotencyKey)})",
            (event.key, event.request_hash, event.task_id, "pending", None, None, at, at, event.expires_at, pos),
        )
    elif isinstance(event, IdempotencyKeyCompleted):
        conn.execute(
            "UPDATE idempotency_keys SET status = 'completed', response = ?, updated_at = ?, position = ? WHERE key = ?",
            (dump(event.response), at, pos, event.key),
        )
    elif isinstance(event, IdempotencyKeyFailed):
        conn.execute(
            "UPDATE idempotency_keys SET status = 'failed', error = ?, updated_at = ?, position = ? WHERE key = ?",
            (event.error, at, pos, event.key),
        )


def get(conn: apsw.Connection, key: str) -> IdempotencyKey | None:
    row = conn.execute(f"SELECT {_COLS} FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
    return None if row is None else _load(row)
