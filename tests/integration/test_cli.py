"""The command line, through main(argv) and as ``python -m kernel``."""

from __future__ import annotations

import json
import subprocess
import sys

import apsw

import kernel
from kernel.cli import main


def test_init_creates_an_empty_journal(db_path, capsys):
    assert main(["init", db_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"db": db_path, "head": 0}


def test_demo_runs_a_simulation_and_ends_verified(db_path, capsys):
    assert main(["demo", db_path]) == 0
    out = capsys.readouterr().out
    for story in ("claimed", "heartbeat", "failed", "completed", "took over", "wakes up and is refused",
                  "checkpoint task=", "recovery  task=", "recovery: 2 attempts, success rate 100%", "verify: ok"):
        assert story in out, story
    with kernel.open(db_path) as k:
        assert {i.status for i in k.work.list()} == {"completed"}
        assert len(k.memory.list("task:")) == 6 and k.checkpoints.latest("write").checkpoint_type == "iteration_end"
        assert any(True for _ in k.read(types=["work_item.lease_expired"]))
        head = k.head
    assert f"journal head: {head}" in out


def test_verify_prints_the_head_hash_and_checks_an_anchor(db_path, capsys):
    main(["demo", db_path])
    capsys.readouterr()
    assert main(["verify", db_path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["problems"] == []
    assert main(["verify", db_path, "--expect-head", report["head_hash"]]) == 0
    capsys.readouterr()
    assert main(["verify", db_path, "--expect-head", "00" * 32]) == 1
    assert "the tail was truncated or rewritten" in capsys.readouterr().out


def test_verify_fails_on_a_tampered_file_naming_the_first_bad_position(db_path, capsys):
    main(["demo", db_path])
    conn = apsw.Connection(db_path)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("UPDATE journal SET recorded_at = recorded_at + 1 WHERE position = 7")
    conn.close()
    capsys.readouterr()
    assert main(["verify", db_path]) == 1
    assert "first bad position: 7" in capsys.readouterr().out


def test_rebuild(db_path, capsys):
    main(["demo", db_path])
    capsys.readouterr()
    assert main(["rebuild", db_path, "work_items"]) == 0
    assert "rebuilt work_items up to position" in capsys.readouterr().out


def test_errors_are_one_line_on_stderr_with_exit_1(tmp_path, capsys):
    bogus = tmp_path / "not-a-db"
    bogus.write_bytes(b"this is not SQLite" * 100)
    assert main(["verify", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eventkernel verify: ")
    assert main(["rebuild", str(tmp_path / "x.db"), "nope"]) == 1
    assert "no projection named 'nope'" in capsys.readouterr().err


def test_python_dash_m_kernel_is_the_cli(db_path):
    done = subprocess.run([sys.executable, "-m", "kernel", "init", db_path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "initialised" in done.stdout
