"""Simulated power loss. A workload runs on a VFS that records every write,
truncate and sync. Crash images are built from that record: what each
file's last sync made durable, plus the later writes dropped, kept, or torn
at sector size. Each image is opened as a machine would find it after the
cut.

With synchronous=FULL: no acknowledged command is lost, nothing is corrupt.
With synchronous=NORMAL: nothing is corrupt, what survives is a prefix of
the commands in commit order, and everything acknowledged before the last
WAL checkpoint survives (the documented loss window is the commits since).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest

import eventkernel
from eventkernel.journal import command_event_id

from faults import IoLog, RecordingVFS, crash_image, write_image
from stress import scale
from support import live_tables, rebuilt_tables

LOG = IoLog()
VFS = RecordingVFS("eventkernel-recording", LOG)
COMMANDS = 24


def _workload(path: str, synchronous: str) -> None:
    """Commands with ids c0, c1, …; a mark after each acknowledgement, and
    after a WAL checkpoint half way."""
    LOG.ops.clear()
    with eventkernel.open(path, synchronous=synchronous, vfs="eventkernel-recording") as k:  # type: ignore[arg-type]
        for i in range(COMMANDS):
            if i % 4 == 3:
                with k.transaction():
                    k.work.enqueue(f"task-{i}", {"n": i}, command_id=f"c{i}")
                    k.memory.put("user:1", f"k{i}", {"v": i}, command_id=f"c{i}-memory")
            else:
                k.work.enqueue(f"task-{i}", {"n": i, "pad": "p" * (i * 200)}, command_id=f"c{i}")
            LOG.mark(("acked", i))
            if i == COMMANDS // 2:
                k.checkpoint("full")
                LOG.mark(("checkpointed", i))


def _crash_points(rng: random.Random) -> list[int]:
    ops = LOG.ops
    syncs = [i for i, op in enumerate(ops) if op[0] == "sync"]
    # Just before and just after every sync, plus a sample of other moments.
    points = {p for s in syncs for p in (s, s + 1)}
    points |= set(rng.sample(range(1, len(ops) + 1), min(len(ops), scale(40, 400))))
    return sorted(points)


def _check(image_path: str, acked: list[int], checkpointed: int | None, synchronous: str) -> int:
    with eventkernel.open(image_path) as k:
        report = k.verify()
        assert report.ok, report.problems
        assert live_tables(k) == rebuilt_tables(k)
        present = [
            k._db.conn.execute("SELECT 1 FROM journal WHERE event_id = ?", (command_event_id(f"c{i}", 0),)).fetchone()
            is not None
            for i in range(COMMANDS)
        ]
    survived = sum(present)
    assert present == [True] * survived + [False] * (COMMANDS - survived), f"not a prefix: {present}"
    if synchronous == "full":
        assert survived >= len(acked), f"acknowledged commands lost: {len(acked)} acked, {survived} present"
    elif checkpointed is not None:
        assert survived >= checkpointed + 1, "a command acknowledged before the checkpoint was lost"
    return survived


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_power_loss_at_any_moment_loses_no_acknowledged_commit(tmp_path, synchronous):
    rng = random.Random(synchronous)
    path = str(tmp_path / "live.db")
    _workload(path, synchronous)
    assert any(op[0] == "sync" for op in LOG.ops)
    images = 0
    lost_in_window = 0
    for point in _crash_points(rng):
        acked = [op[1][1] for op in LOG.ops[:point] if op[0] == "mark" and op[1][0] == "acked"]
        done = [op[1][1] for op in LOG.ops[:point] if op[0] == "mark" and op[1][0] == "checkpointed"]
        for mode in ("drop", "keep", "torn"):
            files = crash_image(LOG, point, mode, rng)
            with tempfile.TemporaryDirectory(dir=tmp_path) as where:
                target = str(Path(where) / "after-the-cut.db")
                write_image(files, path, target)
                survived = _check(target, acked, done[-1] if done else None, synchronous)
                lost_in_window += survived < len(acked)
            images += 1
    assert images >= 3 * scale(40, 400)
    ops = sum(1 for op in LOG.ops if op[0] != "mark")
    print(f"\npower loss [{synchronous}]: {images} crash images from {ops} recorded I/O operations, 0 corrupt, "
          f"{lost_in_window} images missing acknowledged commits after the last checkpoint (the NORMAL window), "
          "none missing one before it")


def test_the_model_loses_unsynced_commits(tmp_path):
    """The crash images are not vacuous: with NORMAL, dropping the writes
    after the last sync loses commands the process had acknowledged."""
    path = str(tmp_path / "live.db")
    _workload(path, "normal")
    # The cut comes after the last acknowledgement, before close() checkpoints.
    last_ack = max(i for i, op in enumerate(LOG.ops) if op[0] == "mark")
    files = crash_image(LOG, last_ack + 1, "drop", random.Random(0))
    target = str(tmp_path / "after.db")
    write_image(files, path, target)
    survived = _check(target, list(range(COMMANDS)), COMMANDS // 2, "normal")
    assert COMMANDS // 2 < survived < COMMANDS
