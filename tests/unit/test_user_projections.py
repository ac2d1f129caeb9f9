"""The application's own read models, registered at open: applied inline,
caught up, rebuilt, verified and time-travelled exactly like the kernel's
own — a plain table, an FTS5 table and a WITHOUT ROWID table."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import apsw
import pytest

import eventkernel
from eventkernel.errors import JournalError, ProjectionFailed

from support import live_tables, open_kernel, rebuilt_tables, refused, server_tables_hold, snapshot

BOTH_ENGINES = True  # the tests taking `uk` run on a file and on PostgreSQL (conftest)


class Noted(eventkernel.Event, tag="userproj.noted"):
    author: str
    text: str


def _per_author(conn, recorded, event):
    if isinstance(event, Noted):
        conn.execute(
            "INSERT INTO notes_per_author (author, notes, last_position) VALUES (?, 1, ?) "
            "ON CONFLICT (author) DO UPDATE SET notes = notes + 1, last_position = excluded.last_position",
            (event.author, recorded.position),
        )
    else:  # a kernel event: work_item.completed
        conn.execute("INSERT INTO notes_per_author VALUES ('(work)', 1, ?) ON CONFLICT (author) DO UPDATE SET "
                     "notes = notes + 1, last_position = excluded.last_position", (recorded.position,))


PER_AUTHOR = SimpleNamespace(
    NAME="notes_per_author", VERSION=1, HANDLES=frozenset({"userproj.noted", "work_item.completed"}),
    DDL="CREATE TABLE notes_per_author (author TEXT PRIMARY KEY, notes INTEGER NOT NULL, "
        "last_position INTEGER NOT NULL) STRICT",
    apply=_per_author,
)

# The same, refusing the notes of one author.
FUSSY = SimpleNamespace(**{**vars(PER_AUTHOR), "apply": lambda conn, r, e: (
    (_ for _ in ()).throw(ValueError("no notes from bob")) if getattr(e, "author", "") == "bob"
    else _per_author(conn, r, e))})

SEARCH = SimpleNamespace(
    NAME="note_search", VERSION=1, HANDLES=frozenset({"userproj.noted"}),
    DDL="CREATE VIRTUAL TABLE note_search USING fts5(author, text)",
    apply=lambda conn, r, e: conn.execute("INSERT INTO note_search (rowid, author, text) VALUES (?, ?, ?)",
                                          (r.position, e.author, e.text)),
)

WORDS = SimpleNamespace(
    NAME="note_words", VERSION=1, HANDLES=frozenset({"userproj.noted"}),
    DDL="CREATE TABLE note_words (word TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (word, position)) "
        "WITHOUT ROWID; CREATE INDEX note_words_by_position ON note_words (position)",
    apply=lambda conn, r, e: conn.executemany("INSERT OR IGNORE INTO note_words VALUES (?, ?)",
                                              [(w, r.position) for w in e.text.split()]),
)

ALL = [PER_AUTHOR, SEARCH, WORDS]
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "sqlite full text search", "the end"]


def _write(k, n=12):
    for i in range(n):
        k.append(f"note:{i % 3}", [Noted(author=f"a{i % 2}", text=TEXTS[i % len(TEXTS)])])
        if i % 5 == 0:
            k.work.enqueue("t", {"i": i})
            item = k.work.claim("w")
            k.work.complete(item.work_item_id, "w", item.token)


def _tables(k, names=("notes_per_author", "note_search", "note_words")):
    return {t: k.table(t)[1] for t in names}


def _open(engine, db_path, clock, projections):
    if engine == "postgres":
        return open_kernel("postgres", clock=clock, projections=projections)
    return eventkernel.open(db_path, clock=clock, projections=projections)


@pytest.fixture
def uk(db_path, clock, engine):
    with _open(engine, db_path, clock, ALL) as k:
        yield k
        server_tables_hold(k)


def test_user_projections_are_applied_inline_and_readable(uk):
    _write(uk)
    assert dict(uk.table("notes_per_author")[1][i][:2] for i in range(3)) == {"(work)": 3, "a0": 6, "a1": 6}
    hits = uk._db.conn.execute("SELECT rowid FROM note_search WHERE note_search MATCH 'lazy'").fetchall()
    assert len(hits) == 3
    assert ("fox", 1) in uk.table("note_words")[1]


def test_rebuild_equals_live_and_verify_is_ok_for_every_kind_of_table(uk):
    _write(uk)
    assert live_tables(uk) == rebuilt_tables(uk)
    before = _tables(uk)
    assert uk.rebuild() == uk.head
    assert _tables(uk) == before
    for name in ("note_search", "note_words", "notes_per_author"):
        uk.rebuild(name)
        assert _tables(uk) == before
    assert uk.verify().ok
    assert uk._db.conn.execute("SELECT count(*) FROM note_search WHERE note_search MATCH 'fox'").fetchone() == (3,)


def test_a_view_of_the_past_holds_the_user_tables_as_they_were(uk):
    seen = {}
    for i in range(8):
        _write(uk, 1) if i % 2 else uk.append("note:x", [Noted(author="z", text=f"word{i} the")])
        seen[uk.head] = _tables(uk)
    for position, tables in seen.items():
        with uk.at(position) as view:
            assert {t: view.table(t)[1] for t in tables} == tables


def test_diff_and_save_include_user_tables(uk, tmp_path):
    _write(uk, 4)
    head = uk.head
    _write(uk, 2)
    changed = {d.table for d in uk.diff(head, uk.head) if d.added or d.changed}
    assert {"notes_per_author", "note_words"} <= changed
    with uk.at(head) as view:
        view.save(str(tmp_path / "then.db"))
    conn = apsw.Connection(str(tmp_path / "then.db"))
    assert conn.execute("SELECT count(*) FROM notes_per_author").fetchone() == (3,)
    conn.close()


def test_a_version_bump_rebuilds_and_a_missing_projection_catches_up(db_path, clock):
    with eventkernel.open(db_path, clock=clock, projections=ALL) as k:
        _write(k, 6)
        expected = _tables(k)
    with eventkernel.open(db_path, clock=clock) as k:  # a process without them writes on
        _write(k, 6)
        assert k.verify().ok
    with eventkernel.open(db_path, clock=clock, projections=ALL) as k:  # caught up on open
        assert k.verify().ok
        caught_up = _tables(k)
        assert caught_up != expected and live_tables(k) == rebuilt_tables(k)
    conn = apsw.Connection(db_path)
    conn.execute("UPDATE notes_per_author SET notes = 0")  # garbage that only a rebuild clears
    conn.close()
    bumped = SimpleNamespace(**{**vars(PER_AUTHOR), "VERSION": 2})
    with eventkernel.open(db_path, clock=clock, projections=[bumped, SEARCH, WORDS]) as k:
        assert _tables(k) == caught_up
        assert k._db.conn.execute(
            "SELECT version FROM projection_positions WHERE name = 'notes_per_author'").fetchone() == (2,)


def test_a_process_folds_what_another_process_appended_without_its_projections(db_path, clock):
    """A process without the application's projections appends its events;
    a process that has them open folds those events in before its next
    command appends (it skipped them before: its positions jumped over them).
    Live equals rebuilt after every step, in a transaction too."""
    with eventkernel.open(db_path, clock=clock, projections=ALL) as a, eventkernel.open(db_path, clock=clock) as b:
        _write(a, 2)
        _write(b, 3)  # b applies none of them
        _write(a, 1)
        assert live_tables(a) == rebuilt_tables(a)
        assert a.verify().ok
        _write(b, 2)
        with a.transaction():
            _write(a, 2)
        assert live_tables(a) == rebuilt_tables(a)
        assert sum(n for author, n, _ in a.table("notes_per_author")[1] if author != "(work)") == 10
        assert a.verify().ok


def test_a_commit_that_appended_nothing_does_not_hide_what_another_process_appended(db_path, clock):
    """Found by the two-process property: an empty transaction's commit must
    not count as having brought the projections to the head."""
    with eventkernel.open(db_path, clock=clock, projections=ALL) as a, eventkernel.open(db_path, clock=clock) as b:
        a.append("note:1", [Noted(author="ann", text="one")])
        b.append("note:1", [Noted(author="bob", text="two")])
        with a.transaction():
            pass
        a.append("note:1", [Noted(author="ann", text="three")])
        assert live_tables(a) == rebuilt_tables(a) and a.verify().ok


def test_reads_of_a_projection_fold_first_what_another_process_appended_without_it(db_path, clock):
    """A process that only reads: ``k.table`` and ``verify`` fold in first
    the events another process appended without the projection (before,
    the table lagged until this process's next command, and ``verify``
    reported it as a problem). A read-only open cannot fold: its reads lag
    and its ``verify`` notes it."""
    with eventkernel.open(db_path, clock=clock, projections=ALL) as a, eventkernel.open(db_path, clock=clock) as b:
        _write(a, 2)
        then, folded = a.table("notes_per_author")[1], a.head
        _write(b, 3)  # a's tables do not have these yet
        assert live_tables(a) != rebuilt_tables(a)
        with eventkernel.open(db_path, read_only=True, projections=ALL) as reader:
            assert reader.table("notes_per_author")[1] == then  # lagging
            report = reader.verify()
            assert report.ok and any(f"notes_per_author: at position {folded}, the journal head is {b.head}" in note
                                     for note in report.notes), report.notes
        assert sum(n for author, n, _ in a.table("notes_per_author")[1] if author != "(work)") == 5
        assert live_tables(a) == rebuilt_tables(a)
        _write(b, 2)
        report = a.verify()
        assert report.ok, report.problems
        assert live_tables(a) == rebuilt_tables(a)
        before = snapshot(a)
        _tables(a)
        assert snapshot(a) == before  # nothing to fold: a read writes nothing


def test_catch_up_folds_what_another_process_appended_for_plain_sql_readers(db_path, clock):
    """``k.catch_up()`` on a file: the application projection's tables, read
    with plain SQL on the file, then hold what another process appended
    without it; its head is returned; with nothing to fold it writes nothing."""
    with eventkernel.open(db_path, clock=clock, projections=ALL) as a, eventkernel.open(db_path, clock=clock) as b:
        _write(a, 1)
        _write(b, 3)
        assert live_tables(a) != rebuilt_tables(a)
        assert a.catch_up() == b.head
        assert live_tables(a) == rebuilt_tables(a)
        plain = sqlite3.connect(db_path)
        try:
            assert plain.execute("SELECT sum(notes) FROM notes_per_author WHERE author != '(work)'").fetchall() == [(4,)]
        finally:
            plain.close()
        before = snapshot(a)
        assert a.catch_up() == a.head
        assert snapshot(a) == before


def test_a_read_whose_catch_up_is_refused_writes_nothing_and_verify_says_why(db_path, clock):
    with eventkernel.open(db_path, clock=clock, projections=[FUSSY]) as a, \
            eventkernel.open(db_path, clock=clock) as b:
        a.append("note:1", [Noted(author="ann", text="one")])
        bobs = b.append("note:2", [Noted(author="bob", text="two")])
        with refused(a, ProjectionFailed, f"'notes_per_author' failed on userproj.noted \\(position {bobs}\\)"):
            a.table("notes_per_author")
        report = a.verify()
        assert not report.ok
        assert report.problems[-1].startswith("this process's projections cannot fold what other processes "
                                              "appended: projection 'notes_per_author' failed"), report.problems


def test_a_projection_that_cannot_fold_another_process_event_refuses_the_next_command(db_path, clock):
    with eventkernel.open(db_path, clock=clock, projections=[FUSSY]) as a, \
            eventkernel.open(db_path, clock=clock) as b:
        a.append("note:1", [Noted(author="ann", text="one")])
        b.append("note:2", [Noted(author="cy", text="folded first")])
        bobs = b.append("note:2", [Noted(author="bob", text="two")])
        with refused(a, ProjectionFailed, f"'notes_per_author' failed on userproj.noted \\(position {bobs}\\)"):
            a.append("note:3", [Noted(author="ann", text="three")])
        # inside a transaction too, a command of no savepoint of its own (an enqueue) whose catch-up is
        # refused leaves nothing behind (cy's row, folded before bob's failed, included)
        before = live_tables(a)["notes_per_author"]  # (k.table would fold first, and be refused too)
        with a.transaction(), pytest.raises(ProjectionFailed):
            a.work.enqueue("t", {})
        assert live_tables(a)["notes_per_author"] == before == [("ann", 1, 1)]


def test_a_process_refuses_to_write_once_another_rebuilt_its_projection_at_another_version(db_path, clock):
    """Process b opens with a newer VERSION of a projection and rebuilds it;
    process a, still applying the old version, refuses its next command
    (nothing written) rather than fold old rows into the new table, and
    refuses to read that table through ``k.table``."""
    newer = SimpleNamespace(**{**vars(PER_AUTHOR), "VERSION": 2})
    with eventkernel.open(db_path, clock=clock, projections=[PER_AUTHOR]) as a:
        a.append("note:1", [Noted(author="ann", text="one")])
        with eventkernel.open(db_path, clock=clock, projections=[newer]) as b:
            b.append("note:1", [Noted(author="bob", text="two")])
        with refused(a, JournalError, "'notes_per_author' is at version 2 in the file .* applies version 1"):
            a.append("note:1", [Noted(author="ann", text="three")])
        with refused(a, JournalError, "'notes_per_author' is at version 2 in the file"):
            a.table("notes_per_author")  # nor reads the newer table as if it were its own
    with eventkernel.open(db_path, clock=clock, projections=[newer]) as a:
        a.append("note:1", [Noted(author="ann", text="three")])
        assert a.verify().ok


def test_a_projection_that_raises_refuses_the_command_and_nothing_is_written(db_path, clock, engine):
    def picky(conn, recorded, event):
        conn.execute("INSERT INTO picky VALUES (?)", (recorded.position,))  # written, then undone
        if "forbidden" in event.text:
            raise ValueError("no forbidden words")

    picky_projection = SimpleNamespace(NAME="picky", VERSION=1, HANDLES=frozenset({"userproj.noted"}),
                                       DDL="CREATE TABLE picky (position INTEGER PRIMARY KEY)", apply=picky)
    with _open(engine, db_path, clock, [picky_projection, PER_AUTHOR]) as k:
        k.append("note:1", [Noted(author="a", text="fine")])
        before = snapshot(k)
        with pytest.raises(eventkernel.ProjectionFailed, match=r"projection 'picky' failed on userproj.noted "
                                                               r"\(position 2\): ValueError: no forbidden words"):
            k.append("note:1", [Noted(author="a", text="forbidden")])
        assert snapshot(k) == before
        with pytest.raises(eventkernel.ProjectionFailed), k.transaction():
            k.work.enqueue("t", None)
            k.append("note:1", [Noted(author="a", text="forbidden too")])
        assert snapshot(k) == before
        with k.transaction():  # inside a transaction it undoes only itself
            k.work.enqueue("t", None)
            with pytest.raises(eventkernel.ProjectionFailed):
                k.append("note:1", [Noted(author="a", text="forbidden")])
        assert k.head == 2 and k.verify().ok


def test_verify_catches_a_tampered_user_projection_row(uk):
    _write(uk)
    conn = apsw.Connection(uk._db.path)  # (on PostgreSQL, the replica)
    conn.execute("UPDATE note_words SET word = 'tampered' WHERE word = 'fox'")
    conn.close()
    report = uk.verify()
    assert not report.ok and any("note_words" in p for p in report.problems)
    uk.rebuild("note_words")
    assert uk.verify().ok


def test_a_damaged_fts_table_is_rebuilt_too(db_path, clock):
    with eventkernel.open(db_path, clock=clock, projections=ALL) as uk:
        _write(uk)
        expected = _tables(uk)
    conn = apsw.Connection(db_path)
    conn.execute("DROP TABLE note_search")
    conn.close()
    with eventkernel.open(db_path, projections=ALL) as k:
        assert _tables(k) == expected and k.verify().ok


@pytest.mark.parametrize(("change", "message"), [
    ({"NAME": "Bad Name"}, "NAME must be a lowercase name"),
    ({"NAME": "work_items"}, "already taken"),
    ({"VERSION": 0}, "VERSION must be an int >= 1"),
    ({"HANDLES": "userproj.noted"}, "HANDLES must be a non-empty set"),
    ({"DDL": ""}, "DDL must be the SQL"),
    ({"DDL": "CREATE TABLE journal (x)"}, "its DDL fails: .*already exists"),
    ({"DDL": "CREATE TABLE IF NOT EXISTS work_items (x)"}, "its DDL creates no table"),
    ({"DDL": "CREATE TABLE oops ("}, "its DDL fails"),
    ({"apply": None}, r"apply\(conn, recorded, event\) is missing"),
])
def test_a_projection_that_does_not_fit_is_refused_at_open(db_path, change, message):
    bad = SimpleNamespace(**{**vars(PER_AUTHOR), **change})
    with pytest.raises(eventkernel.InvalidArgument, match=message):
        eventkernel.open(db_path, projections=[bad])
    with pytest.raises(eventkernel.InvalidArgument, match="already taken"):
        eventkernel.open(db_path, projections=[PER_AUTHOR, PER_AUTHOR])


def test_an_application_projection_is_always_applied_event_by_event(db_path, clock):
    """The bulk path (a Fold) is the kernel's own: an application's projection
    that happens to carry one is still rebuilt through its apply."""

    class Fold:
        def __init__(self):
            raise AssertionError("an application projection's Fold was used")

    with_fold = SimpleNamespace(**{**vars(PER_AUTHOR), "Fold": Fold})
    with eventkernel.open(db_path, clock=clock, projections=[with_fold]) as k:
        _write(k)
        assert rebuilt_tables(k) == live_tables(k)
        k.rebuild()
        assert k.verify().ok


def test_a_new_version_whose_tables_refuse_the_journal_fails_to_open_with_projection_failed(db_path, clock):
    """A projection's new version whose DDL the journal's events break (a
    UNIQUE the old rows never kept) cannot be rebuilt: open raises
    ProjectionFailed naming it, the event and its position — not an
    internal exception — and writes nothing; the old version opens as
    before."""
    logged = SimpleNamespace(
        NAME="note_log", VERSION=1, HANDLES=frozenset({"userproj.noted"}),
        DDL="CREATE TABLE note_log (author TEXT NOT NULL, position INTEGER NOT NULL) STRICT",
        apply=lambda conn, r, e: conn.execute("INSERT INTO note_log VALUES (?, ?)", (e.author, r.position)),
    )
    with eventkernel.open(db_path, clock=clock, projections=[logged]) as k:
        k.append("note:1", [Noted(author="ann", text="a"), Noted(author="ann", text="b")])
        head, tables = k.head, live_tables(k)
    stricter = SimpleNamespace(**{**vars(logged), "VERSION": 2,
                                  "DDL": "CREATE TABLE note_log (author TEXT NOT NULL UNIQUE, position INTEGER NOT NULL) "
                                         "STRICT"})
    with pytest.raises(ProjectionFailed, match=r"projection 'note_log' failed on userproj.noted \(position 2\): "
                                               r"ConstraintError: UNIQUE constraint failed: note_log.author"):
        eventkernel.open(db_path, clock=clock, projections=[stricter])
    with eventkernel.open(db_path, clock=clock, projections=[logged]) as k:
        assert k.head == head and live_tables(k) == tables
