from __future__ import annotations

import os
import threading
import time

import apsw
import pytest

import eventkernel
from eventkernel import connection, journal, migrations
from eventkernel.errors import ConcurrencyConflict, IdempotencyConflict, InvalidArgument

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking ``k`` run on a file and on PostgreSQL


class Said(eventkernel.Event, tag="test_journal.said"):
    text: str


def said(*texts: str) -> list[Said]:
    return [Said(text=t) for t in texts]


def test_positions_are_dense_from_one_and_versions_count_per_stream(k):
    assert k.head == 0
    assert k.append("chat:a", said("1", "2")) == 2
    assert k.append("chat:b", said("3")) == 3
    assert k.append("chat:a", said("4")) == 4
    rows = [(r.position, r.stream, r.version) for r in k.read()]
    assert rows == [(1, "chat:a", 1), (2, "chat:a", 2), (3, "chat:b", 1), (4, "chat:a", 3)]
    assert k.stream_version("chat:a") == 3
    assert k.stream_version("chat:none") == 0


def test_recorded_carries_everything_that_was_appended(k, clock):
    k.append("chat:a", said("hi"), event_ids=["e-1"], correlation_id="task-9", meta={"actor": "alice"})
    (r,) = k.read()
    assert r.event == Said(text="hi")
    assert (r.type, r.event_id, r.correlation_id, r.meta, r.recorded_at) == (
        "test_journal.said", "e-1", "task-9", {"actor": "alice"}, clock(),
    )
    assert len(r.hash) == 32


def test_expected_version_conflict_writes_nothing(k):
    k.append("chat:a", said("1"))
    with refused(k, ConcurrencyConflict, "expected version 0, the stream is at version 1"):
        k.append("chat:a", said("2"), expected_version=0)
    assert k.append("chat:a", said("2"), expected_version=1) == 2
    assert k.append("chat:new", said("x"), expected_version=0) == 3


def test_same_event_ids_and_content_return_the_original_position(k):
    first = k.append("chat:a", said("1", "2"), event_ids=["a", "b"])
    k.append("chat:z", said("other"))
    before = snapshot(k)
    assert k.append("chat:a", said("1", "2"), event_ids=["a", "b"]) == first
    assert snapshot(k) == before


def test_only_rows_with_an_event_id_are_in_its_unique_index(db_path, tmp_path):
    """A new file indexes the event ids that exist (an append without one
    writes no page of that index); a file made before keeps its index of
    every row. Both refuse an id used twice, and both accept any number of
    rows without one."""
    import shutil
    from pathlib import Path

    old = tmp_path / "v0_1_0.sqlite"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_0.sqlite", old)
    for path, partial in ((db_path, True), (str(old), False)):
        with eventkernel.open(path) as k:
            k.append("chat:a", said("1", "2", "3"))
            k.append("chat:b", said("x"), event_ids=["only-one"])
            with refused(k, IdempotencyConflict, "event id 'only-one' was already used"):
                k.append("chat:c", said("y"), event_ids=["only-one"])
            conn = k._db.conn
            sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'journal_event_id'").fetchone()
            with_ids = conn.execute("SELECT count(*) FROM journal WHERE event_id IS NOT NULL").fetchone()[0]
            if partial:
                assert sql is not None and "WHERE event_id IS NOT NULL" in sql[0]
                entries = conn.execute("SELECT sum(ncell) FROM dbstat WHERE name = 'journal_event_id' "
                                       "AND pagetype = 'leaf'").fetchone()[0]
                assert entries == with_ids < k.head
            else:
                assert sql is None  # (the column's own UNIQUE: an autoindex of every row)


def test_a_replayed_append_wins_over_expected_version(k):
    k.append("chat:a", said("1"), event_ids=["a"], expected_version=0)
    assert k.append("chat:a", said("1"), event_ids=["a"], expected_version=0) == 1


def test_event_id_with_other_content_is_a_conflict(k):
    k.append("chat:a", said("1"), event_ids=["a"])
    with refused(k, IdempotencyConflict, "event id 'a' was already used at position 1"):
        k.append("chat:a", said("changed"), event_ids=["a"])
    with refused(k, IdempotencyConflict, "already used"):
        k.append("chat:b", said("1"), event_ids=["a"])


