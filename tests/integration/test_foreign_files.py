"""Never touch a file that is not ours: every API and CLI entry point refuses
a file that is not an eventkernel journal (or is a newer one) before a byte
is written, never creates a missing file when its job is to read, and reads
a journal in a read-only place."""

from __future__ import annotations

import os
import shutil

import apsw
import pytest

import eventkernel
from eventkernel import readonly
from eventkernel.cli import main

from support import listing, read_only_place


def _sqlite(path, sql, *, wal=False, application_id=0):
    conn = apsw.Connection(str(path))
    if wal:
        conn.pragma("journal_mode", "wal")
    if application_id:
        conn.pragma("application_id", application_id)
    conn.execute(sql)
    conn.close()


FOREIGN = {
    "an application's database": lambda p: _sqlite(
        p, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ada');"
           "CREATE TABLE orders (id INTEGER, user_id INTEGER)"),
    "a database in WAL mode": lambda p: _sqlite(p, "CREATE TABLE t (x); INSERT INTO t VALUES (1)", wal=True),
    "a differently shaped journal table": lambda p: _sqlite(
        p, "CREATE TABLE journal (id INTEGER PRIMARY KEY, entry TEXT); INSERT INTO journal VALUES (1, 'dear diary')"),
    "a foreign schema_migrations": lambda p: _sqlite(
        p, "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY); INSERT INTO schema_migrations VALUES ('2024');"
           "CREATE TABLE accounts (id INTEGER)"),
    "another application's empty database": lambda p: _sqlite(p, "SELECT 1", application_id=0x0F055112),
    "not a database at all": lambda p: p.write_bytes(b"# notes\n" + b"nothing to see here\n" * 500),
}


def _journal_of_a_newer_version(p):
    eventkernel.open(str(p)).close()
    conn = apsw.Connection(str(p))
    conn.pragma("user_version", 99)
    conn.close()


REFUSED = {**FOREIGN, "a journal of a newer eventkernel": _journal_of_a_newer_version}

API = {
    "open": lambda p: eventkernel.open(p),
    "open(create=False)": lambda p: eventkernel.open(p, create=False),
    "open(read_only=True)": lambda p: eventkernel.open(p, read_only=True),
    "readonly.query": lambda p: readonly.query(p, "SELECT 1"),
}
CLI = {
    "init": ["init", "{db}"],
    "demo": ["demo", "{db}"],
    "log": ["log", "{db}"],
    "show": ["show", "{db}", "1"],
    "replay": ["replay", "{db}", "--to", "0"],
    "replay --out": ["replay", "{db}", "--to", "0", "--out", "{dir}/out.db"],
    "diff": ["diff", "{db}", "0", "0"],
    "rebuild": ["rebuild", "{db}"],
    "verify": ["verify", "{db}"],
    "stats": ["stats", "{db}"],
    "export": ["export", "{db}"],
    "export --table": ["export", "{db}", "--table", "work_items"],
    "query": ["query", "{db}", "SELECT 1"],
}
READ_COMMANDS = [name for name in CLI if name not in ("init", "demo", "rebuild")]


def _argv(name, path):
    return [a.format(db=path, dir=os.path.dirname(path)) for a in CLI[name]]


@pytest.fixture(params=sorted(REFUSED))
def foreign(request, tmp_path):
    path = tmp_path / "other.db"
    REFUSED[request.param](path)
    return str(path)


@pytest.mark.parametrize("entry", sorted(API))
def test_the_api_refuses_a_file_that_is_not_ours_and_leaves_it_byte_for_byte(foreign, entry):
    before = listing(os.path.dirname(foreign))
    with pytest.raises(eventkernel.NotAJournal) as refused:
        API[entry](foreign)
    assert refused.value.path == foreign and foreign in str(refused.value)
    assert listing(os.path.dirname(foreign)) == before


