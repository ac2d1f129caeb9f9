"""Writers appending to one file are SIGKILLed at random moments, with
synchronous=FULL and NORMAL, one writer and several: afterwards every
acknowledged command is present (checked by its event id), verify() is ok,
and the projections equal a rebuild. A process crash loses nothing in
either mode; NORMAL only risks the last commits on power loss.

CI runs 4 trials per configuration (112 kills); EVENTKERNEL_STRESS=1 runs
32 (896 kills), and EVENTKERNEL_CRASH_TRIALS=N sets the count. Two NORMAL
configurations checkpoint every 40 pages, so that kills land while the
checkpointer's thread copies the WAL back.
"""

from __future__ import annotations

import glob
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
# (synchronous, writer processes, threads per writer sharing one kernel: group commits, the WAL's bound
# before a checkpoint: 0 for the kernel's; 40 pages keeps checkpoints running, under NORMAL on their thread)
CONFIGS = [("full", 1, 1, 0), ("normal", 1, 1, 0), ("full", 3, 1, 0), ("normal", 3, 1, 0), ("full", 1, 4, 0),
           ("full", 2, 4, 0), ("normal", 1, 1, 40), ("normal", 2, 4, 40)]


def _collect(stream, acked: list[str]) -> None:
    for line in stream:
        if line.endswith("\n"):  # (a line cut short by the kill acknowledged nothing)
            acked.extend(line.split())


@pytest.mark.parametrize(("synchronous", "writers", "threads", "wal_pages"), CONFIGS)
@pytest.mark.parametrize("trial", range(TRIALS))
def test_acknowledged_commands_survive_sigkill(tmp_path, child_env, trial, synchronous, writers, threads, wal_pages):
    rng = random.Random(f"{trial}-{synchronous}-{writers}-{threads}-{wal_pages}")
    path = str(tmp_path / "crash.db")
    acked: list[str] = []
    kills = 0
    for round_ in range(ROUNDS):
        children, readers = [], []
        for w in range(writers):
            child = spawn(child_env, "appender", path, synchronous, f"r{round_}w{w}-", str(threads), str(wal_pages))
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


SUBJECTS = 6


@pytest.mark.parametrize("trial", range(max(TRIALS // 2, 2)))
def test_an_erasure_killed_at_any_moment_is_whole_or_absent(tmp_path, child_env, trial):
    """A process erasing subject after subject is SIGKILLed: every subject is
    erased whole or not at all, the file is sound, and erasing again leaves
    no byte of any subject in it."""
    rng = random.Random(f"erase-{trial}")
    path = str(tmp_path / "erase.db")
    with eventkernel.open(path) as k, k.transaction():
        for i in range(2000):
            k.work.enqueue("filler", {"n": i, "text": "x" * 200})
        for i in range(SUBJECTS):
            for j in range(3):
                k.memory.put(f"user:{i}", f"k{j}", f"SECRET-{i}-{j}-" + "s" * 100)
    child = spawn(child_env, "eraser", path, str(SUBJECTS))
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    time.sleep(rng.uniform(0.005, 0.3))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    acked = {int(line.split()[1]) for line in out.split("\n")[:-1] if line.startswith("erased")}
    print(f"killed after {len(acked)} of {SUBJECTS} erasures")
    with eventkernel.open(path) as k:
        assert k.verify().ok
        assert live_tables(k) == rebuilt_tables(k)
        for i in range(SUBJECTS):
            left = len(k.memory.list(f"user:{i}"))
            erased = k._db.conn.execute(
                "SELECT count(*) FROM erased e JOIN journal j ON j.position = e.position WHERE j.stream LIKE ?",
                (f"memory:user:{i}/%",)).fetchone()[0]
            assert (left, erased) in ((3, 0), (0, 3)), f"subject {i}: {left} memories left, {erased} rows erased"
            assert i not in acked or erased == 3, f"subject {i}: acknowledged but not erased"
        for i in range(SUBJECTS):
            k.erase(stream_prefix=f"memory:user:{i}/", reason="finish")
    for name in glob.glob(path + "*"):
        with open(name, "rb") as f:
            assert b"SECRET-" not in f.read(), name


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_compaction_killed_at_any_moment_leaves_the_old_file_or_the_new_one(tmp_path, child_env, trial):
    """A compacting process is SIGKILLed: the live file is either as it was
    (every event there) or compacted (the archive complete, verified, its
    head hash the recorded base's); never a file without its events or an
    archive missing some. Compacting again finishes the job."""
    rng = random.Random(f"compact-{trial}")
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "archive.db")
    with eventkernel.open(path, snapshot_every=0) as k:
        with k.transaction():
            for i in range(3000):
                k.work.enqueue(f"t{i % 7}", {"n": i, "text": "x" * 100})
        for _ in range(100):
            item = k.work.claim("w", lease_ms=60_000)
            k.work.complete(item.work_item_id, "w", item.token)
        rows = [(r.position, r.hash) for r in k.read()]
        live = live_tables(k)
    before = len(rows) // 2
    child = spawn(child_env, "compactor", path, archive, str(before))
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    # A compaction of this file takes about half a second, the archive its first tenth or so.
    time.sleep(rng.uniform(0.0, 0.08) if trial % 2 else rng.uniform(0.0, 0.6))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    with eventkernel.open(path, snapshot_every=0) as k:
        assert k.verify().ok and live_tables(k) == live == rebuilt_tables(k)
        base = k._db.conn.execute("SELECT position, hash FROM journal_base").fetchall()
        present = [(r.position, r.hash) for r in k.read()]
        if base:
            assert base == [(before - 1, rows[before - 2][1])] and present == rows[before - 1:]
        else:
            assert "compacted" not in out and present == rows
        found = os.path.exists(archive)
        if found:  # linked into place only once complete
            with eventkernel.open(archive, read_only=True) as a:
                report = a.verify()
                assert report.ok and [(r.position, r.hash) for r in a.read()] == rows[:before - 1]
        assert not base or os.path.exists(archive), "compacted without its archive"
        if not base:
            k.compact(before=before, archive=archive)  # again: uses an archive already written, or writes it
            assert k.verify().ok and live_tables(k) == live
            assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []  # what the kill left is gone
    print(f"killed {'after' if base else 'before'} the compaction committed; archive {'present' if found else 'absent'}")
