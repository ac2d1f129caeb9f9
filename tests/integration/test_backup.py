"""Online backup while writers write, and a restore that never loses events
nor meets a stale -wal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

import eventkernel
from eventkernel.cli import main as cli

from support import live_tables, rebuilt_tables


def tables_at(k: eventkernel.Kernel, position: int) -> dict:
    with k.at(position) as then:
        return {t: sorted(then._db.conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for names in k._projector.tables.values() for t in names}


def test_a_backup_taken_while_threads_write_is_a_consistent_verified_copy(tmp_path):
    with eventkernel.open(str(tmp_path / "live.db")) as k:
        for i in range(300):
            k.work.enqueue("seed", {"i": i})
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                k.work.enqueue("during", {"n": 1})
                k.memory.put("user:a", "k", {"n": 1})

        writers = [threading.Thread(target=write) for _ in range(2)]
        for w in writers:
            w.start()
        try:
            head = k.backup(str(tmp_path / "copy.db"))
        finally:
            stop.set()
            for w in writers:
                w.join()
        assert 300 <= head <= k.head
        with eventkernel.open(str(tmp_path / "copy.db"), read_only=True) as copy:
            assert copy.verify().ok and copy.head == head
            assert list(copy.read()) == list(k.read(limit=head))
            assert live_tables(copy) == tables_at(k, head)


def test_a_backup_never_overwrites_and_works_in_memory(tmp_path):
    (tmp_path / "taken.db").write_bytes(b"mine")
    with eventkernel.open(":memory:") as k:
        k.memory.put("user:a", "lang", "fr")
        with pytest.raises(eventkernel.InvalidArgument, match="already exists"):
            k.backup(str(tmp_path / "taken.db"))
        assert (tmp_path / "taken.db").read_bytes() == b"mine"
        with pytest.raises(eventkernel.InvalidArgument, match="does not exist"):
            k.backup(str(tmp_path / "no" / "such.db"))
        assert k.backup(str(tmp_path / "mem.db")) == 1
    with eventkernel.open(str(tmp_path / "mem.db")) as copy:
        assert copy.memory.get("user:a", "lang").value == "fr"
        assert rebuilt_tables(copy) == live_tables(copy)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def _journal(path, n: int, *, kind: str = "t") -> None:
    with eventkernel.open(str(path)) as k:
        for i in range(n):
            k.work.enqueue(kind, {"i": i})


def test_restore_puts_a_backup_in_place_of_an_older_prefix(tmp_path):
    live = tmp_path / "live.db"
    _journal(live, 5)
    shutil.copy(live, tmp_path / "older.db")  # the same history, five events
    with eventkernel.open(str(live)) as k:
        k.work.enqueue("t", {"i": 5})
        assert k.backup(str(tmp_path / "backup.db")) == 6
    assert eventkernel.restore(str(tmp_path / "backup.db"), str(tmp_path / "older.db")) == 6
    assert eventkernel.restore(str(tmp_path / "backup.db"), str(tmp_path / "new.db")) == 6
    for name in ("older.db", "new.db"):
        with eventkernel.open(str(tmp_path / name)) as k:
            assert k.verify().ok and k.head == 6


def test_restore_refuses_to_lose_or_replace_history_unless_forced(tmp_path):
    _journal(tmp_path / "a.db", 3)
    with eventkernel.open(str(tmp_path / "a.db")) as k:
        k.backup(str(tmp_path / "a3.db"))
        k.work.enqueue("t", {"i": 3})
    _journal(tmp_path / "other.db", 2, kind="other")
    (tmp_path / "junk.db").write_bytes(b"not a journal at all" * 100)
    cases = [("a.db", "holds 4 events, past the backup's 3"), ("other.db", "differs from the backup at position 2"),
             ("junk.db", "is not a journal")]
    for name, why in cases:
        before = (tmp_path / name).read_bytes()
        with pytest.raises(eventkernel.InvalidArgument, match=why):
            eventkernel.restore(str(tmp_path / "a3.db"), str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == before
    for name, _ in cases:
        assert eventkernel.restore(str(tmp_path / "a3.db"), str(tmp_path / name), force=True) == 3
        with eventkernel.open(str(tmp_path / name)) as k:
            assert k.verify().ok and k.head == 3


def test_restore_refuses_a_target_another_process_has_open(tmp_path, child_env):
    _journal(tmp_path / "a.db", 2)
    with eventkernel.open(str(tmp_path / "a.db")) as k:
        k.backup(str(tmp_path / "b.db"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import eventkernel, sys, time; k = eventkernel.open(sys.argv[1]); k.head; "
         "print('open', flush=True); time.sleep(60)", str(tmp_path / "a.db")],
        env=child_env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(eventkernel.JournalBusy, match="is open"):
            eventkernel.restore(str(tmp_path / "b.db"), str(tmp_path / "a.db"), force=True)
    finally:
        holder.kill()
        holder.communicate()
    assert eventkernel.restore(str(tmp_path / "b.db"), str(tmp_path / "a.db")) == 2


@pytest.mark.parametrize("target", ["journal", "junk"])
def test_restore_never_lets_a_stale_wal_meet_the_restored_file(tmp_path, target):
    _journal(tmp_path / "a.db", 2)
    with eventkernel.open(str(tmp_path / "a.db")) as k:
        k.backup(str(tmp_path / "b.db"))
    if target == "junk":
        (tmp_path / "a.db").write_bytes(b"not a journal" * 1000)
    # another database's WAL, left beside the target by a crash
    with eventkernel.open(str(tmp_path / "x.db")) as k:
        k._db.conn.execute("PRAGMA wal_autocheckpoint=0")
        for i in range(20):
            k.memory.put("user:x", f"k{i}", "x" * 500)
        shutil.copy(str(tmp_path / "x.db-wal"), str(tmp_path / "a.db-wal"))
    assert os.path.getsize(tmp_path / "a.db-wal") > 0
    assert eventkernel.restore(str(tmp_path / "b.db"), str(tmp_path / "a.db"), force=True) == 2
    assert not os.path.exists(tmp_path / "a.db-wal") or os.path.getsize(tmp_path / "a.db-wal") == 0
    with eventkernel.open(str(tmp_path / "a.db")) as k:
        assert k.verify().ok and k.head == 2 and k.memory.list() == []


def test_the_commands(tmp_path, capsys):
    _journal(tmp_path / "a.db", 3)
    assert cli(["backup", str(tmp_path / "a.db"), str(tmp_path / "b.db")]) == 0
    assert "3 events" in capsys.readouterr().out
    assert cli(["restore", str(tmp_path / "b.db"), str(tmp_path / "c.db")]) == 0
    assert "3 events" in capsys.readouterr().out
    _journal(tmp_path / "c.db", 1)
    assert cli(["restore", str(tmp_path / "b.db"), str(tmp_path / "c.db")]) != 0
    assert "past the backup's" in capsys.readouterr().err
    assert cli(["restore", str(tmp_path / "b.db"), str(tmp_path / "c.db"), "--force"]) == 0


def test_a_storage_failure_during_restore_is_a_journal_error(tmp_path):
    _journal(tmp_path / "a.db", 1)
    with eventkernel.open(str(tmp_path / "a.db")) as k:
        k.backup(str(tmp_path / "b.db"))
    (tmp_path / "dir.db").mkdir()  # a directory where the journal should be: SQLite cannot open it
    with pytest.raises(eventkernel.JournalError, match="restore failed"):
        eventkernel.restore(str(tmp_path / "b.db"), str(tmp_path / "dir.db"), force=True)
    assert (tmp_path / "dir.db").is_dir()
