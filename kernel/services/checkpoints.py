"""Checkpoints: append-only snapshots of a task's progress,
numbered 1, 2, 3 … per task, and resume = the latest one plus every event of
the task after it."""

from __future__ import annotations

import builtins
from typing import Any

import msgspec

from eventkernel import journal
from eventkernel.errors import InvalidArgument, NotFound
from eventkernel.events.checkpoints import CheckpointRecorded
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import checkpoints
from eventkernel.projections.checkpoints import TYPES, Checkpoint
from eventkernel.services.base import Context
from eventkernel.validate import check_int, check_json_value, check_limit, check_optional_text, check_text


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """Where to pick a task up: its latest checkpoint (None if it has none)
    and every event correlated to the task after it, in order."""

    checkpoint: Checkpoint | None
    events: list[Recorded]


class Checkpoints:
    """``k.checkpoints``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def record(
        self,
        task_id: str,
        checkpoint_type: str,
        snapshot: Any,
        *,
        work_item_id: str | None = None,
        session_id: str | None = None,
        checkpoint_id: str | None = None,
        command_id: str | None = None,
    ) -> Checkpoint:
        """Append a checkpoint; its sequence number is the next of the task.
        Raises InvalidArgument (e.g. an unknown checkpoint type)."""
        where = "checkpoints.record"
        check_text(where, "task_id", task_id)
        if checkpoint_type not in TYPES:
            raise InvalidArgument(
                f"{where} refused: checkpoint_type must be one of {', '.join(TYPES)}; got {checkpoint_type!r}"
            )
        check_json_value(where, "snapshot", snapshot)
        check_optional_text(where, "work_item_id", work_item_id)
        check_optional_text(where, "session_id", session_id)
        check_optional_text(where, "checkpoint_id", checkpoint_id)
        args = {"task_id": task_id, "checkpoint_type": checkpoint_type, "snapshot": snapshot,
                "work_item_id": work_item_id, "session_id": session_id, "checkpoint_id": checkpoint_id}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is None:
                cp_id = checkpoint_id or new_id("cp", cmd.now)
                if checkpoint_id is not None and checkpoints.get(self._ctx.db.conn, cp_id) is not None:
                    raise InvalidArgument(f"{where} refused: checkpoint_id {cp_id!r} already exists")
                cmd.emit(
                    f"checkpoint:{task_id}",
                    [CheckpointRecorded(checkpoint_id=cp_id, task_id=task_id, checkpoint_type=checkpoint_type,
                                        snapshot=snapshot, work_item_id=work_item_id, session_id=session_id)],
                    correlation_id=task_id,
                )
            else:
                cp_id = cmd.previous[0].event.checkpoint_id  # type: ignore[attr-defined]
            found = checkpoints.get(self._ctx.db.conn, cp_id)
            assert found is not None
            return found

    def latest(self, task_id: str) -> Checkpoint | None:
        """The task's newest checkpoint, or None."""
        check_text("checkpoints.latest", "task_id", task_id)
        with self._ctx.db.read("checkpoints.latest") as conn:
            return checkpoints.latest(conn, task_id)

    def list(self, task_id: str, *, after: int = 0, limit: int | None = None) -> builtins.list[Checkpoint]:
        """The task's checkpoints by sequence number; at most ``limit``,
        recorded after journal position ``after`` (the ``position`` of the
        last checkpoint of the previous page)."""
        where = "checkpoints.list"
        check_text(where, "task_id", task_id)
        check_int(where, "after", after, minimum=0)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            return checkpoints.list(conn, task_id, after=after, limit=limit)

    def get(self, checkpoint_id: str) -> Checkpoint:
        """One checkpoint by id. Raises NotFound."""
        check_text("checkpoints.get", "checkpoint_id", checkpoint_id)
        with self._ctx.db.read("checkpoints.get") as conn:
            found = checkpoints.get(conn, checkpoint_id)
        if found is None:
            raise NotFound(f"checkpoints.get refused: no checkpoint {checkpoint_id!r}")
        return found

    def resume(self, task_id: str) -> Resume:
        """The latest checkpoint and every event correlated to the task after
        it (all of them when there is no checkpoint), from one snapshot."""
        check_text("checkpoints.resume", "task_id", task_id)
        with self._ctx.db.read("checkpoints.resume") as conn:
            cp = checkpoints.latest(conn, task_id)
            after = 0 if cp is None else cp.position
            events = builtins.list(journal.read(conn, correlation_id=task_id, after=after))
        return Resume(checkpoint=cp, events=events)
