"""A child appending with synchronous=FULL is SIGKILLed at random moments:
every acknowledged command is present afterwards and verify() is ok."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from conftest import spawn
from support import live_tables, rebuilt_tables

import kernel

TRIALS = int(os.environ.get("EVENTKERNEL_CRASH_TRIALS", "20"))


def _collect(stream, acked: list[str]) -> None:
    for line in stream:
        acked.extend(line.split())


@pytest.mark.parametrize("trial", range(TRIALS))
def test_acknowledged_commands_survive_sigkill(tmp_path, child_env, trial):
    rng = random.Random(trial)
    path = str(tmp_path / "crash.db")
    acked: list[str] = []
    for _round in range(2):  # the second round appends to a file that was killed once
        child = spawn(child_env, "appender", path, "full")
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        reader = threading.Thread(target=_collect, args=(child.stdout, acked))
        reader.start()
        time.sleep(rng.uniform(0.02, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join()
        child.stdout.close()
        child.stderr.close()
    assert acked, "the child acknowledged nothing before it was killed"
    with kernel.open(path) as k:
        present = {r.meta["command_id"] for r in k.read()}
        missing = [c for c in acked if c not in present]
        assert not missing, f"{len(missing)} acknowledged commands lost, e.g. {missing[:5]}"
        report = k.verify()
        assert report.ok, report.problems
        assert live_tables(k) == rebuilt_tables(k)
