"""Events of checkpoints (stream ``checkpoint:<task_id>``; version = sequence number)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class CheckpointRecorded(KernelEvent, tag="checkpoint.recorded"):
    """A snapshot of a task's progress; its stream version is its sequence number."""

    checkpoint_id: str
    task_id: str
    checkpoint_type: str
    snapshot: Any = None
    work_item_id: str | None = None
    session_id: str | None = None
