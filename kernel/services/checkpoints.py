"""Checkpoints: append-only snapshots of a task's progress,
numbered 1, 2, 3 … per task, and resume = the latest one plus every event of
the task after it."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel import journal
from eventkernel.errors import InvalidArgument, NotFound
from eventkernel.events.checkpoints import CheckpointRecorded
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import checkpoints
from eventkernel.projections.checkpoints import TYPES, Checkpoint
from eventkernel.services.base import Context
from eventkernel.services.runner import Args, Decision, Reads, Spec, emit, run
from eventkernel.validate import check_int, check_json_value, check_limit, check_optional_text, check_text


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """Where to pick a task up: its latest checkpoint (None if it has none)
    and every event correlated to the task after it, in order."""

    checkpoint: Checkpoint | None
    events: list[Recorded]


def decide_record(state: tuple[str, bool], a: Args, now: int) -> Decision:
    """``state``: (the checkpoint's id, whether one with that id exists). The
    sequence number is the stream's next version."""
    cp_id, exists = state
    if exists:
        raise InvalidArgument(f"checkpoints.record refused: checkpoint_id {cp_id!r} already exists")
    return emit(
        f"checkpoint:{a['task_id']}",
        CheckpointRecorded(checkpoint_id=cp_id, task_id=a["task_id"], checkpoint_type=a["checkpoint_type"],
                           snapshot=a["snapshot"], work_item_id=a["work_item_id"], session_id=a["session_id"]),
        correlation_id=a["task_id"],
    )


def _load_record(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool]:
    given = a["checkpoint_id"]
    if given is None:
        return new_id("cp", now), False
    return given, checkpoints.get(conn, given) is not None


def _recorded(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Checkpoint:
    # A checkpoint never changes once recorded: the live row is the first answer.
    found = checkpoints.get(reads.live, records[0].event.checkpoint_id)  # type: ignore[attr-defined]
    assert found is not None
    return found


RECORD: Spec[tuple[str, bool], Checkpoint] = Spec("checkpoints.record", _load_record, decide_record, _recorded)


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
        actor: str | None = None,
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
        return run(self._ctx, RECORD, args, command_id=command_id, actor=actor)

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
