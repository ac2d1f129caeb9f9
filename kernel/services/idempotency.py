"""Idempotency keys: the first call with a key starts it; a
repeat with the same request gets the cached outcome; a different request
under a live key is refused. An expired key may be started afresh."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import apsw
import msgspec

from eventkernel import codec
from eventkernel.errors import IdempotencyConflict, InvalidTransition, NotFound, TerminalState
from eventkernel.events.idempotency import IdempotencyKeyCompleted, IdempotencyKeyFailed, IdempotencyKeyStarted
from eventkernel.journal import Recorded
from eventkernel.projections import idempotency_keys
from eventkernel.projections.idempotency_keys import IdempotencyKey
from eventkernel.services.base import Context
from eventkernel.services.runner import Args, Decision, Reads, Spec, emit, run
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


def decide_begin(row: IdempotencyKey | None, a: Args, now: int) -> Decision:
    """A live key with the same request changes nothing (its state is the
    answer); with another request it is a conflict; an expired or unknown
    key starts afresh."""
    key, digest = a["key"], a["request_hash"]
    if row is not None and (row.expires_at is None or now < row.expires_at):
        if row.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency.begin refused: key {key!r} is held until "
                f"{'forever' if row.expires_at is None else row.expires_at} by a different request "
                f"(hash {row.request_hash[:12]}…, this one {digest[:12]}…)"
            )
        return Decision(outcome=_outcome(row).status)
    ttl_ms = a["ttl_ms"]
    return emit(
        f"idempotency:{key}",
        IdempotencyKeyStarted(key=key, request_hash=digest, task_id=a["task_id"],
                              expires_at=None if ttl_ms is None else now + ttl_ms),
        correlation_id=a["task_id"],
    )


def _pending(where: str, row: IdempotencyKey | None, key: str, now: int) -> IdempotencyKey:
    """The key's row, if it is pending and live; raises otherwise."""
    if row is None:
        raise NotFound(f"{where} refused: no idempotency key {key!r}; call begin() first")
    if row.status != "pending":
        raise TerminalState(f"{where} refused: key {key!r} is already {row.status}")
    if row.expires_at is not None and now >= row.expires_at:
        raise InvalidTransition(f"{where} refused: key {key!r} expired at {row.expires_at} (now {now}); begin() it again")
    return row


def decide_complete(row: IdempotencyKey | None, a: Args, now: int) -> Decision:
    row = _pending("idempotency.complete", row, a["key"], now)
    return emit(f"idempotency:{a['key']}", IdempotencyKeyCompleted(key=a["key"], response=a["response"]),
                correlation_id=row.task_id)


def decide_fail(row: IdempotencyKey | None, a: Args, now: int) -> Decision:
    row = _pending("idempotency.fail", row, a["key"], now)
    return emit(f"idempotency:{a['key']}", IdempotencyKeyFailed(key=a["key"], error=a["error"]),
                correlation_id=row.task_id)


def _load(conn: apsw.Connection, a: Args, now: int) -> IdempotencyKey | None:
    return idempotency_keys.get(conn, a["key"])


def _scope(a: Args, records: list[Recorded]) -> list[str]:
    return [f"idempotency:{a['key']}"]


def _begun(reads: Reads, a: Args, records: list[Recorded], outcome: str | None) -> IdempotencyResult:
    row = idempotency_keys.get(reads.conn, a["key"])
    if outcome is not None and row is not None:
        return _outcome(row)
    return IdempotencyResult(status="started", key=row)


def _key(reads: Reads, a: Args, records: list[Recorded], outcome: str | None) -> IdempotencyKey:
    row = idempotency_keys.get(reads.conn, a["key"])
    assert row is not None
    return row


BEGIN: Spec[IdempotencyKey | None, IdempotencyResult] = Spec(
    "idempotency.begin", _load, decide_begin, _begun, idempotency_keys, _scope)
COMPLETE: Spec[IdempotencyKey | None, IdempotencyKey] = Spec(
    "idempotency.complete", _load, decide_complete, _key, idempotency_keys, _scope)
FAIL: Spec[IdempotencyKey | None, IdempotencyKey] = Spec(
    "idempotency.fail", _load, decide_fail, _key, idempotency_keys, _scope)


class Idempotency:
    """``k.idempotency``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def begin(
        self, key: str, request: Any, *, ttl_ms: int | None = None, task_id: str | None = None,
        actor: str | None = None, command_id: str | None = None,
    ) -> IdempotencyResult:
        """Start the keyed request, or report what a live key already holds.
        Raises IdempotencyConflict when a live key holds a different request."""
        where = "idempotency.begin"
        check_text(where, "key", key)
        check_json_value(where, "request", request)
        if ttl_ms is not None:
            check_int(where, "ttl_ms", ttl_ms, minimum=1, maximum=MAX_TTL_MS)
        check_optional_text(where, "task_id", task_id)
        args = {"key": key, "request_hash": request_hash(request), "ttl_ms": ttl_ms, "task_id": task_id}
        return run(self._ctx, BEGIN, args, command_id=command_id, actor=actor)

    def complete(
        self, key: str, response: Any = None, *, actor: str | None = None, command_id: str | None = None
    ) -> IdempotencyKey:
        """Record the response of a pending key. Raises NotFound, TerminalState."""
        where = "idempotency.complete"
        check_text(where, "key", key)
        check_json_value(where, "response", response)
        return run(self._ctx, COMPLETE, {"key": key, "response": response}, command_id=command_id, actor=actor)

    def fail(self, key: str, error: str, *, actor: str | None = None, command_id: str | None = None) -> IdempotencyKey:
        """Record the failure of a pending key. Raises NotFound, TerminalState."""
        where = "idempotency.fail"
        check_text(where, "key", key)
        check_text(where, "error", error, max_len=65_536)
        return run(self._ctx, FAIL, {"key": key, "error": error}, command_id=command_id, actor=actor)

    def get(self, key: str) -> IdempotencyKey | None:
        """The key's latest generation, or None."""
        check_text("idempotency.get", "key", key)
        with self._ctx.db.read("idempotency.get") as conn:
            return idempotency_keys.get(conn, key)
