"""The projections' tables on the PostgreSQL server (eventkernel.pgtables):
every kernel on a URL keeps the server's copy of each projection table equal
to its replica's, in the transaction of its journal rows, whoever wrote the
journal before it (other kernels, kernels keeping other tables, a bare
journal writer) — so that SQL on the server reads what the kernel reads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

import eventkernel
from eventkernel import pgtables, postgres
from eventkernel.errors import CommandRejected, InvalidArgument, JournalError

from support import fill, kept_tables, live_tables, rebuilt_tables, refused, server_tables, until


class Noted(eventkernel.Event, tag="pgtables.noted"):
    author: str
    text: str


NOTES_V1 = SimpleNamespace(
    NAME="notes", VERSION=1, HANDLES=frozenset({"pgtables.noted"}),
    DDL="CREATE TABLE notes (position INTEGER PRIMARY KEY, author TEXT NOT NULL, text TEXT NOT NULL)",
    apply=lambda conn, r, e: conn.execute("INSERT INTO notes VALUES (?, ?, ?)", (r.position, e.author, e.text)),
)
NOTES_V2 = SimpleNamespace(
    NAME="notes", VERSION=2, HANDLES=frozenset({"pgtables.noted"}),
    DDL="CREATE TABLE notes (author TEXT PRIMARY KEY, count INTEGER NOT NULL, last_text TEXT) STRICT",
    apply=lambda conn, r, e: conn.execute(
        "INSERT INTO notes VALUES (?, 1, ?) ON CONFLICT (author) DO UPDATE SET count = count + 1, "
        "last_text = excluded.last_text", (e.author, e.text)),
)


def _server(url: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO eventkernel")
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_the_server_holds_every_projection_table_as_the_replicas_hold_them(pg_url: str) -> None:
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        fill(a, 60, seed=1)
        fill(b, 60, seed=2)
        a.work.enqueue("last", {"n": 1})
        until(lambda: b.head == a.head)
        for k in (a, b):
            assert server_tables(k) == kept_tables(k)
            assert live_tables(k) == rebuilt_tables(k)
        # a virtual table (a full-text index) stays in the replica; every other table is on the server
        assert set(a._replica.tables) == {t for names in a._projector.tables.values() for t in names} \
            - a._projector.virtual  # type: ignore[union-attr]
        # what an analytics script on the server reads is what the kernel reads
        by_status = dict(_server(pg_url, "SELECT status, count(*) FROM work_items GROUP BY status"))
        assert by_status == {s: len(a.work.list(status=s)) for s in by_status}
        assert sum(by_status.values()) == len(a.work.list())
        value = _server(pg_url, "SELECT value::jsonb FROM memory_entries WHERE is_deleted = 0 "
                                "ORDER BY namespace, key, version DESC LIMIT 1")
        assert value and isinstance(value[0][0], dict)
        # the head records that the tables reflect it, so the next commit sends only its changes
        head, kept_at, digest = _server(pg_url, "SELECT position, tables_position, tables FROM journal_head")[0]
        assert head == kept_at == a.head and digest == a._replica.digest  # type: ignore[union-attr]


def test_a_refused_command_changes_no_server_table(pg_url: str) -> None:
    with eventkernel.open(pg_url) as k:
        item = k.work.enqueue("t", {})
        claimed = k.work.claim("w", lease_ms=60_000)
        assert claimed is not None
        with refused(k, eventkernel.LeaseNotHeld):  # (the snapshot includes the server's tables)
            k.work.complete(item, "someone-else", claimed.token)
        with refused(k, eventkernel.KernelError), k.transaction():
            k.work.enqueue("u", {})
            k.memory.put("user:x", "k", 1)
            raise eventkernel.InvalidArgument("undo the whole transaction")
        assert server_tables(k) == kept_tables(k)


def test_writers_that_do_not_keep_the_tables_are_caught_up_whole(pg_url: str) -> None:
    """A bare journal writer (its events folded by an application projection)
    and a kernel opened with ``server_tables=False`` leave the server's tables
    behind the head; the next kernel that keeps them copies them whole."""
    with eventkernel.open(pg_url, projections=[NOTES_V1]) as k:
        k.append("note:1", [Noted(author="ann", text="first")])
        with postgres.open_journal(pg_url) as j:
            j.append("note:2", [Noted(author="bob", text="from the journal alone")])
        with eventkernel.open(pg_url, server_tables=False) as bare:
            bare.work.enqueue("t", {"by": "a kernel without the tables"})
        assert _server(pg_url, "SELECT count(*) FROM work_items") == [(0,)]
        assert [r[1] for r in _server(pg_url, "SELECT * FROM notes ORDER BY position")] == ["ann"]
        k.memory.put("user:k", "k", 1)
        assert server_tables(k) == kept_tables(k)
        assert [r[1] for r in _server(pg_url, "SELECT * FROM notes ORDER BY position")] == ["ann", "bob"]
        assert _server(pg_url, "SELECT count(*) FROM work_items") == [(1,)]


def test_kernels_keeping_different_projections_keep_each_others_tables_current(pg_url: str) -> None:
    """B lacks the application's projection: A copies that table whole after
    B's events, and each keeps the tables it has."""
    with eventkernel.open(pg_url, projections=[NOTES_V1]) as a, eventkernel.open(pg_url) as b:
        a.append("note:1", [Noted(author="ann", text="one")])
        b.append("note:2", [Noted(author="bob", text="two")])  # B folds no notes
        b.work.enqueue("t", {})
        a.memory.put("user:a", "k", 1)
        assert server_tables(a) == kept_tables(a)
        assert len(_server(pg_url, "SELECT * FROM notes")) == 2
        b.memory.put("user:b", "k", 2)
        assert server_tables(b) == kept_tables(b)
        assert len(_server(pg_url, "SELECT * FROM notes")) == 2
        until(lambda: a.head == b.head)
        assert server_tables(a) == kept_tables(a)


