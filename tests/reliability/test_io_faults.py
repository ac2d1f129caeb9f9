"""I/O faults injected through an APSW VFS that inherits the platform's:
the Nth xWrite, xSync, xTruncate or xRead fails, once or from then on, with
SQLITE_IOERR_* or SQLITE_FULL. Swept over every I/O call of a command, of a
transaction of several commands, and of a rebuild.

After every fault: the error is a JournalError with a readable message; the
file is sound; the command is entirely there or entirely absent; a retry
with the same command_id settles it (exactly one copy); and the same Kernel
keeps working once the disk does.
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import apsw
import pytest

import eventkernel
from eventkernel.journal import command_event_id

from faults import Fault, FaultPlan, FaultVFS
from stress import scale
from support import live_tables, rebuilt_tables

PLAN = FaultPlan()
VFS = FaultVFS("eventkernel-faults", PLAN)

CODES = {
    "write": (apsw.SQLITE_IOERR_WRITE, apsw.SQLITE_FULL),
    "sync": (apsw.SQLITE_IOERR_FSYNC,),
    "truncate": (apsw.SQLITE_IOERR_TRUNCATE,),
    "read": (apsw.SQLITE_IOERR_READ,),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "template.db"
    with eventkernel.open(str(path)) as k:
        for i in range(20):
            k.work.enqueue(f"task-{i % 3}", {"n": i})
        item = k.work.claim("w0", lease_ms=60_000)
        assert item is not None
        k.memory.put("user:1", "prefs", {"lang": "fr"})
    return path


def _fresh_copy(template: Path, tmp_path: Path) -> str:
    path = tmp_path / "case.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(template, path)
    return str(path)


def _one_command(k: eventkernel.Kernel) -> list[str]:
    k.work.enqueue("task-f", {"payload": "x" * 3000}, command_id="faulted-1")
    return ["faulted-1"]


def _a_transaction(k: eventkernel.Kernel) -> list[str]:
    with k.transaction():
        k.work.enqueue("task-f", {"n": 1}, command_id="faulted-a")
        k.memory.put("user:1", "prefs", {"lang": "de"}, command_id="faulted-b")
        k.checkpoints.record("task-f", "manual", {"step": 3}, command_id="faulted-c")
    return ["faulted-a", "faulted-b", "faulted-c"]


def _a_group(k: eventkernel.Kernel) -> list[str]:
    """Three threads' commands in one group commit: they queue up behind a
    transaction this thread holds, and one of them leads them all when it ends."""
    ids = ["faulted-x", "faulted-y", "faulted-z"]
    outcomes: dict[str, BaseException | None] = {}

    def enqueue(command_id: str) -> None:
        try:
            k.work.enqueue("task-f", {"c": command_id}, command_id=command_id)
            outcomes[command_id] = None
        except BaseException as e:
            outcomes[command_id] = e

    threads = [threading.Thread(target=enqueue, args=(c,)) for c in ids]
    with k.transaction():
        for t in threads:
            t.start()
        while len(k._db.group.queue) < len(ids):
            time.sleep(0.001)
    for t in threads:
        t.join()
    for error in outcomes.values():
        if error is not None:
            raise error
    return ids


OPS = {"command": _one_command, "transaction": _a_transaction, "group": _a_group}


def _retry(k: eventkernel.Kernel, op_name: str) -> None:
    OPS[op_name](k)


def _present(path: str, command_ids: list[str]) -> list[bool]:
    with eventkernel.open(path) as k:
        found = []
        for c in command_ids:
            rows = k._db.conn.execute(
                "SELECT count(*) FROM journal WHERE event_id = ?", (command_event_id(c, 0),)
            ).fetchone()[0]
            assert rows <= 1, f"command {c} appended {rows} times"
            found.append(rows == 1)
        return found


def _sound(path: str) -> None:
    with eventkernel.open(path) as k:
        report = k.verify()
        assert report.ok, report.problems
        assert live_tables(k) == rebuilt_tables(k)


def _count_io(template: Path, tmp_path: Path, op, synchronous: str = "full") -> Counter[str]:
    path = _fresh_copy(template, tmp_path)
    k = eventkernel.open(path, vfs="eventkernel-faults", synchronous=synchronous)
    PLAN.arm(None)
    op(k)
    counts = Counter(PLAN.counts)
    k.close()
    return counts


def _cases(counts: Counter[str]) -> list[Fault]:
    out = []
    for op, codes in CODES.items():
        # One past the last call too: a fault that never fires must change nothing.
        for n in range(1, counts.get(op, 0) + 2):
            for code in codes:
                for persistent in (False, True):
                    out.append(Fault(op, n, code, persistent))
    return out


@pytest.mark.parametrize("synchronous", ["full", "normal"])
@pytest.mark.parametrize("op_name", ["command", "transaction", "group"])
def test_a_fault_at_any_io_call_of_a_commit_leaves_all_or_nothing(template, tmp_path, op_name, synchronous):
    op = OPS[op_name]
    counts = _count_io(template, tmp_path, op, synchronous)
    assert counts["write"] > 0
    assert counts["sync"] > 0 or synchronous == "normal"  # NORMAL syncs only at checkpoints
    cases = _cases(counts)
    outcomes: Counter[str] = Counter()
    for fault in cases:
        path = _fresh_copy(template, tmp_path)
        k = eventkernel.open(path, vfs="eventkernel-faults", synchronous=synchronous)
        head_before = k.head
        PLAN.arm(fault)
        error: BaseException | None = None
        try:
            ids = op(k)
        except BaseException as e:
            error = e
            ids = {"command": ["faulted-1"], "transaction": ["faulted-a", "faulted-b", "faulted-c"],
                   "group": ["faulted-x", "faulted-y", "faulted-z"]}[op_name]
        fired = PLAN.fired
        PLAN.arm(None)
        if error is not None:
            assert isinstance(error, eventkernel.JournalError), f"{fault}: {type(error).__name__}: {error}"
            assert str(error) and ("failed" in str(error) or "refused" in str(error)), str(error)
            assert fired, f"{fault}: an error without a fault: {error!r}"
            if fault.code == apsw.SQLITE_FULL:
                # A full disk is a JournalFull, also when COMMIT meets it (then a CommitFull:
                # both a JournalFull and a CommitOutcomeUnknown).
                assert isinstance(error, eventkernel.JournalFull), f"{fault}: {type(error).__name__}: {error}"
        present = _present(path, ids)
        assert len(set(present)) == 1, f"{fault}: half a transaction is durable: {present}"
        if error is None:
            assert all(present), f"{fault}: acknowledged but absent"
        _sound(path)
        # The same Kernel works again now that the disk does, and a retry
        # with the same command ids settles an unknown outcome.
        _retry(k, op_name)
        k.work.enqueue("after-the-fault", None)
        assert all(_present(path, ids))
        assert k.head >= head_before + 2
        k.close()
        _sound(path)
        kind = "ok" if error is None else type(error).__name__
        outcomes[f"{fault.op}:{kind}:{'durable' if present[0] else 'absent'}"] += 1
    assert sum(outcomes.values()) == len(cases)
    # Faults did fire and were refused: the sweep is not vacuous.
    assert any(":CommitOutcomeUnknown:" in o or ":JournalError:" in o for o in outcomes), outcomes
    print(f"\nI/O faults [{op_name}, {synchronous}]: {len(cases)} faults over {dict(counts)} I/O calls: {dict(sorted(outcomes.items()))}")


def test_a_fault_at_any_io_call_of_a_rebuild_leaves_the_projections_sound(template, tmp_path):
    counts = _count_io(template, tmp_path, lambda k: k.rebuild())
    cases = _cases(counts)[:: scale(3, 1)]
    failed = 0
    for fault in cases:
        path = _fresh_copy(template, tmp_path)
        k = eventkernel.open(path, vfs="eventkernel-faults")
        before = live_tables(k)
        PLAN.arm(fault)
        try:
            k.rebuild()
        except eventkernel.JournalError as e:
            assert "failed" in str(e), str(e)
            failed += 1
        PLAN.arm(None)
        assert live_tables(k) == before, f"{fault}: a failed rebuild changed the tables"
        assert k.rebuild() == k.head
        k.close()
        _sound(path)
    assert failed > 0
    print(f"\nI/O faults [rebuild]: {len(cases)} faults over {dict(counts)} I/O calls, {failed} rebuilds refused")


def test_the_kernel_reconnects_when_the_disk_fails_again_while_it_reopens(template, tmp_path):
    # The fsync of the commit fails; every read after it fails too, so the
    # reopen that follows a failed COMMIT cannot read the file.
    path = _fresh_copy(template, tmp_path)
    k = eventkernel.open(path, vfs="eventkernel-faults")
    PLAN.arm(Fault("sync", 1, apsw.SQLITE_IOERR_FSYNC, False), then=Fault("read", 1, apsw.SQLITE_IOERR_READ, True))
    with pytest.raises(eventkernel.CommitOutcomeUnknown, match="COMMIT failed"):
        k.work.enqueue("t", None, command_id="reopen-1")
    with pytest.raises(eventkernel.JournalError):
        k.work.enqueue("t", None, command_id="reopen-2")  # the disk still fails
    PLAN.arm(None)
    k.work.enqueue("t", None, command_id="reopen-1")  # settles the unknown outcome
    k.work.enqueue("t", None, command_id="reopen-2")
    assert _present(path, ["reopen-1", "reopen-2"]) == [True, True]
    k.close()
    _sound(path)


SECRET = "SECRET-6f1d2a-erase-me"


def test_a_fault_at_any_io_call_of_an_erasure_leaves_it_whole_or_absent(tmp_path):
    """An erasure is one transaction, then a rewrite of the file: a fault in
    the first leaves the subject untouched, a fault after it leaves the
    erasure recorded; either way the file is sound, and erasing again
    finishes the job, after which no byte of the subject is left."""
    template = tmp_path / "erasure-template.db"
    with eventkernel.open(str(template)) as k:
        for i in range(10):
            k.work.enqueue(f"task-{i % 3}", {"n": i})
        k.memory.put("user:1", "ssn", SECRET)
        k.memory.put("user:2", "kept", "stays")
        k.checkpoint("truncate")

    def erase(k: eventkernel.Kernel) -> None:
        k.erase(stream="memory:user:1/ssn", reason="faults")

    counts = _count_io(template, tmp_path, erase)
    cases = _cases(counts)[:: scale(5, 1)]
    outcomes: Counter[str] = Counter()
    for fault in cases:
        path = _fresh_copy(template, tmp_path)
        k = eventkernel.open(path, vfs="eventkernel-faults")
        PLAN.arm(fault)
        error: BaseException | None = None
        try:
            erase(k)
        except BaseException as e:
            error = e
        PLAN.arm(None)
        if error is not None:
            assert isinstance(error, eventkernel.JournalError), f"{fault}: {type(error).__name__}: {error}"
        # The same Kernel reads again once the disk works, and agrees with the file.
        gone = k.memory.get("user:1", "ssn") is None
        k.close()
        _sound(path)
        with eventkernel.open(path) as k:
            recorded = k._db.conn.execute("SELECT count(*) FROM erased").fetchone()[0]
            events = k._db.conn.execute(
                "SELECT count(*) FROM journal WHERE type = 'journal.payloads_erased'").fetchone()[0]
        assert (recorded, events) in ((0, 0), (1, 1)), f"{fault}: half an erasure: {recorded} rows, {events} events"
        assert gone == (recorded == 1), f"{fault}: the kernel's tables disagree with the journal"
        with eventkernel.open(path) as k:
            erase(k)  # again: records it if it was absent, or only rewrites the file
            assert k.memory.get("user:2", "kept").value == "stays"
        _sound(path)
        for name in Path(path).parent.glob(Path(path).name + "*"):
            assert SECRET.encode() not in name.read_bytes(), f"{fault}: the subject is still in {name.name}"
        outcomes[f"{fault.op}:{'ok' if error is None else type(error).__name__}:{recorded}"] += 1
    assert any(":JournalError:" in o or "Full" in o or "Unknown" in o for o in outcomes), outcomes
    print(f"\nI/O faults [erase]: {len(cases)} faults over {dict(counts)} I/O calls: {dict(sorted(outcomes.items()))}")


def test_a_fault_at_any_io_call_of_a_compaction_leaves_the_old_file_or_the_new_one(tmp_path):
    """A compaction writes the archive, commits the base in one transaction,
    then rewrites the file: a fault anywhere leaves the live file whole
    (every event there or in a complete archive) and sound; compacting
    again finishes."""
    template = tmp_path / "compaction-template.db"
    with eventkernel.open(str(template), snapshot_every=0) as k:
        for i in range(30):
            k.work.enqueue(f"task-{i % 3}", {"n": i})
        k.memory.put("user:1", "k", "v")
        k.checkpoint("truncate")
        rows = [(r.position, r.hash) for r in k.read()]
    archive_of = {}

    def compact(k: eventkernel.Kernel) -> None:
        archive = archive_of.setdefault(k.path, k.path + ".archive")
        k.compact(before=20, archive=archive)

    counts = _count_io(template, tmp_path, compact)
    # A compaction rebuilds and VACUUMs a copy of every table: thousands of I/O calls. Every 9th
    # fault (9 is prime to the faults per call, so every kind of fault is met) in CI; all under stress.
    cases = _cases(counts)[:: scale(9, 1)]
    outcomes: Counter[str] = Counter()
    for fault in cases:
        path = _fresh_copy(template, tmp_path)
        for p in glob.glob(path + ".archive*"):
            os.remove(p)
        k = eventkernel.open(path, vfs="eventkernel-faults", snapshot_every=0)
        PLAN.arm(fault)
        error: BaseException | None = None
        try:
            compact(k)
        except BaseException as e:
            error = e
        PLAN.arm(None)
        if error is not None:
            assert isinstance(error, eventkernel.JournalError), f"{fault}: {type(error).__name__}: {error}"
        k.close()
        _sound(path)
        with eventkernel.open(path, snapshot_every=0) as k:
            based = k._db.conn.execute("SELECT count(*) FROM journal_base").fetchone()[0]
            present = [(r.position, r.hash) for r in k.read()]
            assert present == (rows[19:] if based else rows), f"{fault}: events lost"
            if based:
                with eventkernel.open(path + ".archive", read_only=True) as a:
                    assert a.verify().ok and [(r.position, r.hash) for r in a.read()] == rows[:19], fault
            else:
                compact(k)  # again: finishes with the archive written, or writes it
            assert k.verify().ok
        outcomes[f"{fault.op}:{'ok' if error is None else type(error).__name__}:{based}"] += 1
    assert any(":JournalError:" in o or "Full" in o or "Unknown" in o for o in outcomes), outcomes
    print(f"\nI/O faults [compact]: {len(cases)} faults over {dict(counts)} I/O calls: {dict(sorted(outcomes.items()))}")
