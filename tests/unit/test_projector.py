from __future__ import annotations

import apsw
import pytest

import eventkernel
from eventkernel.connection import SharedMemory
from eventkernel.errors import InvalidArgument
from eventkernel.projections import work_items
from eventkernel.projector import AT_HEAD

from support import live_tables, rebuilt_tables

BOTH_ENGINES = True  # the tests taking ``k`` run on a file and on PostgreSQL


def workload(k, clock):
    ids = [k.work.enqueue(f"t{i % 2}", {"n": i}, priority=i % 3, max_retries=1) for i in range(6)]
    a = k.work.claim("w1", lease_ms=100)
    b = k.work.claim("w2", lease_ms=100)
    k.work.complete(a.work_item_id, "w1", a.token, output="ok")
    k.work.fail(b.work_item_id, "w2", b.token, "flaky")
    k.work.claim("w3", lease_ms=10)
    clock.advance(50)
    k.work.expire_leases()
    k.work.cancel(ids[0], "not needed")
    return ids


def raw(path):
    return apsw.Connection(path)


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_rebuild_restores_a_damaged_projection(k, clock, db_path):
    workload(k, clock)
    expected = live_tables(k)
    conn = raw(db_path)
    conn.execute("UPDATE work_items SET status = 'completed'; DELETE FROM work_items WHERE priority = 0")
    conn.close()
    assert not k.verify().ok
    assert k.rebuild() == k.head
    assert live_tables(k) == expected
    assert k.verify().ok


def test_rebuild_one_projection_by_name_and_refuse_unknown_names(k, clock):
    workload(k, clock)
    assert k.rebuild("work_items") == k.head
    with pytest.raises(InvalidArgument, match="no projection named 'nope'; known: .*work_items"):
        k.rebuild("nope")