def test_a_new_version_of_a_projection_replaces_its_server_table_on_open(pg_url: str) -> None:
    with eventkernel.open(pg_url, projections=[NOTES_V1]) as k:
        for i in range(5):
            k.append(f"note:{i}", [Noted(author=f"a{i % 2}", text=f"t{i}")])
        assert len(_server(pg_url, "SELECT * FROM notes")) == 5
    with eventkernel.open(pg_url, projections=[NOTES_V2]) as k:
        # opening rebuilds the replica's notes and brings the server's up to date before any command
        assert sorted(_server(pg_url, "SELECT author, count, last_text FROM notes")) == [("a0", 3, "t4"),
                                                                                          ("a1", 2, "t3")]
        assert server_tables(k) == kept_tables(k)
        entry = _server(pg_url, "SELECT entry FROM projection_tables WHERE name = 'notes'")[0][0]
        assert entry.startswith("notes:notes@2:")
        comment = _server(pg_url, "SELECT obj_description('notes'::regclass)")[0][0]
        assert "projection notes" in comment


def test_an_erasure_reaches_the_server_tables(pg_url: str) -> None:
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        a.memory.put("user:ann", "email", "ann@example.com")
        b.memory.put("user:bob", "email", "bob@example.com")
        found = [e for e in a.log() if e.stream.startswith("memory:")]
        a.erase(stream=found[0].stream, reason="right to erasure")
        values = [r[0] for r in _server(pg_url, "SELECT value FROM memory_entries")]
        assert not any("ann@example.com" in str(v) for v in values)
        assert any("bob@example.com" in str(v) for v in values)
        assert server_tables(a) == kept_tables(a)
        b.work.enqueue("after", {})
        assert server_tables(b) == kept_tables(b)


def test_a_value_the_server_column_cannot_hold_is_refused_and_writes_nothing(pg_url: str) -> None:
    """A non-STRICT table lets SQLite keep text in an INTEGER column; the
    server's bigint cannot: the command is refused, naming the column."""
    sloppy = SimpleNamespace(
        NAME="sloppy", VERSION=1, HANDLES=frozenset({"pgtables.noted"}),
        DDL="CREATE TABLE sloppy (author TEXT PRIMARY KEY, n INTEGER)",
        apply=lambda conn, r, e: conn.execute("INSERT OR REPLACE INTO sloppy VALUES (?, ?)", (e.author, e.text)),
    )
    with eventkernel.open(pg_url, projections=[sloppy]) as k:
        k.append("note:1", [Noted(author="ann", text="12")])  # text that looks like a number is stored as one
        with refused(k, CommandRejected, match="column 'n' of table 'sloppy'.*bigint"):
            k.append("note:2", [Noted(author="bob", text="twelve")])
        assert server_tables(k) == kept_tables(k)