@pytest.mark.parametrize("entry", sorted(CLI))
def test_the_cli_refuses_a_file_that_is_not_ours_and_leaves_it_byte_for_byte(foreign, entry, capsys):
    before = listing(os.path.dirname(foreign))
    assert main(_argv(entry, foreign)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an eventkernel journal" in err and foreign in err
    assert listing(os.path.dirname(foreign)) == before


def test_the_refusal_says_what_was_found(tmp_path):
    path = tmp_path / "app.db"
    FOREIGN["an application's database"](path)
    with pytest.raises(eventkernel.NotAJournal, match=r"a SQLite database with 2 tables \('orders', 'users'\)"):
        eventkernel.open(str(path))
    text = tmp_path / "notes.txt"
    FOREIGN["not a database at all"](text)
    with pytest.raises(eventkernel.NotAJournal, match="it is not a SQLite database"):
        eventkernel.open(str(text))
    newer = tmp_path / "newer.db"
    _journal_of_a_newer_version(newer)
    with pytest.raises(eventkernel.NotAJournal, match=r"newer eventkernel \(file format 99; this version reads "
                                                      r"formats up to 7\); upgrade"):
        eventkernel.open(str(newer), read_only=True)


@pytest.mark.parametrize("entry", READ_COMMANDS + ["rebuild"])
def test_a_read_command_on_a_missing_path_exits_1_and_creates_nothing(tmp_path, entry, capsys):
    path = str(tmp_path / "missing.db")
    assert main(_argv(entry, path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "there is no such file" in err
    assert os.listdir(tmp_path) == []


def test_the_api_creates_a_missing_file_only_when_asked(tmp_path):
    path = str(tmp_path / "missing.db")
    for kwargs in ({"create": False}, {"read_only": True}):
        with pytest.raises(eventkernel.NotAJournal, match="there is no such file"):
            eventkernel.open(path, **kwargs)
        assert os.listdir(tmp_path) == []
    with pytest.raises(eventkernel.NotAJournal, match="it is an empty file"):
        (tmp_path / "empty.db").write_bytes(b"")
        eventkernel.open(str(tmp_path / "empty.db"), read_only=True)
    with eventkernel.open(str(tmp_path / "empty.db")) as k:  # an empty file becomes a journal
        assert k.head == 0
    with eventkernel.open(path) as k:
        assert k.head == 0
    assert sorted(os.listdir(tmp_path)) == ["empty.db", "missing.db"]


@pytest.fixture
def journal(tmp_path):
    """A journal alone in its directory, checkpointed: no -wal, no -shm."""
    place = tmp_path / "place"
    place.mkdir()
    path = str(place / "agents.db")
    assert main(["demo", path]) == 0
    with eventkernel.open(path) as k:
        k.checkpoint("truncate")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


@pytest.mark.parametrize("entry", READ_COMMANDS)
@pytest.mark.parametrize("what", ["directory", "file"])
def test_every_read_command_works_in_a_read_only_place(journal, entry, what, capsys):
    capsys.readouterr()
    place = os.path.dirname(journal)
    argv = _argv(entry, journal)
    if entry == "diff":
        argv[-2:] = ["1", "69"]
    if entry == "replay --out":
        out_dir = os.path.join(os.path.dirname(place), "out")
        os.mkdir(out_dir)
        argv[-1] = os.path.join(out_dir, "then.db")
    before = listing(place)
    with read_only_place(place if what == "directory" else journal):
        assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out
    if what == "directory":
        assert listing(place) == before
    else:
        assert listing(place)[os.path.basename(journal)] == before[os.path.basename(journal)]


def test_a_read_only_place_with_a_wal_is_refused_rather_than_read_without_it(journal, capsys):
    with eventkernel.open(journal) as k:
        k._db.conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        k.work.enqueue("late", {"in": "the wal"})
    os.remove(journal + "-shm")
    assert os.path.getsize(journal + "-wal") > 0
    place = os.path.dirname(journal)
    before = listing(place)
    capsys.readouterr()
    with read_only_place(place):
        assert main(["log", journal]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-wal" in err and "would silently miss them" in err
    assert listing(place) == before


def test_a_writable_open_in_a_read_only_place_says_so(journal):
    with read_only_place(os.path.dirname(journal)), pytest.raises(eventkernel.JournalError, match="read-only"):
        eventkernel.open(journal)


def test_another_databases_wal_beside_a_journal_is_refused_and_the_journal_survives(journal, tmp_path):
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.pragma("journal_mode", "wal")
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    conn.execute("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(5000))")
    conn.close()
    shutil.copy(str(other) + "-wal", journal + "-wal")
    before = listing(os.path.dirname(journal))
    for read_only in (False, True):
        with pytest.raises((eventkernel.NotAJournal, eventkernel.JournalCorrupt)):
            eventkernel.open(journal, read_only=read_only)
    after = listing(os.path.dirname(journal))
    assert after[os.path.basename(journal)] == before[os.path.basename(journal)]
    assert after[os.path.basename(journal) + "-wal"] == before[os.path.basename(journal) + "-wal"]
    os.remove(journal + "-wal")
    os.remove(journal + "-shm")
    with eventkernel.open(journal) as k:
        assert k.verify().ok and k.head == 69


def test_a_journal_whose_tail_does_not_chain_is_refused_before_anything_is_written(journal):
    conn = apsw.Connection(journal)
    conn.execute("DROP TRIGGER journal_no_update; UPDATE journal SET data = '{}' WHERE position = 69")
    conn.close()
    before = listing(os.path.dirname(journal))
    with pytest.raises(eventkernel.JournalCorrupt, match="does not chain"):
        eventkernel.open(journal)
    assert listing(os.path.dirname(journal)) == before


def test_verify_reports_a_file_it_cannot_open_as_a_failure(journal, capsys):
    conn = apsw.Connection(journal)
    conn.execute("DROP TRIGGER journal_no_update; UPDATE journal SET data = '{}' WHERE position = 69")
    conn.close()
    capsys.readouterr()
    assert main(["verify", journal]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED") and "does not chain" in out


def test_verify_reports_a_malformed_page_as_a_problem_and_does_not_raise(journal):
    conn = apsw.Connection(journal)
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'work_items'").fetchone()[0]
    page_size = conn.pragma("page_size")
    conn.close()
    with open(journal, "r+b") as f:  # no connection of this process has the file open
        f.seek((root - 1) * page_size)  # the page header: no b-tree page starts with 0xff
        f.write(b"\xff" * 64)
    with eventkernel.open(journal, read_only=True) as k:
        report = k.verify()
    assert not report.ok
    assert any("integrity_check" in p or "malformed" in p or "cannot be read" in p for p in report.problems)


def test_a_journal_file_another_process_removes_while_we_look_is_no_error(db_path, monkeypatch):
    """The -journal of a file being created goes away when its creator's
    transaction ends, possibly between two looks at it (seen with eight
    processes opening one new file at once)."""
    exists, getsize = os.path.exists, os.path.getsize

    def vanishing_exists(path):
        return True if str(path).endswith("-journal") else exists(path)

    def vanishing_getsize(path):
        if str(path).endswith("-journal"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return getsize(path)

    eventkernel.open(db_path).close()
    monkeypatch.setattr(os.path, "exists", vanishing_exists)
    monkeypatch.setattr(os.path, "getsize", vanishing_getsize)
    with eventkernel.open(db_path) as k:
        assert k.verify().ok


def test_a_path_utf8_cannot_carry_is_refused_by_name_and_nothing_is_created(tmp_path, capsys):
    path = str(tmp_path / "journal-\ud800.db")
    with pytest.raises(eventkernel.InvalidArgument, match="lone surrogate"):
        eventkernel.open(path)
    assert main(["log", path]) == 1
    assert "lone surrogate" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