def test_a_partial_repeat_is_a_conflict(k):
    k.append("chat:a", said("1"), event_ids=["a"])
    with refused(k, IdempotencyConflict, "repeat the original append exactly"):
        k.append("chat:a", said("1", "2"), event_ids=["a", "b"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stream": "NoKind"}, "must be named '<kind>:<id>'"),
        ({"stream": "chat:"}, "must be named"),
        ({"stream": ""}, "stream must not be empty"),
        ({"stream": 5}, "stream must be a str"),
        ({"events": []}, "non-empty list of Event"),
        ({"events": ["text"]}, "expected an Event instance"),
        ({"event_ids": ["a", "a"]}, "appears twice"),
        ({"event_ids": ["a"]}, "one id \\(or None\\) per event"),
        ({"event_ids": ["cmd:x", None]}, "reserved for command ids"),
        ({"expected_version": -1}, "expected_version must be an int >= 0"),
        ({"meta": {"x": float("nan")}}, "NaN"),
        ({"meta": "not a dict"}, "meta must be a dict"),
        ({"correlation_id": "a\x00b"}, "NUL"),
    ],
)
def test_bad_appends_are_refused_with_nothing_written(k, kwargs, match):
    args = {"stream": "chat:a", "events": said("1", "2")} | kwargs
    with refused(k, InvalidArgument, match):
        k.append(args.pop("stream"), args.pop("events"), **args)


def test_kernel_owned_events_cannot_be_appended_directly(k):
    from eventkernel.events.work import WorkItemCancelled

    with refused(k, InvalidArgument, "written only by the kernel's commands"):
        k.append("note:x", [WorkItemCancelled(work_item_id="x", reason="r")])


@pytest.mark.parametrize("stream", ["memory:ns/k", "checkpoint:t1", "work_item:x", "session:s", "task:t",
                                    "workflow:w", "agent:a", "idempotency:k", "recovery:t", "command:c"])
def test_application_events_cannot_go_to_the_kernels_own_streams(k, stream):
    k.memory.put("ns", "k", 1)
    k.checkpoints.record("t1", "manual", None)
    with refused(k, InvalidArgument, "only the kernel's own commands write"):
        k.append(stream, said("intruder"))
    # the domains' own rules still hold afterwards
    assert k.memory.put("ns", "k", 2, expected_version=1).version == 2
    assert k.checkpoints.record("t1", "manual", None).sequence_number == 2


def test_read_filters(k):
    k.append("chat:a", said("1"), correlation_id="t1")
    k.append("chat:b", said("2"), correlation_id="t2")
    k.append("chat:a", said("3"), correlation_id="t1")
    assert [r.position for r in k.read(stream="chat:a")] == [1, 3]
    assert [r.position for r in k.read(after=1)] == [2, 3]
    assert [r.position for r in k.read(limit=2)] == [1, 2]
    assert [r.position for r in k.read(correlation_id="t2")] == [2]
    assert [r.position for r in k.read(types=["test_journal.said"], after=2)] == [3]
    assert list(k.read(types=["nothing.here"])) == []


def test_read_pages_through_long_journals(k):
    with k.transaction():
        for i in range(2500):
            k.append(f"chat:{i % 3}", said(str(i)))
    assert [r.position for r in k.read()] == list(range(1, 2501))
    assert [r.version for r in k.read(stream="chat:1")] == list(range(1, 834))
    assert len(list(k.read(after=100, limit=1500))) == 1500


@pytest.mark.parametrize("engine", ["sqlite"])  # it works on the file itself
def test_journal_rows_cannot_be_updated_or_deleted(k, db_path):
    k.append("chat:a", said("1"))
    raw = apsw.Connection(db_path)
    try:
        with pytest.raises(apsw.ConstraintError, match="append-only: UPDATE refused"):
            raw.execute("UPDATE journal SET data = '{}'")
        with pytest.raises(apsw.ConstraintError, match="append-only: DELETE refused"):
            raw.execute("DELETE FROM journal")
    finally:
        raw.close()