def test_a_table_the_kernel_does_not_own_is_never_replaced(pg_url: str) -> None:
    with eventkernel.open(pg_url, server_tables=False):
        pass  # (makes the schema)
    _server(pg_url, "CREATE TABLE notes (mine text)")
    _server(pg_url, "INSERT INTO notes VALUES ('keep me')")
    with pytest.raises(JournalError, match="holds a table 'notes' that is not eventkernel's"):
        eventkernel.open(pg_url, projections=[NOTES_V1])
    assert _server(pg_url, "SELECT * FROM notes") == [("keep me",)]
    assert _server(pg_url, "SELECT count(*) FROM projection_tables") == [(0,)]


def test_a_projection_table_named_as_the_servers_own_is_refused(pg_url: str) -> None:
    clash = SimpleNamespace(NAME="clash", VERSION=1, HANDLES=frozenset({"pgtables.noted"}),
                            DDL="CREATE TABLE table_sets (k TEXT PRIMARY KEY)", apply=lambda *a: None)
    with pytest.raises(InvalidArgument, match="'table_sets', a name the journal on PostgreSQL uses"):
        eventkernel.open(pg_url, projections=[clash])
    assert "table_sets" in pgtables.RESERVED


def test_without_server_tables_the_server_holds_the_journal_alone(pg_url: str) -> None:
    with eventkernel.open(pg_url, server_tables=False) as k:
        k.work.enqueue("t", {})
        assert k._replica.tables == {}  # type: ignore[union-attr]
    assert _server(pg_url, "SELECT to_regclass('work_items')") == [(None,)]
    assert _server(pg_url, "SELECT count(*) FROM journal") == [(1,)]


def test_verify_compares_the_server_tables_with_the_replicas(pg_url: str) -> None:
    with eventkernel.open(pg_url) as k:
        fill(k, 30)
        k.memory.put("user:v", "k", 1)
        k.work.enqueue("pending", {})
        assert k.verify().ok
        _server(pg_url, "UPDATE work_items SET status = 'completed' WHERE status = 'pending'")
        _server(pg_url, "DELETE FROM memory_entries WHERE version = 1")
        report = k.verify()
        assert not report.ok
        assert any("server's table 'work_items' is not the replica's" in p for p in report.problems)
        assert any("server's table 'memory_entries'" in p and "0 rows only on the server" in p
                   for p in report.problems)
        with eventkernel.open(pg_url, server_tables=False) as bare:
            bare.work.enqueue("t", {})
        report = k.verify()
        assert report.ok and any("not compared" in n for n in report.notes)
        k.memory.put("user:k", "k", 1)  # copies them whole: the tampering is gone
        assert k.verify().ok and not any("not compared" in n for n in k.verify().notes)


def test_text_postgres_cannot_hold_is_escaped_one_value_for_one_value(pg_url: str) -> None:
    """LangGraph's ids may hold NUL, which SQLite's text keeps and
    PostgreSQL's refuses: the server holds it escaped (U+FFFF "0"; U+FFFF
    itself doubled), so distinct ids stay distinct rows."""
    assert pgtables.escape("plain") == "plain"
    assert pgtables.escape("a\x00b") == "a\uffff0b"
    assert pgtables.escape("a\uffff0b") == "a\uffff\uffff0b"  # not the escaped NUL above
    threads = ["odd\x00thread", "odd\uffff0thread", "odd\uffffthread", "oddthread"]
    with eventkernel.open(pg_url) as k:
        for i, thread in enumerate(threads):
            k.graphs.put(thread_id=thread, checkpoint_ns="", checkpoint_id="cp-1",
                         checkpoint=("json", b"{}"), channel_versions={"c": 1}, metadata={"step": i},
                         values={"c": (1, ("json", b"1"))}, parent_checkpoint_id=None)
        assert server_tables(k) == kept_tables(k)
        held = sorted(r[0] for r in _server(pg_url, "SELECT DISTINCT thread_id FROM graph_checkpoints"))
        assert held == sorted(pgtables.escape(t) for t in threads) and len(set(held)) == 4
        k.graphs.delete_thread("odd\x00thread")
        assert server_tables(k) == kept_tables(k)
        assert len(_server(pg_url, "SELECT DISTINCT thread_id FROM graph_checkpoints")) == 3
        assert k.verify().ok