def test_rebuild_reports_progress(k, clock):
    workload(k, clock)
    seen = []
    k.rebuild(progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (k.head, k.head)


def test_open_catches_up_a_projection_that_fell_behind(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        workload(k, clock)
        expected = live_tables(k)
    conn = raw(db_path)
    conn.execute("DELETE FROM work_items; UPDATE projection_positions SET position = 0")
    conn.close()
    with eventkernel.open(db_path, clock=clock) as k:
        assert live_tables(k) == expected
        assert k.verify().ok


def test_open_recreates_a_dropped_projection_table(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        workload(k, clock)
        expected = live_tables(k)
    conn = raw(db_path)
    conn.execute("DROP TABLE work_items; DELETE FROM projection_positions")
    conn.close()
    with eventkernel.open(db_path, clock=clock) as k:
        assert live_tables(k) == expected


def test_a_changed_projection_version_is_rebuilt_on_open(db_path, clock, monkeypatch):
    with eventkernel.open(db_path, clock=clock) as k:
        workload(k, clock)
        expected = live_tables(k)
    conn = raw(db_path)
    conn.execute("UPDATE work_items SET error = 'stale'")
    conn.close()
    monkeypatch.setattr(work_items, "VERSION", work_items.VERSION + 1)
    with eventkernel.open(db_path, clock=clock) as k:
        assert live_tables(k) == expected
        assert k._db.conn.execute("SELECT version FROM projection_positions WHERE name = 'work_items'").fetchone() == (work_items.VERSION,)


def test_live_equals_rebuilt_after_a_workload(k, clock):
    workload(k, clock)
    assert live_tables(k) == rebuilt_tables(k)


def test_verify_is_ok_on_a_sound_file(k, clock):
    workload(k, clock)
    report = k.verify()
    assert report.ok and report.problems == [] and report.first_bad_position is None
    assert report.head == k.head
    (last,) = list(k.read(after=k.head - 1))
    assert report.head_hash == last.hash.hex()


def _tamper(path, sql):
    conn = raw(path)
    conn.execute("DROP TRIGGER journal_no_update; DROP TRIGGER journal_no_delete")
    conn.execute(sql)
    conn.close()


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_names_the_first_edited_row(k, clock, db_path):
    workload(k, clock)
    _tamper(db_path, """UPDATE journal SET data = replace(data, '"ok"', '"no"') WHERE type = 'work_item.completed'""")
    (failed,) = [r.position for r in k.read(types=["work_item.completed"])]
    report = k.verify()
    assert not report.ok
    assert report.first_bad_position == failed
    assert any(f"position {failed}: the hash chain breaks" in p for p in report.problems)
    # The projection no longer follows from the (edited) journal either.
    assert any("work_items: row" in p and "differs" in p for p in report.problems)


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_finds_a_deleted_row(k, clock, db_path):
    workload(k, clock)
    _tamper(db_path, "DELETE FROM journal WHERE position = 3")
    report = k.verify()
    assert report.first_bad_position == 3
    assert "position 3 is missing: the next event is at 4" in report.problems


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_finds_reordered_versions(k, clock, db_path):
    workload(k, clock)
    _tamper(db_path, "UPDATE journal SET version = version + 10 WHERE position = 2")
    report = k.verify()
    assert report.first_bad_position == 2
    assert any("position 2: stream" in p and "version 11, expected 1" in p for p in report.problems)


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_head_hash_detects_a_cut_tail(k, clock, db_path):
    workload(k, clock)
    anchored = k.verify().head_hash
    _tamper(db_path, f"DELETE FROM journal WHERE position = {k.head}")
    report = k.verify()
    assert report.head_hash != anchored  # a kept head hash tells the tail was cut


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_with_an_anchor_names_where_a_cut_tail_began(k, clock, db_path):
    workload(k, clock)
    before = k.verify()
    anchor = (before.head, before.head_hash)
    assert k.verify(anchor=anchor).ok
    _tamper(db_path, f"DELETE FROM journal WHERE position > {before.head - 3}")
    report = k.verify(anchor=anchor)
    assert not report.ok
    assert report.first_bad_position == before.head - 2
    assert any(f"events {before.head - 2}..{before.head} were cut from the tail" in p for p in report.problems)
    with pytest.raises(InvalidArgument, match="anchor must be"):
        k.verify(anchor=(1, "nothex"))


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_verify_finds_two_rows_swapped(k, clock, db_path):
    workload(k, clock)
    cols = "stream, version, type, schema, data, meta, event_id, correlation_id, recorded_at, hash"
    _tamper(db_path, f"""
        CREATE TEMP TABLE a AS SELECT {cols} FROM journal WHERE position = 4;
        CREATE TEMP TABLE b AS SELECT {cols} FROM journal WHERE position = 5;
        DELETE FROM journal WHERE position IN (4, 5);
        INSERT INTO journal (position, {cols}) SELECT 4, * FROM b;
        INSERT INTO journal (position, {cols}) SELECT 5, * FROM a;
    """)
    report = k.verify()
    assert not report.ok
    assert report.first_bad_position == 4
    assert any("position 4: the hash chain breaks" in p for p in report.problems)


def test_a_rebuild_in_memory_has_every_table_and_index_of_the_ddl(k, clock):
    from eventkernel.connection import memory_connection

    workload(k, clock)
    mem, _ = k._projector.build_in_memory(k._db)
    fresh = memory_connection()
    try:
        for m in k._projector.modules:
            fresh.execute(k._projector.ddl(m))
        schema = "SELECT type, name, sql FROM sqlite_schema ORDER BY name"
        assert mem.execute(schema).fetchall() == fresh.execute(schema).fetchall()
        assert any(t == "index" for t, _, _ in fresh.execute(schema))
        # So has the file after a rebuild, which creates the indexes after copying the rows in.
        expected = fresh.execute(schema).fetchall()
        names = {name for _, name, _ in expected}
        k.rebuild()
        assert [r for r in k._db.conn.execute(schema) if r[1] in names] == expected
    finally:
        mem.close()
        fresh.close()


def _positions(k):
    """The positions the projections are at, and what projection_positions holds."""
    with k._db.read("reading the positions") as conn:
        reached = {p for _, p in k._projector.positions(conn).values()}
        held = {p for (p,) in conn.execute("SELECT position FROM projection_positions")}
    return reached, held


def test_projection_positions_reach_the_head_when_a_transaction_commits(k):
    with k.transaction():
        k.work.enqueue("t", 1)
        k.work.enqueue("t", 2)
        with pytest.raises(InvalidArgument):
            k.work.enqueue("", 3)  # refused inside the transaction: undoes only itself
        k.work.enqueue("t", 4)
    assert k.head == 3
    assert _positions(k) == ({3}, {AT_HEAD})
    assert k.verify().ok


def test_projection_positions_stay_put_when_everything_in_a_transaction_is_undone(k):
    k.work.enqueue("t", 1)
    with pytest.raises(RuntimeError), k.transaction():
        k.work.enqueue("t", 2)
        raise RuntimeError("the caller gives up")
    with k.transaction(), pytest.raises(eventkernel.NotFound):
        k.work.cancel("wi_missing", "nope")
    assert k.head == 1
    assert _positions(k) == ({1}, {AT_HEAD})
    assert k.verify().ok


@pytest.mark.parametrize("engine", ["sqlite"])  # the file's own connection
def test_a_commit_writes_no_position_once_every_projection_is_at_the_head(k):
    """The positions say "at the head" once; later commits of a process
    applying every projection change no row of projection_positions (no page
    written for it)."""
    k.work.enqueue("t", 1)
    changed: list[str] = []
    k._db.conn.set_update_hook(lambda _op, _db, table, _rowid: changed.append(table))
    for n in range(3):
        k.work.enqueue("t", n)
    with k.transaction():
        k.memory.put("ns", "k", 1)
        k.sessions.create("app", "u")
    k._db.conn.set_update_hook(None)
    assert "work_items" in changed and "projection_positions" not in changed
    assert _positions(k) == ({6}, {AT_HEAD})


def test_rebuild_inside_a_transaction_copies_rows_without_attaching(k, clock):
    workload(k, clock)
    expected = live_tables(k)
    with k.transaction():
        k.work.enqueue("t-late", {"n": 99})
        assert k.rebuild() == k.head
    assert live_tables(k)["work_items"] != expected["work_items"]
    assert live_tables(k) == rebuilt_tables(k)
    assert k.verify().ok


def test_rebuild_leaves_no_database_attached(k, clock):
    workload(k, clock)
    k.rebuild()
    names = [row[1] for row in k._db.conn.execute("PRAGMA database_list")]
    assert names == ["main"] or names == ["main", "temp"]
    assert k.verify().ok


def test_a_rebuild_reads_its_build_where_it_is_the_full_text_index_included(k, clock, monkeypatch):
    """The swap attaches the in-memory build by its name (never copied out
    with ``serialize`` and in again); the full-text index is copied through
    itself and answers as before."""
    workload(k, clock)
    k.documents.index("docs/a.txt", title="A", content="the journal is the source of truth")
    k.documents.index("docs/b.txt", title="B", content="workers lease items from the journal")
    before = [hit.file_path for hit in k.documents.search("journal")]

    def copied(self, name):  # pragma: no cover - the assertion is the point
        raise AssertionError("the rebuilt tables were copied out of memory")

    monkeypatch.setattr(SharedMemory, "serialize", copied)
    assert k.rebuild() == k.head
    assert sorted(before) == ["docs/a.txt", "docs/b.txt"]
    assert [hit.file_path for hit in k.documents.search("journal")] == before
    assert [hit.file_path for hit in k.documents.search("workers")] == ["docs/b.txt"]
    assert live_tables(k) == rebuilt_tables(k)
    assert k.verify().ok


def test_a_build_that_cannot_be_attached_by_name_is_copied(k, clock, monkeypatch, caplog):
    workload(k, clock)
    build = k._projector.build_in_memory

    def unreachable(*args, **kwargs):
        mem, upto = build(*args, **kwargs)
        if isinstance(mem, SharedMemory):
            mem.uri = "file:/no-such-directory-here/x.db?mode=ro"
        return mem, upto

    monkeypatch.setattr(k._projector, "build_in_memory", unreachable)
    assert k.rebuild(from_scratch=True) == k.head
    assert "by name failed" in caplog.text
    assert live_tables(k) == rebuilt_tables(k)
    assert [row[1] for row in k._db.conn.execute("PRAGMA database_list")] in (["main"], ["main", "temp"])


def test_a_rebuild_copies_each_tables_rows_as_stored_records(k, clock):
    """Into an empty table of the same shape, ``INSERT … SELECT *`` lets
    SQLite copy each row's record and key without decoding them (its
    transfer optimization): a few virtual machine steps a row, where copying
    column by column takes a few per column (work_items has 21)."""
    workload(k, clock)
    for i in range(40):
        k.work.enqueue("bulk", {"n": i})
    profiles: list[dict] = []
    k._db.conn.trace_v2(apsw.SQLITE_TRACE_PROFILE, profiles.append)
    try:
        k.rebuild(from_scratch=True)
    finally:
        k._db.conn.trace_v2(0, None)
    copies = {p["sql"].split('"')[1]: p["stmt_status"] for p in profiles if p["sql"].startswith("INSERT INTO main.")}
    rows = k._db.conn.execute("SELECT count(*) FROM work_items").fetchone()[0]
    assert rows == 46 and "work_items" in copies, sorted(copies)
    assert copies["work_items"]["SQLITE_STMTSTATUS_VM_STEP"] <= 10 * rows, copies["work_items"]
    assert live_tables(k) == rebuilt_tables(k)


DAMAGE = {
    "positions set to 0 (rows kept)": "UPDATE projection_positions SET position = 0",
    "positions set back halfway": "UPDATE projection_positions SET position = position / 2",
    "positions past the head": "UPDATE projection_positions SET position = position + 100",
    "a position row deleted (tables kept)": "DELETE FROM projection_positions WHERE name = 'work_items'",
    "the positions table dropped": "DROP TABLE projection_positions",
    "a table dropped (its position kept)": "DROP TABLE memory_entries",
    "a column dropped": "ALTER TABLE work_items DROP COLUMN error",
    "a table replaced by a view": "DROP TABLE checkpoints; CREATE VIEW checkpoints AS SELECT 1 AS x",
    "an index of another table takes our index's name": (
        "DROP INDEX work_items_task; CREATE INDEX work_items_task ON tasks (title)"),
    "a stray row that blocks an insert": (
        "INSERT INTO work_items SELECT 'wi_stray', task_id, kind, priority, input, status, attempt, retry_count, "
        "max_retries, token, lease_holder, lease_acquired_at, lease_expires_at, lease_ms, heartbeat_at, output, error, "
        "created_at, updated_at, enqueued_position, position + 1000 FROM work_items LIMIT 1"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_open_and_rebuild_repair_any_damage_to_projections_without_applying_an_event_twice(db_path, clock, damage):
    with eventkernel.open(db_path, clock=clock) as k:
        workload(k, clock)
        k.memory.put("ns", "key", 1)
        k.checkpoints.record("t0", "manual", None)
        expected = live_tables(k)
    conn = raw(db_path)
    conn.execute(DAMAGE[damage])
    conn.close()
    with eventkernel.open(db_path, clock=clock) as k:
        assert k.rebuild() == k.head
        assert live_tables(k) == expected
        assert k.verify().ok
    conn = raw(db_path)
    conn.execute(DAMAGE[damage])
    conn.close()
    with eventkernel.open(db_path, clock=clock) as k:  # open alone repairs what it can see
        report = k.verify()
        if damage == "a stray row that blocks an insert":
            assert not report.ok and "does not follow from the journal" in " ".join(report.problems)
            k.rebuild()
        assert live_tables(k) == expected
        assert k.verify().ok


def test_the_cli_rebuild_repairs_positions_set_to_zero(db_path, clock, capsys):
    from eventkernel.cli import main

    with eventkernel.open(db_path, clock=clock) as k:
        workload(k, clock)
        expected = live_tables(k)
    conn = raw(db_path)
    conn.execute("UPDATE projection_positions SET position = 0")
    conn.close()
    assert main(["rebuild", db_path]) == 0
    with eventkernel.open(db_path, clock=clock) as k:
        assert live_tables(k) == expected


@pytest.mark.parametrize("site", ["rebuild", "verify", "at", "diff"])
def test_a_command_from_a_progress_callback_is_refused_not_acknowledged_and_lost(k, clock, site):
    k.append("note:x", [Note(text="an application event")])
    with k.transaction():
        for i in range(10_000):
            k.work.enqueue("t", i)
    head = k.head
    refusals = []

    def progress(done, total):
        try:
            k.work.enqueue("from-callback", None)
        except eventkernel.ReadOnly as e:
            refusals.append(str(e))

    if site == "rebuild":
        k.rebuild(progress=progress)
    elif site == "verify":
        assert k.verify(progress=progress).ok
    elif site == "at":
        with k.at(head, progress=progress):
            pass
    else:
        k.diff(1, head, progress=progress)
    assert refusals and all(f"progress callback of {site if site != 'diff' else 'at'}" in r for r in refusals)
    assert k.head == head
    assert k.work.list(task_id="from-callback") == []
    k.work.enqueue("after", None)  # commands work again once it returned
    assert k.head == head + 1


class Note(eventkernel.Event, tag="test.projector_note"):
    text: str


def test_the_bulk_rebuild_folds_every_event_of_every_folded_projection_as_apply_does(k, clock):
    """Every branch of the folded projections' Fold, against live tables and
    against applying every event one by one."""
    s1 = k.sessions.create("app", "u1", state={"a": 1, "app:theme": "dark", "user:lang": "fr", "temp:x": 1},
                           metadata={"m": [1.5, None]})
    s2 = k.sessions.create("app", "u2", project_id="p")
    s3 = k.sessions.create("app", "u1")
    k.sessions.append_event(s1.session_id, actor="user", content={"text": "é"},
                            state_delta={"a": 2, "b": None, "app:theme": "light", "user:lang": "de", "temp:y": 2})
    k.sessions.append_event(s1.session_id, actor="agent", content=None, state_delta={"c": [1, {"d": 2}]})
    k.sessions.append_event(s2.session_id, actor="user", content="hi")
    k.sessions.set_status(s1.session_id, "paused")
    k.sessions.set_status(s2.session_id, "terminated")
    k.sessions.set_status(s3.session_id, "terminated")
    k.sessions.set_status(s3.session_id, "archived")
    k.memory.put("user:1", "k", {"v": 1}, metadata={"src": "chat"}, actor="a", ttl_ms=1_000)
    k.memory.put("user:1", "k", {"v": 2}, memory_type="episodic", actor="b")
    k.memory.delete("user:1", "k", actor="c")
    k.memory.restore("user:1", "k", actor="d")
    k.memory.rollback("user:1", "k", 1, actor="e")
    k.memory.put("user:1", "ttl", "short", ttl_ms=500)
    clock.advance(1_000)
    assert k.memory.expire() >= 1
    k.memory.restore("user:1", "ttl")  # restored after its TTL: it lives on without one
    k.memory.publish("user:1", "k", "shared:team", actor="f")
    k.memory.put("user:1", "touched", "v1", ttl_ms=5_000)
    clock.advance(100)
    assert k.memory.touch("user:1", "touched") is not None  # the newest version's deadline moves in place
    k.memory.put("user:1", "touched", "v2", metadata={"n": 1})  # and a later version supersedes it
    k.memory.put("user:1", "touched2", "v", ttl_ms=5_000)
    clock.advance(100)
    assert k.memory.touch("user:1", "touched2") is not None  # touched as the latest version, kept so
    k.checkpoints.record("task", "llm_response", {"n": [1, 2.25, "x"]}, work_item_id="wi_1", session_id=s1.session_id)
    k.checkpoints.record("task", "tool_executed", None)
    k.checkpoints.record("other", "manual", "done")
    k.recovery.set_auto_recovery("lonely", False)  # a task row made by the setting alone
    for message in ("timeout after 3000 ms", "timeout after 3100 ms", "timeout after 2900 ms"):
        k.recovery.record_failure("task", "tool_timeout", message)
    k.recovery.record_failure("other", "rate_limited", "429 too many requests",
                              context={"tool": "search", "args": {"q": "é", "n": [1, 2.5, None]}})
    first = k.recovery.start_attempt("task", "retry", reasoning="transient")
    k.recovery.start_attempt("other", "backoff")  # left running
    clock.advance(250)
    k.recovery.finish_attempt(first.attempt_id, success=False, notes="again")
    second = k.recovery.start_attempt("task", "reassign")
    clock.advance(100)
    k.recovery.finish_attempt(second.attempt_id, success=True)
    k.recovery.explain("task", failure_summary="s1", root_cause="r1", retry_decision="d1")
    k.recovery.explain("task", failure_summary="s2", root_cause="r2", retry_decision="d2", severity="high",
                       user_action_required="check the key")
    k.recovery.set_auto_recovery("task", False)
    k.recovery.set_auto_recovery("task", True)
    live = live_tables(k)
    assert rebuilt_tables(k) == live
    assert rebuilt_tables(k, bulk=False) == live


@pytest.mark.parametrize("second_thread", [True, False])
def test_a_long_rebuild_writes_finished_rows_as_it_goes_and_builds_the_same_tables(k, clock, monkeypatch,
                                                                                   second_thread):
    """Checkpoints and superseded memory versions are never changed once
    folded: past ``HELD_ROWS`` of them a build writes them (checked every
    ``FLUSH_ROWS`` journal rows) instead of holding them to the end, by a
    second thread or by the building one. With both made small, the tables
    are the live ones, row for row, and the folds held no more than the
    bound."""
    from eventkernel import projector
    from eventkernel.projections import checkpoints, memory_entries
    from eventkernel.projections import rows as rows_module

    monkeypatch.setattr(projector, "FLUSH_ROWS", 4096)
    monkeypatch.setattr(rows_module, "HELD_ROWS", 300)
    held: list[int] = []
    for fold in (checkpoints.Fold, memory_entries.Fold):
        flush = fold.flush

        def counting(self, conn, flush=flush, fold=fold):
            held.append(len(self.rows) if fold is checkpoints.Fold else len(self.superseded))
            flush(self, conn)

        monkeypatch.setattr(fold, "flush", counting)
    with k.transaction():
        for i in range(5_000):
            k.checkpoints.record(f"task-{i % 7}", "manual", {"i": i})
            k.memory.put(f"user:{i % 3}", f"k{i % 40}", {"v": i}, ttl_ms=None if i % 5 else 60_000)
            if i % 97 == 0:
                clock.advance(1)
                k.memory.touch(f"user:{i % 3}", f"k{i % 40}")
                k.memory.delete(f"user:{i % 3}", f"k{i % 40}")
    assert k.head > 2 * 4096
    live = live_tables(k)
    assert rebuilt_tables(k, second_thread=second_thread) == live
    assert len(held) >= 4 and max(held) < 300 + 4096  # flushed along the way, never more than a batch over
    assert any(n >= 300 for n in held)
    k.rebuild()
    assert live_tables(k) == live == rebuilt_tables(k, bulk=False)


def _aside_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "eventkernel-build"]


def test_a_build_writes_the_folds_set_aside_in_a_second_thread_and_the_rest_in_its_own(k, clock, monkeypatch):
    """Checkpoints, memory versions and sessions go to a second thread (as
    JSON, inserted by SQLite alone); the work queue (its rows, written at
    the end, are the building thread's share then) and the recovery tables
    (a REAL column, which JSON need not carry exactly) stay with the
    building thread. Both ways build the live tables."""
    import threading

    from eventkernel import projector

    wrote: dict[str, set[str]] = {}
    run = projector._Aside._run

    def spying(self):
        execute = self.db.execute

        def recorded(sql, *args):
            if sql.startswith("INSERT INTO "):
                wrote.setdefault(sql.split()[2], set()).add(threading.current_thread().name)
            return execute(sql, *args)

        self.db.execute = recorded
        run(self)

    monkeypatch.setattr(projector._Aside, "_run", spying)
    workload(k, clock)
    s = k.sessions.create("app", "ann", state={"n": 1})
    k.sessions.append_event(s.session_id, actor="user", content={"text": "hi"}, state_delta={"app:x": 1, "y": 2})
    k.checkpoints.record("task", "manual", {"step": 1})
    k.memory.put("ns", "key", {"v": 1})
    k.memory.put("ns", "key", {"v": 2})
    k.recovery.record_failure("task", "timeout", "slow")
    live = live_tables(k)
    assert rebuilt_tables(k, second_thread=True) == live
    assert wrote == {t: {"eventkernel-build"} for t in ("checkpoints", "memory_entries", "sessions",
                                                        "session_events", "session_shared_state")}
    wrote.clear()
    assert rebuilt_tables(k, second_thread=False) == live
    assert wrote == {}
    assert _aside_threads() == []


def test_rows_crossing_to_the_second_thread_keep_every_value_exactly(k, clock):
    """Text with control, line-separator and astral characters, quotes and
    backslashes, 64-bit integers and NULLs cross as JSON and come back as
    they were (a build of the kernel's tables, then the crossing itself
    with a NUL, which ids refuse)."""
    from eventkernel import projector
    from eventkernel.projections import checkpoints

    odd = "a\x01\x1f\u2028\U0001F600\"\\ é"
    for value in (odd, 2**63 - 1, -(2**63), None, "", {"nested": [odd + "\x00", 2**63 - 1, None, 1.5]}):
        k.checkpoints.record(f"task {odd}", "manual", value)
        k.memory.put(f"ns:{odd}", odd, value, metadata={"m": value})
    s = k.sessions.create(odd, odd, state={odd: odd, "big": 2**63 - 1})
    k.sessions.append_event(s.session_id, actor=odd, content=odd, state_delta={f"app:{odd}": -(2**63), odd: None})
    live = live_tables(k)
    assert rebuilt_tables(k, second_thread=True) == live == rebuilt_tables(k, bulk=False)

    rows = [(f"cp{i}", "t\x00" + odd, None, odd, "manual", i, value, 2**63 - 1 - i, -(2**63) + i)
            for i, value in enumerate([None, "", "\x00", odd + "\x00" + odd])]
    aside = projector._Aside(0)
    try:
        assert aside.take("checkpoints", k._projector.ddl_split(checkpoints)[0])
        aside.start()
        aside.writer("checkpoints").insert("checkpoints", checkpoints._COLS, rows)
        aside.finish()
        assert aside.db.execute(f"SELECT {checkpoints._COLS} FROM checkpoints ORDER BY sequence_number").fetchall() == rows
    finally:
        aside.close()


def test_a_second_database_that_cannot_be_attached_by_name_is_copied_row_by_row(k, clock, monkeypatch, caplog):
    from eventkernel import projector

    workload(k, clock)
    k.checkpoints.record("task", "manual", {"step": 1})
    k.memory.put("ns", "key", {"v": 1})
    start = projector._Aside.start

    def unreachable(self):
        self.db.uri = "file:/no-such-directory-here/x.db?mode=ro"
        start(self)

    monkeypatch.setattr(projector._Aside, "start", unreachable)
    assert rebuilt_tables(k, second_thread=True) == live_tables(k)
    assert "copying its rows" in caplog.text


@pytest.mark.parametrize(("cores", "fewest", "used"), [(2, 0, True), (1, 0, False), (2, 10**9, False)])
def test_a_build_takes_a_second_thread_by_default_only_with_two_cores_and_enough_rows(k, clock, monkeypatch, cores,
                                                                                        fewest, used):
    from eventkernel import projector

    workload(k, clock)
    k.checkpoints.record("task", "manual", {"step": 1})
    started: list[bool] = []
    start = projector._Aside.start
    monkeypatch.setattr(projector._Aside, "start", lambda self: (started.append(True), start(self)))
    monkeypatch.setattr(projector, "_cores", lambda: cores)
    monkeypatch.setattr(projector, "ASIDE_EVENTS", fewest)
    assert rebuilt_tables(k) == live_tables(k)
    assert started == ([True] if used else [])


def test_a_build_whose_second_database_cannot_be_made_runs_on_one_thread(k, clock, monkeypatch, caplog):
    from eventkernel import projector

    workload(k, clock)
    k.checkpoints.record("task", "manual", {"step": 1})

    def refused(self, upto):
        raise apsw.CantOpenError("no memdb here")

    monkeypatch.setattr(projector._Aside, "__init__", refused)
    assert rebuilt_tables(k, second_thread=True) == live_tables(k)
    assert "building on one thread" in caplog.text


def test_only_tables_of_text_and_integer_columns_are_set_aside():
    from eventkernel import projector
    from eventkernel.projections import checkpoints, recovery

    with eventkernel.open(":memory:") as k:
        aside = projector._Aside(0)
        try:
            assert aside.take("recovery", k._projector.ddl_split(recovery)[0]) is False
            assert aside.take("checkpoints", k._projector.ddl_split(checkpoints)[0]) is True
            assert aside.tables == {"checkpoints": "checkpoints"}
            assert [r[0] for r in aside.db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")] == [
                "checkpoints"]
        finally:
            aside.close()


@pytest.mark.parametrize("second_thread", [True, False])
def test_rows_a_table_refuses_fail_the_build_either_way_and_leave_no_thread(k, clock, monkeypatch, second_thread):
    """A fold's rows that break a constraint (two checkpoints with one id)
    fail the build, naming the projection, whichever thread wrote them; the
    second thread is stopped."""
    from eventkernel import projector
    from eventkernel.projections import checkpoints

    for i in range(3):
        k.checkpoints.record("task", "manual", {"i": i})
    write = checkpoints.Fold.write
    monkeypatch.setattr(checkpoints.Fold, "write", lambda self, out: (write(self, out), write(self, out)))
    with pytest.raises(eventkernel.ProjectionFailed, match=r"projection 'checkpoints' failed on the rows its fold "
                                                          r"made \(position 3\): ConstraintError: UNIQUE") as failed:
        k._projector.build_in_memory(k._db, second_thread=second_thread)
    assert isinstance(failed.value.__cause__, projector._ApplyFailed)
    assert _aside_threads() == []


def test_a_build_that_fails_while_folding_stops_its_second_thread(k, clock, monkeypatch):
    from eventkernel.projections import checkpoints

    for i in range(3):
        k.checkpoints.record("task", "manual", {"i": i})

    def broken(self, row):
        raise RuntimeError("a bug in a fold")

    monkeypatch.setattr(checkpoints.Fold, "add_row", broken)
    with pytest.raises(eventkernel.ProjectionFailed, match="a bug in a fold"):
        k._projector.build_in_memory(k._db, second_thread=True)
    assert _aside_threads() == []


def test_a_copy_stopped_half_way_leaves_the_projections_to_fold_what_it_wrote(tmp_path, monkeypatch):
    """``copy`` writes rows without folding them (it rebuilds at the end): a
    destination whose projections were at the head records where they were,
    so that its next open folds the rows a stopped copy left."""
    import shutil

    from eventkernel import transfer

    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    with eventkernel.open(src, snapshot_every=0) as k:
        for n in range(4):
            k.work.enqueue("t", {"n": n})
    shutil.copy(src, dst)  # (closed: no -wal) a destination at the head of the first 4
    with eventkernel.open(src, snapshot_every=0) as k:
        for n in range(4, 30):
            k.memory.put("ns", f"k{n % 5}", n)
    writes = []
    original = transfer._Sqlite.write

    def stop_after_one(self, rows, erased):  # type: ignore[no-untyped-def]
        if writes:
            raise OSError("the copy stops here")
        writes.append(len(rows))
        original(self, rows, erased)

    monkeypatch.setattr(transfer, "BATCH", 10)
    monkeypatch.setattr(transfer._Sqlite, "write", stop_after_one)
    with pytest.raises(OSError, match="stops here"):
        transfer.copy(src, dst)
    monkeypatch.undo()
    with eventkernel.open(dst, snapshot_every=0) as k:
        assert k.head == 14 and writes == [10]
        assert live_tables(k) == rebuilt_tables(k)
        assert _positions(k) == ({14}, {14})
        k.work.enqueue("t", {"n": 99})
        assert live_tables(k) == rebuilt_tables(k) and _positions(k) == ({15}, {AT_HEAD})
