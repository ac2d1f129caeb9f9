"""Events of the work queue (stream ``work_item:<id>``).

Every time that decides the future (``lease_expires_at``) is written into the
event by the command, and every other time is the event's ``recorded_at``, so
the ``work_items`` projection is a pure function of the log.
"""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class WorkItemEnqueued(KernelEvent, tag="work_item.enqueued"):
    """A new item joined the queue as pending."""

    work_item_id: str
    task_id: str
    kind: str
    priority: int
    max_retries: int
    input: Any = None


class WorkItemClaimed(KernelEvent, tag="work_item.claimed"):
    """A worker took a lease on a pending item; ``token`` fences its effects.
    ``lease_ms`` is the lease's length, which heartbeats keep by default
    (absent from events written by 0.1.0: there it is the deadline minus the
    event's ``recorded_at``)."""

    work_item_id: str
    worker: str
    token: int
    lease_expires_at: int  # ms since epoch, UTC
    lease_ms: int | None = None


class WorkItemLeaseExtended(KernelEvent, tag="work_item.lease_extended"):
    """The lease holder sent a heartbeat and moved its deadline (never
    earlier). ``lease_ms`` is set when the heartbeat asked for a new length."""

    work_item_id: str
    worker: str
    token: int
    lease_expires_at: int
    lease_ms: int | None = None


class WorkItemCompleted(KernelEvent, tag="work_item.completed"):
    """The lease holder finished the item; terminal."""

    work_item_id: str
    worker: str
    token: int
    output: Any = None


class WorkItemFailed(KernelEvent, tag="work_item.failed"):
    """The lease holder reported a failure. ``retry`` records the decision:
    back to pending (a retry is spent) or terminal ``failed``."""

    work_item_id: str
    worker: str
    token: int
    error: str
    retryable: bool
    retry: bool


class WorkItemLeaseExpired(KernelEvent, tag="work_item.lease_expired"):
    """A lease ran out before completion. Counts as a failed attempt:
    ``retry`` says whether the item went back to pending or to ``failed``."""

    work_item_id: str
    worker: str
    token: int
    lease_expires_at: int
    retry: bool


class WorkItemReleased(KernelEvent, tag="work_item.released"):
    """The lease holder gave its lease back (a worker shutting down cleanly):
    the item is pending again and no retry is spent."""

    work_item_id: str
    worker: str
    token: int


class WorkItemCancelled(KernelEvent, tag="work_item.cancelled"):
    """The item was withdrawn from pending or in-progress; terminal."""

    work_item_id: str
    reason: str