def _same_as_a_fold(k: Any) -> None:
    assert live_tables(k) == rebuilt_tables(k) == rebuilt_tables(k, bulk=False)
    assert server_tables(k) == kept_tables(k)
    report = k.verify()
    assert report.ok, report.problems


def test_a_new_replica_starts_from_the_servers_tables(pg_url: str) -> None:
    """An empty replica copies the journal and the server's tables (in one
    snapshot of the server) instead of folding every event: the same tables
    as a fold, full-text index included (folded here), text escaped on the
    server given back exactly."""
    with eventkernel.open(pg_url) as a:
        fill(a, 80)
        a.documents.index("notes/leases.txt", title="Leases", content="a lease is renewed by a heartbeat")
        a.graphs.put(thread_id="odd\x00thread\uffff", checkpoint_ns="", checkpoint_id="cp-1",
                     checkpoint=("json", b"{}"), channel_versions={"c": 1}, metadata={"step": 1},
                     values={"c": (1, ("json", b"1"))}, parent_checkpoint_id=None)
        with eventkernel.open(pg_url) as b:
            assert b._replica.seeded == a.head  # type: ignore[union-attr]
            assert live_tables(b) == live_tables(a)
            assert [h.file_path for h in b.documents.search("heartbeat")] == ["notes/leases.txt"]
            _same_as_a_fold(b)
            b.work.enqueue("after the seed", {})
            until(lambda: a.head == b.head)
            assert live_tables(a) == live_tables(b)


