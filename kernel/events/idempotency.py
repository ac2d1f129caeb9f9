"""Events of idempotency keys (stream ``idempotency:<key>``)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class IdempotencyKeyStarted(KernelEvent, tag="idempotency.started"):
    """The first call with a key (or the first after it expired) began."""

    key: str
    request_hash: str
    task_id: str | None = None
    expires_at: int | None = None  # ms since epoch, UTC; None = never


class IdempotencyKeyCompleted(KernelEvent, tag="idempotency.completed"):
    """The keyed request finished; repeats get ``response``."""

    key: str
    response: Any = None


class IdempotencyKeyFailed(KernelEvent, tag="idempotency.failed"):
    """The keyed request failed; repeats get ``error``."""

    key: str
    error: str
