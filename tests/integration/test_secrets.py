"""A secret configuration value never exists in clear outside the process
that holds the key: not in the database file, its WAL, a backup, a saved
view, an export, any CLI output, or an error message."""

from __future__ import annotations

import os

import pytest

import eventkernel
from eventkernel import generate_key
from eventkernel.cli import main
from eventkernel.errors import InvalidArgument, KernelError

CLEAR = "correct-horse-battery-staple-7731"
KEY = generate_key()


def _files(directory) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in os.listdir(directory)}


def test_the_clear_value_appears_nowhere(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "app.db")
    monkeypatch.setenv("EVENTKERNEL_SECRET_KEY", KEY)
    with eventkernel.open(db, snapshot_every=0) as k:
        k.config.set("db.password", CLEAR, secret=True, description="primary")
        k.config.set("api", {"token": CLEAR}, secret=True)
        k.config.set("public", "visible")
        mid = k.head
        k.config.set("db.password", CLEAR + "-v2", secret=True, command_id="rotate-pw")
        k.config.rotate_key(generate_key())
        for bad in ([CLEAR], 3):  # refused: the message must not echo the value
            with pytest.raises(InvalidArgument) as e:
                k.config.set("db.password", bad, secret=True, value_type="string")
            assert CLEAR not in str(e.value) and "(a secret, not shown)" in str(e.value)
        with pytest.raises(KernelError) as e:
            k.config.set("db.password", CLEAR, command_id="x")  # not marked secret: refused
        assert CLEAR not in str(e.value)
        assert k.config.get("db.password") == CLEAR + "-v2"  # the holder of the key reads it
        k.snapshot()
        k.backup(str(tmp_path / "backup.db"))
        with k.at(mid) as view:
            view.save(str(tmp_path / "view.db"))
        # Everything a user can print about the file
        outputs = []
        for argv in (["log", db, "--full"], ["log", db, "--json"], ["show", db, "config:db.password"],
                     ["export", db], ["export", db, "--table", "configurations"],
                     ["export", db, "--table", "configuration_history", "--format", "csv"],
                     ["query", db, "SELECT * FROM configurations"], ["query", db, "SELECT data, meta FROM journal"],
                     ["diff", db, "1", str(mid)], ["replay", db, "--to", str(mid)], ["stats", db, "--metrics"],
                     ["verify", db, "--all-snapshots"]):
            assert main(argv) == 0, argv
            captured = capsys.readouterr()
            outputs.append(captured.out + captured.err)
        assert all(CLEAR not in out for out in outputs)
        assert any('"***"' in out or "***" in out for out in outputs)
        assert repr(k.config.list()).count("***") == 2 and CLEAR not in repr(k.config.history("db.password"))
    files = _files(tmp_path)
    assert {"app.db", "backup.db", "view.db"} <= set(files)
    for name, data in files.items():
        assert CLEAR.encode() not in data, name
        assert CLEAR.encode("utf-16-le") not in data, name


def test_a_wal_never_holds_it_either(tmp_path, monkeypatch):
    db = str(tmp_path / "w.db")
    with eventkernel.open(db, secret_key=KEY, snapshot_every=0) as k:
        k.config.set("s", CLEAR, secret=True)
        wal = (tmp_path / "w.db-wal").read_bytes()  # before any checkpoint
        assert len(wal) > 0 and CLEAR.encode() not in wal