def test_a_replica_is_seeded_page_by_page_and_a_seed_cut_short_copies_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The server's tables are copied in pages (never held whole in memory),
    in one transaction of the replica: the same tables in pages of 7 rows;
    and a seed whose server read fails after the first page leaves no table
    half-copied (the next open folds the journal it copied)."""
    with eventkernel.open(pg_url) as a:
        fill(a, 60)
        assert len(a.table("work_items")[1]) > 7
        monkeypatch.setattr(postgres.Replica.seed, "__defaults__", (7,))
        with eventkernel.open(pg_url) as b:
            assert b._replica.seeded == a.head  # type: ignore[union-attr]
            assert live_tables(b) == live_tables(a)
            _same_as_a_fold(b)
        read = pgtables.Table.read

        def cut_short(self: pgtables.Table, raw: Any, batch: int) -> Any:
            pages = read(self, raw, batch)
            yield next(pages)
            if self.name == "work_items":
                raise psycopg.OperationalError("the server went away mid-table")
            yield from pages

        monkeypatch.setattr(pgtables.Table, "read", cut_short)
        replica = str(tmp_path / "second.db")
        with pytest.raises(JournalError, match="copying the server's journal and tables"):
            eventkernel.open(pg_url, replica=replica)
        monkeypatch.setattr(pgtables.Table, "read", read)
        with eventkernel.open(pg_url, replica=replica) as c:
            assert c._replica.seeded == 0  # type: ignore[union-attr]  (its journal was copied: folded)
            assert live_tables(c) == live_tables(a)
            _same_as_a_fold(c)


def test_a_replica_is_not_seeded_from_tables_it_cannot_trust(pg_url: str) -> None:
    """Tables of another set of projections, or written before an erasure
    they do not show, are not copied: the replica folds the journal."""
    with eventkernel.open(pg_url, projections=[NOTES_V1]) as a:
        a.append("note:1", [Noted(author="ann", text="one")])
        fill(a, 20)
        with eventkernel.open(pg_url) as b:  # it keeps no notes: another set of tables
            assert b._replica.seeded == 0  # type: ignore[union-attr]
            _same_as_a_fold(b)
    with eventkernel.open(pg_url) as c:
        c.memory.put("user:ann", "email", "ann@example.com")
        c.memory.put("user:bob", "email", "bob@example.com")
        with eventkernel.open(pg_url, server_tables=False) as bare:
            bare.erase(stream="memory:user:ann/email", reason="right to erasure")
    with eventkernel.open(pg_url) as d:  # the server's tables predate the erasure: folded, not copied
        assert d._replica.seeded == 0  # type: ignore[union-attr]
        values = [str(r) for r in d.table("memory_entries")[1]]
        assert not any("ann@example.com" in v for v in values) and any("bob@example.com" in v for v in values)
        _same_as_a_fold(d)


def test_an_erasure_empties_the_server_copies_this_process_does_not_keep(pg_url: str) -> None:
    """A process without an application's projection (or keeping no server
    tables) erases a subject: the server's copies of the tables it does not
    keep are emptied in the erasure's transaction (they could hold what it
    removed), and the next process keeping them copies them whole again."""
    with eventkernel.open(pg_url, projections=[NOTES_V1]) as a:
        a.append("note:1", [Noted(author="ann", text="a secret")])
        a.append("note:2", [Noted(author="bob", text="plain")])
        a.memory.put("user:ann", "email", "ann@example.com")
        with eventkernel.open(pg_url) as b:
            b.erase(stream="note:1", reason="gdpr")
        assert _server(pg_url, "SELECT * FROM notes") == []
        a.append("note:3", [Noted(author="cy", text="later")])  # the keeper copies its table whole
        assert [r[2] for r in _server(pg_url, "SELECT * FROM notes ORDER BY position")] == ["plain", "later"]
        assert server_tables(a) == kept_tables(a)
        with eventkernel.open(pg_url, server_tables=False) as bare:
            bare.erase(stream="memory:user:ann/email", reason="gdpr")
        assert _server(pg_url, "SELECT count(*) FROM memory_entries") == [(0,)]
        a.append("note:4", [Noted(author="dee", text="x")])
        until(lambda: server_tables(a) == kept_tables(a))
        assert not any("ann@example.com" in str(r) for r in _server(pg_url, "SELECT * FROM memory_entries"))
        assert a.verify().ok


def test_a_table_without_a_primary_key_stays_in_the_replicas(pg_url: str) -> None:
    log = SimpleNamespace(
        NAME="note_log", VERSION=1, HANDLES=frozenset({"pgtables.noted"}),
        DDL="CREATE TABLE note_log (author TEXT NOT NULL, text TEXT NOT NULL)",
        apply=lambda conn, r, e: conn.execute("INSERT INTO note_log VALUES (?, ?)", (e.author, e.text)),
    )
    with eventkernel.open(pg_url, projections=[log, NOTES_V1]) as a:
        a.append("note:1", [Noted(author="ann", text="one")])
        assert "note_log" not in a._replica.tables and "notes" in a._replica.tables  # type: ignore[union-attr]
        assert _server(pg_url, "SELECT to_regclass('note_log')") == [(None,)]
        with eventkernel.open(pg_url, projections=[log, NOTES_V1]) as b:  # seeded; note_log folded here
            assert b._replica.seeded == a.head  # type: ignore[union-attr]
            assert b.table("note_log")[1] == [("ann", "one")]
            _same_as_a_fold(b)


def test_an_sqlite_error_reading_the_changes_is_the_kernels_and_writes_nothing(pg_url: str,
                                                                               monkeypatch: Any) -> None:
    import apsw

    with eventkernel.open(pg_url) as k:
        k.work.enqueue("first", {})

        def broken(self: Any, changeset: bytes, skip: Any = ()) -> None:
            raise apsw.IOError("disk I/O error")

        monkeypatch.setattr(pgtables.Changes, "add", broken)
        with refused(k, eventkernel.KernelError, "reading the replica's changes for the server's projection"):
            k.work.enqueue("second", {})
        monkeypatch.undo()
        k.work.enqueue("third", {})  # the server's transaction was rolled back: its lock is free
        assert [i.task_id for i in k.work.list()] == ["first", "third"]
        assert server_tables(k) == kept_tables(k)
