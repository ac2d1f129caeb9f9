"""Projection ``checkpoints``: snapshots of long runs, sequence-numbered per task."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.checkpoints import CheckpointRecorded
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Target, Writer, columns, dump, limit_of, loader, placeholders, raw_json

NAME = "checkpoints"
VERSION = 1
HANDLES = frozenset({CheckpointRecorded.__event_type__})

TYPES = (
    "iteration_start",
    "iteration_end",
    "tool_executed",
    "llm_response",
    "state_transition",
    "approval_point",
    "error_boundary",
    "manual",
)


class Checkpoint(msgspec.Struct, frozen=True):
    checkpoint_id: str
    task_id: str
    work_item_id: str | None
    session_id: str | None
    checkpoint_type: str
    sequence_number: int
    snapshot: Any
    created_at: int
    position: int


_COLS = columns(Checkpoint)
_load = loader(Checkpoint, json=["snapshot"])


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if isinstance(event, CheckpointRecorded):
        conn.execute(
            f"INSERT INTO checkpoints ({_COLS}) VALUES ({placeholders(Checkpoint)})",
            (event.checkpoint_id, event.task_id, event.work_item_id, event.session_id, event.checkpoint_type,
             recorded.version, dump(event.snapshot), recorded.recorded_at, recorded.position),
        )


class _RecordedRow(msgspec.Struct, gc=False):
    checkpoint_id: str
    task_id: str
    checkpoint_type: str
    snapshot: msgspec.Raw = msgspec.Raw(b"null")
    work_item_id: str | None = None
    session_id: str | None = None


_RECORDED = CheckpointRecorded.__event_type__
_recorded_row = msgspec.json.Decoder(_RecordedRow).decode


class Fold:
    """The rebuild's bulk path: the rows ``apply`` would insert, collected
    (snapshots copied as stored) and written now and
    then (:meth:`flush`) and at the end."""

    ASIDE = True  # its rows may be written by a build's second thread (projector._Aside)

    def __init__(self) -> None:
        self.rows: builtins.list[tuple[Any, ...]] = []

    def add_row(self, row: tuple[Any, ...]) -> bool:
        if row[3] != _RECORDED or row[4] != CheckpointRecorded.__event_schema__:
            return False
        e = _recorded_row(row[5])
        self.rows.append((e.checkpoint_id, e.task_id, e.work_item_id, e.session_id, e.checkpoint_type, row[2],
                          raw_json(e.snapshot), row[9], row[0]))
        return True

    def add(self, recorded: Recorded, event: Event) -> None:
        if isinstance(event, CheckpointRecorded):
            self.rows.append((event.checkpoint_id, event.task_id, event.work_item_id, event.session_id,
                              event.checkpoint_type, recorded.version, dump(event.snapshot), recorded.recorded_at,
                              recorded.position))

    def write(self, out: Writer) -> None:
        out.insert("checkpoints", _COLS, self.rows)

    def flush(self, out: Writer) -> None:
        """Once it holds ``out.held``, write the rows folded so far and
        forget them (a row is never changed once folded): a long journal's
        checkpoints are not all held in memory until the end."""
        if len(self.rows) >= out.held:
            self.write(out)
            self.rows = []


def latest(conn: apsw.Connection, task_id: str) -> Checkpoint | None:
    row = conn.execute(
        f"SELECT {_COLS} FROM checkpoints WHERE task_id = ? ORDER BY sequence_number DESC LIMIT 1", (task_id,)
    ).fetchone()
    return None if row is None else _load(row)


def list(
    conn: apsw.Connection, task_id: str, *, after: int = 0, limit: int | None = None
) -> builtins.list[Checkpoint]:
    """The task's checkpoints recorded after journal position ``after``, by sequence number."""
    return [_load(r) for r in conn.execute(
        f"SELECT {_COLS} FROM checkpoints WHERE task_id = ? AND position > ? ORDER BY sequence_number LIMIT ?",
        (task_id, after, limit_of(limit)),
    )]


def get(conn: apsw.Connection, checkpoint_id: str) -> Checkpoint | None:
    row = conn.execute(f"SELECT {_COLS} FROM checkpoints WHERE checkpoint_id = ?", (checkpoint_id,)).fetchone()
    return None if row is None else _load(row)