def test_hash_chain_links_every_row(k):
    k.append("chat:a", said("1", "2", "3"))
    prev = journal.GENESIS_HASH
    for row in journal.read_rows(k._db.conn):
        assert row[10] == journal.row_hash(prev, *row[:10])
        prev = row[10]


def test_migrations_are_recorded_and_applied_once_and_the_file_is_marked(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        rows = k._db.conn.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
    assert rows == [(1, "journal", clock()), (2, "views", clock()), (3, "chain_over_digests", clock()),
                    (4, "erasure", clock()), (5, "snapshots", clock()), (6, "compaction", clock()),
                    (7, "positions_at_head", clock())]
    clock.advance(10)
    with eventkernel.open(db_path, clock=clock) as k:
        assert k._db.conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (7,)
    raw = apsw.Connection(db_path)
    assert raw.pragma("application_id") == 0x45764B6E
    assert raw.pragma("user_version") == 7
    assert raw.pragma("auto_vacuum") == 2  # incremental
    raw.close()


def test_the_analytics_views(k, clock):
    item = k.work.enqueue("task-1", None)
    claimed = k.work.claim("w1", lease_ms=500)
    row = k._db.conn.execute(
        "SELECT stream_kind, stream_id, type, command, correlation_id, recorded_at_iso FROM journal_events "
        "WHERE position = 2"
    ).fetchone()
    assert row[:5] == ("work_item", item, "work_item.claimed", "work.claim", "task-1")
    assert row[5] == "2023-11-14T22:13:20.000Z"
    assert k._db.conn.execute("SELECT event, worker, token, lease_expires_at, task_id FROM work_item_events ORDER BY position").fetchall() == [
        ("enqueued", None, None, None, "task-1"), ("claimed", "w1", 1, claimed.lease_expires_at, "task-1")]


def test_a_file_from_a_newer_version_is_refused(db_path):
    eventkernel.open(db_path).close()
    raw = apsw.Connection(db_path)
    raw.pragma("user_version", 99)
    raw.close()
    with pytest.raises(eventkernel.NotAJournal, match="upgrade eventkernel"):
        eventkernel.open(db_path)


def test_migration_files_are_numbered_without_gaps():
    versions = [v for v, _, _ in migrations.journal_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_durability_settings(db_path):
    with eventkernel.open(db_path) as k:
        conn = k._db.conn
        assert conn.pragma("journal_mode") == "wal"
        assert conn.pragma("synchronous") == 2  # FULL
    with eventkernel.open(db_path, synchronous="normal") as k:
        assert k._db.conn.pragma("synchronous") == 1
    with pytest.raises(InvalidArgument, match="synchronous must be 'full' or 'normal'"):
        eventkernel.open(db_path, synchronous="off")  # type: ignore[arg-type]


def test_every_connection_keeps_its_plans_from_prepare(db_path):
    # Otherwise SQLite may prepare a statement again at each run with new bound values, and
    # APSW's 100 cached statements dropped a projection's before its next run.
    def kept(conn: apsw.Connection) -> bool:
        return (conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 1
                and conn.cache_stats()["size"] == connection.STATEMENTS > 100)

    with eventkernel.open(db_path, snapshot_every=2) as k:
        for i in range(5):
            k.work.enqueue("t", {"n": i})
        with k._db.read() as reader:
            assert kept(reader)
        assert kept(k._db.conn)
        with k.at(4) as view:  # from a snapshot
            assert view._db.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 1
        with k.at(1) as view:  # replayed
            assert kept(view._db.conn)
    with eventkernel.open(":memory:") as k:
        assert kept(k._db.conn)
    with eventkernel.open(db_path, read_only=True) as k, k._db.read() as reader:
        assert kept(reader)


def test_a_failed_commit_is_outcome_unknown_and_the_connection_is_reopened(k):
    old = k._db.conn
    old.set_commit_hook(lambda: True)  # turns the COMMIT into a failure
    with pytest.raises(eventkernel.CommitOutcomeUnknown, match="may or may not be durable") as e:
        k.append("chat:a", said("1"), event_ids=["e1"])
    assert isinstance(e.value.__cause__, apsw.Error)
    assert k._db.conn is not old
    # The retry with the same event id is safe either way.
    assert k.append("chat:a", said("1"), event_ids=["e1"]) == 1
    assert k.append("chat:a", said("1"), event_ids=["e1"]) == 1
    assert k.head == 1


def test_checkpoint_is_explicit(k):
    k.append("chat:a", said("1"))
    wal_pages, copied = k.checkpoint("truncate")
    assert wal_pages == copied == 0  # truncated: the WAL is empty afterwards
    with pytest.raises(InvalidArgument, match="mode must be one of"):
        k.checkpoint("sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_the_wal_stays_bounded_by_checkpoints_after_commits(db_path, synchronous):
    with eventkernel.open(db_path, synchronous=synchronous) as k:
        k._db.wal_checkpoint_pages = 50
        for i in range(1000):
            k.work.enqueue("t", {"n": i})
        # Unbounded, 1,000 commits of ~12 pages each would be ~48 MiB of WAL;
        # a checkpointed WAL is reused from its start and stops growing. Under
        # NORMAL it is copied on the checkpointer's thread while commits go on,
        # so it passes its bound by what they commit meanwhile (the thread
        # waits for the GIL: up to 5 ms at a time while the writer runs Python).
        # (FULL: the committing thread copies at the bound, the WAL stays near it; about 0.5 MB here)
        assert os.path.getsize(db_path + "-wal") < (1_000_000 if synchronous == "full" else 8_000_000)
        assert k.verify().ok


class _ThreadsWriting(apsw.VFS):
    """Records which thread writes each page of the database file itself (a
    checkpoint copying the WAL back); ``fail``: that many of the
    checkpointer thread's writes fail first."""

    def __init__(self, name: str, fail: int = 0) -> None:
        self.writers: list[str] = []
        self.fail = fail
        super().__init__(name, "")

    def xOpen(self, name, flags):  # type: ignore[no-untyped-def]
        vfs = self

        class File(apsw.VFSFile):
            def xWrite(self, data, offset):  # type: ignore[no-untyped-def]
                if path.endswith(".db"):
                    who = threading.current_thread().name
                    if who == "eventkernel-checkpoint" and vfs.fail > 0:
                        vfs.fail -= 1
                        raise apsw.IOError("injected")
                    vfs.writers.append(who)
                super().xWrite(data, offset)

        path = name if isinstance(name, str) or name is None else name.filename()
        path = path or ""
        return File("", name, flags)


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_under_normal_a_thread_of_its_own_copies_the_wal_back(db_path, synchronous):
    """The commit that passes the WAL's bound does not copy it: under NORMAL,
    the checkpointer's thread does (the commit after it copies only what was
    committed meanwhile); under FULL the commit does. Closing ends the thread
    and removes the -wal."""
    vfs = _ThreadsWriting("threads-writing")
    try:
        k = eventkernel.open(db_path, synchronous=synchronous, vfs="threads-writing")
        k._db.wal_checkpoint_pages = 50
        for i in range(200):
            k.work.enqueue("t", {"n": i, "text": "x" * 300})
        k.close()
    finally:
        vfs.unregister()
    by_thread = {who: vfs.writers.count(who) for who in set(vfs.writers)}
    if synchronous == "normal":
        assert by_thread.get("eventkernel-checkpoint", 0) > by_thread.get("MainThread", 0) > 0, by_thread
    else:
        assert "eventkernel-checkpoint" not in by_thread and by_thread["MainThread"] > 0, by_thread
    assert not [t for t in threading.enumerate() if t.name == "eventkernel-checkpoint"]
    assert not os.path.exists(db_path + "-wal")
    with eventkernel.open(db_path) as k:
        assert k.verify().ok and k.head == 200


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_a_reader_holding_old_pages_is_not_checkpointed_against_at_every_commit(db_path, synchronous, monkeypatch):
    """While a reader's snapshot needs pages the WAL holds, a checkpoint
    cannot copy past them: the kernel then tries again only once the WAL has
    grown by a quarter of its bound, not after every commit; once the reader
    ends, the WAL is copied back and used again from its start."""
    tries: list[str] = []
    copy = connection._Checkpointer._copy
    monkeypatch.setattr(connection._Checkpointer, "_copy",
                        lambda self, conn: (tries.append("thread"), copy(self, conn))[1])
    with eventkernel.open(db_path, synchronous=synchronous) as k:
        k._db.wal_checkpoint_pages = 400
        now = k._db._checkpoint_now
        monkeypatch.setattr(k._db, "_checkpoint_now", lambda: (tries.append("commit"), now())[1])
        for i in range(100):
            k.work.enqueue("t", {"n": i})
        reader = apsw.Connection(db_path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM journal").fetchone()  # its snapshot: the head now
        tries.clear()
        for i in range(1000):  # ~9 pages each: 9,000 pages past the reader's snapshot
            k.work.enqueue("t", {"n": i})
        # Each try after a commit past the bound would be ~1,000 here (two tries for every two
        # commits under NORMAL: the thread's, then the commit's); one per 100 pages is ~90.
        assert 0 < len(tries) < 250, len(tries)
        reader.execute("COMMIT")
        reader.close()
        more = 0
        while k._db._wal_pages > 400 + 100 + 20 and more < 3000:  # (a copy of ~10,000 pages on the thread)
            k.work.enqueue("t", {"n": more})
            more += 1
        assert k._db._wal_pages < 400 + 100 + 20, more  # started again from its beginning
        assert k.verify().ok and k.head == 1100 + more


def test_a_failed_checkpoint_on_its_thread_is_logged_and_tried_again(db_path, caplog):
    vfs = _ThreadsWriting("failing-checkpoints", fail=3)
    try:
        with eventkernel.open(db_path, synchronous="normal", vfs="failing-checkpoints") as k:
            k._db.wal_checkpoint_pages = 50
            for i in range(1000):
                k.work.enqueue("t", {"n": i})  # every commit succeeds
            assert vfs.fail == 0 and "WAL checkpoint of" in caplog.text
            assert os.path.getsize(db_path + "-wal") < 8_000_000  # later rounds copied it
            assert k.verify().ok and k.head == 1000
    finally:
        vfs.unregister()


def test_an_explicit_checkpoint_waits_for_the_checkpointer_thread(db_path):
    """SQLite refuses a second checkpointer at once (SQLITE_BUSY): a
    checkpoint asked for while the thread copies waits for it instead."""
    with eventkernel.open(db_path, synchronous="normal") as k:
        k._db.wal_checkpoint_pages = 20
        failures: list[BaseException] = []
        done = threading.Event()

        def write() -> None:
            try:
                for i in range(60):
                    k.work.enqueue("t", {"n": i, "text": "x" * 2000})
            except BaseException as e:  # pragma: no cover - the assertion below reports it
                failures.append(e)
            finally:
                done.set()

        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set():
            k.checkpoint("passive")
            time.sleep(0.002)  # (the write lock is not fair: let the writer have it)
        writer.join()
        assert failures == []
        assert k.checkpoint("truncate") == (0, 0)


def test_busy_is_reported_as_journal_busy(db_path):
    with eventkernel.open(db_path, busy_timeout_ms=50) as a, eventkernel.open(db_path, busy_timeout_ms=50) as b:
        with a.transaction():
            a.append("chat:a", said("1"))
            with pytest.raises(eventkernel.JournalBusy, match="locked by another connection"):
                b.append("chat:a", said("2"))
        assert b.head == 1


@pytest.mark.parametrize("expected", [0, 1, 2, 4, 9])
def test_every_wrong_expected_version_is_a_conflict(k, expected):
    k.append("chat:a", said("1", "2", "3"))
    with refused(k, ConcurrencyConflict, f"expected version {expected}, the stream is at version 3"):
        k.append("chat:a", said("x"), expected_version=expected)
    assert k.append("chat:a", said("4"), expected_version=3) == 4
