"""Events of metrics (streams ``metric:<name>``)."""

from __future__ import annotations

from eventkernel.events.base import KernelEvent


class MetricRecorded(KernelEvent, tag="metric.recorded"):
    """One sample of metric ``name``, at the event's time, with its ``tags``."""

    name: str
    value: float
    tags: dict[str, str] | None = None
