"""Writers appending to one file are SIGKILLed at random moments, with
synchronous=FULL and NORMAL, one writer and several: afterwards every
acknowledged command is present (checked by its event id), verify() is ok,
and the projections equal a rebuild. A process crash loses nothing in
either mode; NORMAL only risks the last commits on power loss.

CI runs 4 trials per configuration (64 kills); EVENTKERNEL_STRESS=1 runs
32 (512 kills), and EVENTKERNEL_CRASH_TRIALS=N sets the count.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from conftest import spawn

import eventkernel
from eventkernel.journal import command_event_id

from support import live_tables, rebuilt_tables

STRESS = os.environ.get("EVENTKERNEL_STRESS", "") not in ("", "0")
TRIALS = int(os.environ.get("EVENTKERNEL_CRASH_TRIALS", "32" if STRESS else "4"))
ROUNDS = 2  # the second round appends to a file that was killed once
# (synchronous, writer processes, threads per writer sharing one kernel: group commits)
CONFIGS = [("full", 1, 1), ("normal", 1, 1), ("full", 3, 1), ("normal", 3, 1), ("full", 1, 4), ("full", 2, 4)]


def _collect(stream, acked: list[str]) -> None:
    for line in stream:
        acked.extend(line.split())


@pytest.mark.parametrize(("synchronous", "writers", "threads"), CONFIGS)
@pytest.mark.parametrize("trial", range(TRIALS))
def test_acknowledged_commands_survive_sigkill(tmp_path, child_env, trial, synchronous, writers, threads):
    rng = random.Random(f"{trial}-{synchronous}-{writers}-{threads}")
    path = str(tmp_path / "crash.db")
    acked: list[str] = []
    kills = 0
    for round_ in range(ROUNDS):
        children, readers = [], []
        for w in range(writers):
            child = spawn(child_env, "appender", path, synchronous, f"r{round_}w{w}-", str(threads))
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            reader = threading.Thread(target=_collect, args=(child.stdout, acked))
            reader.start()
            children.append(child)
            readers.append(reader)
        time.sleep(rng.uniform(0.02, 0.4))
        for child in children:
            child.send_signal(signal.SIGKILL)
            kills += 1
        for child, reader in zip(children, readers, strict=True):
            child.wait()
            reader.join()
            child.stdout.close()
            child.stderr.close()
    assert kills == ROUNDS * writers
    assert acked, "the writers acknowledged nothing before they were killed"
    with eventkernel.open(path) as k:
        present = {r.event_id for r in k.read()}
        missing = [c for c in acked if command_event_id(c, 0) not in present]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged commands lost, e.g. {missing[:5]}"
        report = k.verify()
        assert report.ok, report.problems
        assert live_tables(k) == rebuilt_tables(k)
        print(f"\nkill -9 [{synchronous}, {writers} writer(s), {threads} thread(s) each]: {kills} kills, {len(acked)} acknowledged commands, "
              f"0 lost, {k.head} events, verify ok")
