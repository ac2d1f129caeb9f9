"""Idempotency keys: the first call with a key starts it; a
repeat with the same request gets the cached outcome; a different request
under a live key is refused. An expired key may be started afresh."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from eventkernel import codec
from eventkernel.errors import IdempotencyConflict, InvalidTransition, NotFound, TerminalState
from eventkernel.events.idempotency import IdempotencyKeyCompleted, IdempotencyKeyFailed, IdempotencyKeyStarted
from eventkernel.projections import idempotency_keys
from eventkernel.projections.idempotency_keys import IdempotencyKey
from eventkernel.services.base import Context
from eventkernel.validate import check_int, check_json_value, check_optional_text, check_text

MAX_TTL_MS = 100 * 366 * 24 * 3600 * 1000


class IdempotencyResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``begin`` found: ``started`` (go ahead), ``in_flight`` (another
    call is running it), ``completed`` (``response`` is the cached answer) or
    ``failed`` (``error`` says why)."""

    status: Literal["started", "in_flight", "completed", "failed"]
    response: Any = None
    error: str | None = None
    key: IdempotencyKey | None = None


def _outcome(row: IdempotencyKey) -> IdempotencyResult:
    """What ``begin`` answers for a live key holding the same request."""
    if row.status == "pending":
        return IdempotencyResult(status="in_flight", key=row)
    return IdempotencyResult(status=row.status, response=row.response, error=row.error, key=row)  # type: ignore[arg-type]


def request_hash(request: Any) -> str:
    """sha256 over the canonical JSON of ``request`` (object keys sorted)."""
    return hashlib.sha256(codec.canonical_json(request)).hexdigest()


class Idempotency:
    """``k.idempotency``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def begin(
        self, key: str, request: Any, *, ttl_ms: int | None = None, task_id: str | None = None,
        command_id: str | None = None,
    ) -> IdempotencyResult:
        """Start the keyed request, or report what a live key already holds.
        Raises IdempotencyConflict when a live key holds a different request."""
        where = "idempotency.begin"
        check_text(where, "key", key)
        check_json_value(where, "request", request)
        if ttl_ms is not None:
            check_int(where, "ttl_ms", ttl_ms, minimum=1, maximum=MAX_TTL_MS)
        check_optional_text(where, "task_id", task_id)
        digest = request_hash(request)
        args = {"key": key, "request_hash": digest, "ttl_ms": ttl_ms, "task_id": task_id}
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is not None:
                found = self._as_of(key, cmd.previous[-1].position)
                if cmd.noop and found is not None:
                    return _outcome(found)
                return IdempotencyResult(status="started", key=found)
            row = idempotency_keys.get(conn, key)
            live = row is not None and (row.expires_at is None or cmd.now < row.expires_at)
            if row is not None and live:
                if row.request_hash != digest:
                    raise IdempotencyConflict(
                        f"{where} refused: key {key!r} is held until "
                        f"{'forever' if row.expires_at is None else row.expires_at} by a different request "
                        f"(hash {row.request_hash[:12]}…, this one {digest[:12]}…)"
                    )
                result = _outcome(row)
                cmd.outcome = result.status
                return result
            cmd.emit(
                f"idempotency:{key}",
                [IdempotencyKeyStarted(key=key, request_hash=digest, task_id=task_id,
                                       expires_at=None if ttl_ms is None else cmd.now + ttl_ms)],
                correlation_id=task_id,
            )
            return IdempotencyResult(status="started", key=idempotency_keys.get(conn, key))

    def complete(self, key: str, response: Any = None, *, command_id: str | None = None) -> IdempotencyKey:
        """Record the response of a pending key. Raises NotFound, TerminalState."""
        where = "idempotency.complete"
        check_text(where, "key", key)
        check_json_value(where, "response", response)
        return self._finish(where, key, IdempotencyKeyCompleted(key=key, response=response), command_id,
                            {"key": key, "response": response})

    def fail(self, key: str, error: str, *, command_id: str | None = None) -> IdempotencyKey:
        """Record the failure of a pending key. Raises NotFound, TerminalState."""
        where = "idempotency.fail"
        check_text(where, "key", key)
        check_text(where, "error", error, max_len=65_536)
        return self._finish(where, key, IdempotencyKeyFailed(key=key, error=error), command_id,
                            {"key": key, "error": error})

    def _finish(
        self, where: str, key: str, event: IdempotencyKeyCompleted | IdempotencyKeyFailed,
        command_id: str | None, args: dict[str, Any],
    ) -> IdempotencyKey:
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                row = idempotency_keys.get(conn, key)
                if row is None:
                    raise NotFound(f"{where} refused: no idempotency key {key!r}; call begin() first")
                if row.status != "pending":
                    raise TerminalState(f"{where} refused: key {key!r} is already {row.status}")
                if row.expires_at is not None and cmd.now >= row.expires_at:
                    raise InvalidTransition(
                        f"{where} refused: key {key!r} expired at {row.expires_at} (now {cmd.now}); "
                        "begin() it again"
                    )
                cmd.emit(f"idempotency:{key}", [event], correlation_id=row.task_id)
                found = idempotency_keys.get(conn, key)
            else:
                found = self._as_of(key, cmd.previous[-1].position)
            assert found is not None
            return found

    def _as_of(self, key: str, position: int) -> IdempotencyKey | None:
        with self._ctx.folded(idempotency_keys, f"idempotency:{key}", position) as mem:
            return idempotency_keys.get(mem, key)

    def get(self, key: str) -> IdempotencyKey | None:
        """The key's latest generation, or None."""
        check_text("idempotency.get", "key", key)
        with self._ctx.db.read("idempotency.get") as conn:
            return idempotency_keys.get(conn, key)
