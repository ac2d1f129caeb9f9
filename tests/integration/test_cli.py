"""The command line, through main(argv) and as ``python -m eventkernel``."""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import pathlib
import re
import subprocess
import sys

import apsw
import pytest

import eventkernel
from eventkernel.cli import main


def test_init_creates_an_empty_journal(db_path, capsys):
    assert main(["init", db_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"db": db_path, "head": 0}


def test_demo_runs_a_simulation_and_ends_verified(db_path, capsys):
    assert main(["demo", db_path]) == 0
    out = capsys.readouterr().out
    for story in ("claimed", "heartbeat", "restarts", "released first: pending", "failed", "completed", "took over", "wakes up and is refused",
                  "checkpoint task=", "recovery  task=", "recovery: 3 attempts, success rate 100%", "verify: ok"):
        assert story in out, story
    with eventkernel.open(db_path) as k:
        assert {i.status for i in k.work.list()} == {"completed"}
        assert len(k.memory.list("task:")) == 6 and k.checkpoints.latest("write").checkpoint_type == "iteration_end"
        assert any(True for _ in k.read(types=["work_item.lease_expired"]))
        assert any(True for _ in k.read(types=["work_item.released"]))
        head = k.head
    assert f"journal head: {head}" in out


def test_demo_json_prints_the_events_it_appended(db_path, capsys):
    assert main(["demo", db_path, "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with eventkernel.open(db_path, read_only=True) as k:
        assert [e["position"] for e in events] == list(range(1, k.head + 1))
        assert [e["type"] for e in events] == [r.type for r in k.read()]
    assert {"position", "stream", "type", "data", "hash"} <= set(events[0])


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
    assert main(["init", str(tmp_path / "x.db")]) == 0
    capsys.readouterr()
    assert main(["rebuild", str(tmp_path / "x.db"), "nope"]) == 1
    assert "no projection named 'nope'" in capsys.readouterr().err


def test_python_dash_m_kernel_is_the_cli(db_path):
    done = subprocess.run([sys.executable, "-m", "eventkernel", "init", db_path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "initialised" in done.stdout


# --- the debugging commands -------------------------------------------------------


@pytest.fixture
def demo_db(db_path, capsys):
    assert main(["demo", db_path]) == 0
    capsys.readouterr()
    return db_path


def lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_log_filters_and_json(demo_db, capsys):
    assert main(["log", demo_db, "--json"]) == 0
    everything = lines(capsys)
    assert [e["position"] for e in everything] == list(range(1, len(everything) + 1))
    assert set(everything[0]) == {"position", "stream", "version", "type", "schema", "data", "meta", "event_id",
                                  "correlation_id", "recorded_at", "hash"}
    assert isinstance(everything[0]["data"], dict)
    main(["log", demo_db, "--json", "--type", "work_item.claimed", "--type", "work_item.completed"])
    assert {e["type"] for e in lines(capsys)} == {"work_item.claimed", "work_item.completed"}
    main(["log", demo_db, "--json", "--prefix", "memory:"])
    assert {e["stream"].split(":")[0] for e in lines(capsys)} == {"memory"}
    main(["log", demo_db, "--json", "--correlation", "write", "--after", "10", "--before", "30", "--limit", "3"])
    got = lines(capsys)
    assert len(got) == 3 and all(e["correlation_id"] == "write" and 10 < e["position"] < 30 for e in got)
    t = everything[20]["recorded_at"]
    main(["log", demo_db, "--json", "--since", str(t), "--until", str(t)])
    assert {e["recorded_at"] for e in lines(capsys)} == {t}
    iso = datetime.datetime.fromtimestamp(t / 1000, datetime.UTC).isoformat()
    main(["log", demo_db, "--json", "--since", iso, "--until", iso])
    assert {e["recorded_at"] for e in lines(capsys)} == {t}
    assert main(["log", demo_db, "--since", "yesterday"]) == 1
    assert "cannot read --since 'yesterday' as a time" in capsys.readouterr().err


def test_log_follow_prints_what_another_process_appends(demo_db, child_env):
    with eventkernel.open(demo_db, read_only=True) as k:
        head = k.head
    proc = subprocess.Popen([sys.executable, "-m", "eventkernel", "log", demo_db, "--json", "--follow", "--after",
                             str(head)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
    try:
        with eventkernel.open(demo_db) as k:
            k.work.enqueue("followed", {"n": 1})
        line = proc.stdout.readline()
        assert json.loads(line)["data"]["task_id"] == "followed"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_show_by_position_and_by_stream(demo_db, capsys):
    assert main(["show", demo_db, "1", "--json"]) == 0
    (first,) = lines(capsys)
    assert first["position"] == 1 and len(first["hash"]) == 64
    assert main(["show", demo_db, first["stream"]]) == 0
    out = capsys.readouterr().out
    assert out.count("position ") >= 2 and "hash" in out and "data" in out
    assert main(["show", demo_db, "99999"]) == 1
    assert "no event at position 99999" in capsys.readouterr().err


def test_replay_summary_and_out_file(demo_db, tmp_path, capsys):
    assert main(["replay", demo_db, "--to", "20", "--json"]) == 0
    (summary,) = lines(capsys)
    assert summary["position"] == 20 and summary["tables"]["work_items"] == 6
    out = str(tmp_path / "then.db")
    assert main(["replay", demo_db, "--to", "20", "--out", out]) == 0
    conn = apsw.Connection(out)
    with eventkernel.open(demo_db) as k, k.at(20) as view:
        assert conn.execute("SELECT * FROM work_items ORDER BY 1").fetchall() == view.table("work_items")[1]
    conn.close()
    assert main(["replay", demo_db, "--to", "20", "--out", out]) == 1
    assert "already exists" in capsys.readouterr().err


def test_diff_between_two_positions(demo_db, capsys):
    assert main(["diff", demo_db, "0", "6", "--json"]) == 0
    (work,) = lines(capsys)
    assert work["table"] == "work_items" and len(work["added"]) == 6 and not work["removed"]
    assert main(["diff", demo_db, "20", "22"]) == 0
    assert "~ " in capsys.readouterr().out


def test_stats(demo_db, capsys):
    assert main(["stats", demo_db, "--json"]) == 0
    (stats,) = lines(capsys)
    assert stats["head"] == 69 and sum(stats["events_by_type"].values()) == 69
    assert stats["events_by_stream_kind"]["work_item"] > 0
    assert all(p["lag"] == 0 for p in stats["projections"].values())
    assert main(["stats", demo_db]) == 0
    assert "projections:" in capsys.readouterr().out


def test_export_events_and_tables(demo_db, capsys):
    assert main(["export", demo_db]) == 0
    assert len(lines(capsys)) == 69
    assert main(["export", demo_db, "--table", "memory_entries"]) == 0
    assert {row["namespace"] for row in lines(capsys)} == {"task:research", "task:write"}
    assert main(["export", demo_db, "--table", "work_items", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:2] == ["work_item_id", "task_id"] and len(rows) == 7
    assert main(["export", demo_db, "--table", "journal"]) == 1
    assert "not a projection table" in capsys.readouterr().err


def test_query_reads(demo_db, capsys):
    assert main(["query", demo_db, "SELECT type, count(*) AS n FROM journal GROUP BY type ORDER BY n DESC", "--json"]) == 0
    rows = lines(capsys)
    assert rows[0] == {"type": "checkpoint.recorded", "n": 16}
    assert main(["query", demo_db, "SELECT * FROM journal_events WHERE 0"]) == 0
    assert "recorded_at_iso" in capsys.readouterr().out


def dump(path):
    """Schema, settings and every row of a file."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        out = {"schema": schema, "journal_mode": conn.pragma("journal_mode"), "user_version": conn.pragma("user_version")}
        for _, name, _ in schema:
            if conn.execute("SELECT type FROM sqlite_schema WHERE name = ?", (name,)).fetchone()[0] == "table":
                out[name] = conn.execute(f'SELECT * FROM "{name}"').fetchall()
        return out
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("DELETE FROM journal", "would write"),
        ("UPDATE work_items SET status = 'x'", "would write"),
        ("DROP TABLE work_items", "would write"),
        ("SELECT 1; DELETE FROM journal", "one statement at a time"),
        ("ATTACH 'other.db' AS o", "needs more than reading"),
        ("PRAGMA journal_mode = DELETE", "would write|needs more than reading"),
        ("PRAGMA user_version", "needs more than reading"),
        ("SELECT * FROM nowhere", "no such table"),
    ],
)
def test_query_refuses_anything_but_one_read(demo_db, capsys, sql, why):
    before = dump(demo_db)
    assert main(["query", demo_db, sql]) == 1
    err = capsys.readouterr().err
    assert re.search(why, err) and err.count("\n") == 1
    assert dump(demo_db) == before
    assert not pathlib.Path(demo_db).with_name("other.db").exists()
    with eventkernel.open(demo_db) as k:
        assert k.head == 69 and k.verify().ok


def test_verify_expect_head_detects_a_truncated_tail(demo_db, capsys):
    assert main(["verify", demo_db, "--json"]) == 0
    anchor = json.loads(capsys.readouterr().out)["head_hash"]
    conn = apsw.Connection(demo_db)
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DELETE FROM journal WHERE position > 60")
    conn.close()
    with eventkernel.open(demo_db) as k:
        k.rebuild()  # even with projections rebuilt to match, the cut is visible against the anchor
    assert main(["verify", demo_db]) == 0
    capsys.readouterr()
    assert main(["verify", demo_db, "--expect-head", anchor]) == 1
    out = capsys.readouterr().out
    assert "at position 60" in out and "the tail was truncated or rewritten" in out


def test_verify_anchor_names_where_the_cut_tail_began(demo_db, capsys):
    assert main(["verify", demo_db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    anchor = f"{report['head']}:{report['head_hash']}"
    assert main(["verify", demo_db, "--anchor", anchor]) == 0
    capsys.readouterr()
    conn = apsw.Connection(demo_db)
    conn.execute("DROP TRIGGER journal_no_delete")
    conn.execute("DELETE FROM journal WHERE position > 60")
    conn.close()
    with eventkernel.open(demo_db) as k:
        k.rebuild()
    assert main(["verify", demo_db, "--anchor", anchor]) == 1
    out = capsys.readouterr().out
    assert f"events 61..{report['head']} were cut from the tail" in out
    assert "first bad position: 61" in out
    assert main(["verify", demo_db, "--anchor", "sixty"]) == 1
    assert "--anchor must be POSITION:HASH" in capsys.readouterr().err


def test_every_argument_has_help_and_there_is_a_version(capsys):
    from eventkernel.cli import parser

    p = parser()
    sub = next(a for a in p._actions if a.dest == "command")
    missing = []
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if action.dest != "help" and action.help != argparse.SUPPRESS and not action.help:
                missing.append(f"{name} {action.dest}")
    assert not missing
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"eventkernel {eventkernel.__version__}"


@pytest.mark.parametrize(("argv", "message"), [
    (["show", "{db}", "0"], "there is no event at position 0 (positions run from 1 to the head, 69)"),
    (["show", "{db}", "\u00b2"], "there is no stream '\u00b2'"),
    (["replay", "{db}", "--to", "999"], "--to 999 is past the journal head 69"),
    (["replay", "{db}", "--to", "\u00b2"], "--to: must be a whole number from 0 to 9223372036854775807, got '\u00b2'"),
    (["log", "{db}", "--limit", "99999999999999999999"], "--limit: must be a whole number from 0 to"),
    (["log", "{db}", "--since", "\u00b2"], "cannot read --since '\u00b2' as a time"),
    (["verify", "{db}", "--anchor", "\u00b2:" + "0" * 64], "--anchor must be POSITION:HASH"),
    (["diff", "{db}", "1", "999"], "B 999 is past the journal head 69"),
])
def test_refusals_speak_the_cli_s_language(demo_db, capsys, argv, message):
    assert main([a.format(db=demo_db) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "refused" not in err or "log refused" not in err


def test_log_full_iso_times_and_unknown_types(demo_db, capsys):
    assert main(["log", demo_db, "--limit", "1"]) == 0
    line = capsys.readouterr().out
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line)
    main(["log", demo_db])
    short = capsys.readouterr().out.splitlines()
    main(["log", demo_db, "--full"])
    full = capsys.readouterr().out.splitlines()
    assert any(s.endswith("…") for s in short) and not any(f.endswith("…") for f in full)
    assert max(map(len, full)) > max(map(len, short))
    assert main(["log", demo_db, "--type", "work_item.teleported"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no event of type 'work_item.teleported'" in captured.err


def test_log_shows_times_a_clock_before_1970_left_behind(tmp_path, capsys):
    from eventkernel import journal

    path = str(tmp_path / "old.db")
    eventkernel.open(path).close()
    row = (1, "note:x", 1, "test.note", 1, "{}", None, None, None, -5)  # as a 0.1.0 file may hold
    conn = apsw.Connection(path)
    conn.execute("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (*row, journal.row_hash(journal.GENESIS_HASH, *row)))
    conn.close()
    assert main(["log", path]) == 0
    assert "1969-12-31T23:59:59.995Z" in capsys.readouterr().out


def test_a_demo_piped_into_head_still_runs_to_the_end(tmp_path, child_env):
    path = str(tmp_path / "demo.db")
    for run in range(2):
        done = subprocess.run(f"{sys.executable} -m eventkernel demo {path} | head -1", shell=True,
                              capture_output=True, text=True, env=child_env)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout.startswith("eventkernel demo on")
        with eventkernel.open(path) as k:
            items = k.work.list()
            assert len(items) == 6 * (run + 1) and {i.status for i in items} == {"completed"}
            assert k.verify().ok


@pytest.mark.parametrize("pragma", ["hard_heap_limit", "soft_heap_limit", "threads", "cache_size"])
def test_a_refused_pragma_never_takes_effect(demo_db, capsys, pragma):
    from eventkernel import readonly

    probe = apsw.Connection(":memory:")
    before = probe.execute(f"PRAGMA {pragma}").fetchone()
    with pytest.raises(eventkernel.ReadOnly, match="needs more than reading"):
        readonly.query(demo_db, f"PRAGMA {pragma} = 1000000")
    assert probe.execute(f"PRAGMA {pragma}").fetchone() == before
    probe.close()
    with eventkernel.open(demo_db) as k:  # and the next write works
        k.work.enqueue("after", None)


def test_an_interrupted_replay_out_leaves_no_half_file(demo_db, tmp_path, monkeypatch, capsys):
    from eventkernel import view

    def interrupted(path):
        raise KeyboardInterrupt  # as if Ctrl-C came while the copy was being made durable

    monkeypatch.setattr(view, "fsync", interrupted)
    out = tmp_path / "then.db"
    assert main(["replay", demo_db, "--to", "20", "--out", str(out)]) == 130
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "then.db" in p.name] == []
    monkeypatch.undo()
    assert main(["replay", demo_db, "--to", "20", "--out", str(out)]) == 0
    assert main(["replay", demo_db, "--to", "20", "--out", str(out)]) == 1  # never overwritten
    assert "already exists" in capsys.readouterr().err
    conn = apsw.Connection(str(out), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM work_items").fetchone() == (6,)
    conn.close()


def test_keygen_prints_a_usable_key(capsys, db_path):
    from eventkernel.secrets import key_id

    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keygen", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key_id"] == key_id(shown["key"]) and shown["key"] != key
    with eventkernel.open(db_path, secret_key=key) as k:
        k.config.set("s", "v", secret=True)
        assert k.config.get("s") == "v" and k.config.key_id() == key_id(key)


def test_stats_metrics_prints_health_and_samples(capsys, db_path):
    main(["demo", db_path])
    with eventkernel.open(db_path) as k:
        for v in (10, 20, 30, 40):
            k.metrics.record("llm.tokens", v)
    capsys.readouterr()
    assert main(["stats", db_path, "--metrics", "--window", "100000"]) == 0
    out = capsys.readouterr().out
    assert "commands per minute:" in out and "work.claim" in out and "retry rate" in out
    assert re.search(r"llm\.tokens\s+4\s+25\s+25\s+38\.5\s+39\.7\s+40", out), out
    assert main(["stats", db_path, "--metrics", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metrics"]["llm.tokens"]["count"] == 4 and shown["health"]["head"] == shown["stats"]["head"]
    assert main(["stats", db_path, "--metrics", "--window", "0"]) == 1
