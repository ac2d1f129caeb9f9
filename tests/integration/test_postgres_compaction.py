"""Compaction of the journal on PostgreSQL: ``k.compact`` moves a prefix to
an archive file, records the base on the server and deletes the moved rows
there, in one transaction; every replica follows (its own base, its rows
deleted), a new replica starts from the projections stored at the base,
and commands go on with the streams' versions and the chain where they were."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

import eventkernel
from eventkernel import journal, postgres, transfer
from eventkernel.errors import CommandRejected, ConcurrencyConflict, InvalidArgument, JournalError

from support import NOTES, Noted, deaf, live_tables, rebuilt_tables, server_tables_hold, snapshot, until


def _server(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def _local_base(k: eventkernel.Kernel) -> int:
    with k._db.statement("reading the base") as conn:
        found = journal.base(conn)
    return 0 if found is None else found[0]


def _sound(k: eventkernel.Kernel) -> None:
    report = k.verify()
    assert report.ok, report.problems
    assert live_tables(k) == rebuilt_tables(k)
    server_tables_hold(k)


def _busy(k: eventkernel.Kernel) -> list[str]:
    """Events on several streams, one of them (a session) entirely before the base to come."""
    k.documents.index("docs/before.txt", title="Before", content="written before the base")
    s = k.sessions.create("app", "u", state={"app:theme": "dark"})
    k.sessions.append_event(s.session_id, actor="user", content={"text": "hi"}, state_delta={"n": 1})
    items = [k.work.enqueue("task", {"n": i}) for i in range(3)]
    k.memory.put("user:a", "k", 1)
    k.memory.put("user:a", "k", 2)
    return [s.session_id, *items]


def test_a_compaction_moves_the_prefix_on_the_server_and_every_replica_follows(pg_url: str, tmp_path: Path) -> None:
    archive = str(tmp_path / "archive.db")
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        session, *items = _busy(a)
        until(lambda: b.head == a.head)
        head = a.head
        done = a.compact(before=6, archive=archive)
        assert (done.base, done.events, done.archive) == (5, 5, archive)
        # the server: the moved rows gone, the base recorded, the chain verified from it
        assert _server(pg_url, "SELECT min(position), max(position) FROM eventkernel.journal") == [(6, head)]
        assert _server(pg_url, "SELECT position, archive FROM eventkernel.journal_base") == [(5, archive)]
        assert _server(pg_url, "SELECT base FROM eventkernel.journal_head") == [(5,)]
        with postgres.open_journal(pg_url) as j:
            report = j.verify()
            assert report.ok and report.head == head, report.problems
            assert j.base()[:2] == (5, bytes.fromhex(done.base_hash))
            assert j.stream_version(f"session:{session}") == 2  # its events moved: its version at the base
        # this process's replica is compacted too; the other follows
        assert _local_base(a) == 5
        until(lambda: _local_base(b) == 5)
        for k in (a, b):
            with pytest.raises(InvalidArgument, match="before the journal's base 5.*archive"):
                k.at(3)
            assert [e.position for e in k.read(after=0)] == list(range(6, head + 1))
            assert k.at(head).work.get(items[0]) == k.work.get(items[0])
            _sound(k)
        # commands go on: versions of streams whose events all moved, the chain from the base
        b.sessions.append_event(session, actor="agent", content={"text": "hello"})
        assert b.sessions.get(session).event_count == 2 and b.stream_version(f"session:{session}") == 3
        claimed = a.work.claim("w", lease_ms=60_000)
        assert claimed is not None and claimed.work_item_id == items[0]
        until(lambda: b.head == a.head)
        # a new replica starts from the projections stored at the base
        a.documents.index("docs/after.txt", title="After", content="written after the base")
        until(lambda: b.head == a.head)
        with eventkernel.open(pg_url) as c:
            assert _local_base(c) == 5 and c.head == a.head
            assert c._replica.seeded == a.head  # type: ignore[union-attr]  (the server's tables after the base)
            assert c.work.get(items[0]) == a.work.get(items[0])
            assert c.sessions.get(session) == a.sessions.get(session)
            assert c.memory.get("user:a", "k") == a.memory.get("user:a", "k")
            found = c.documents.search("written base")  # the full-text index: from the base, then folded here
            assert [d.file_path for d in found] == [d.file_path for d in a.documents.search("written base")]
            assert sorted(d.file_path for d in found) == ["docs/after.txt", "docs/before.txt"]
            assert live_tables(c) == live_tables(a)
            _sound(c)
        for k in (a, b):
            _sound(k)
    # the archive is a journal of its own, whose head hash is the base's
    with eventkernel.open(archive, read_only=True) as old:
        report = old.verify()
        assert report.ok and (report.head, report.head_hash) == (5, done.base_hash)
        assert old.sessions.get(session).event_count == 1


def test_catch_up_follows_a_compaction_another_process_made(pg_url: str, tmp_path: Path) -> None:
    """A replica that has not heard of another process's compaction follows
    it when it catches up (its base moves, the moved rows leave it)."""
    with eventkernel.open(pg_url) as a, deaf(eventkernel.open(pg_url)) as b:
        _busy(a)
        assert b.catch_up() == a.head and _local_base(b) == 0
        a.compact(before=5, archive=str(tmp_path / "archive.db"))
        a.work.enqueue("after", None)
        assert b.catch_up() == a.head
        assert _local_base(b) == 4
        with b._db.statement("reading the replica") as conn:
            assert conn.execute("SELECT min(position) FROM journal").fetchone() == (5,)
        _sound(b)


def test_a_replica_closed_during_a_compaction_follows_it_when_it_opens(pg_url: str, tmp_path: Path) -> None:
    kept = str(tmp_path / "replica.db")
    with eventkernel.open(pg_url, replica=kept) as b:
        _busy(b)
    with eventkernel.open(pg_url) as a:
        a.work.enqueue("later", {})
        a.compact(before=4, archive=str(tmp_path / "archive.db"))
        head = a.head
    with eventkernel.open(pg_url, replica=kept) as b:
        assert _local_base(b) == 3 and b.head == head
        with b._db.statement("counting") as conn:
            assert conn.execute("SELECT min(position), count(*) FROM journal").fetchone() == (4, head - 3)
        _sound(b)


def test_a_replica_whose_file_ends_before_the_base_is_refused_by_name(pg_url: str, tmp_path: Path) -> None:
    """Its missing events are in the archive only: it cannot catch up, and says
    to open a new replica (which starts from the base)."""
    kept = str(tmp_path / "replica.db")
    with eventkernel.open(pg_url, replica=kept) as b:
        b.memory.put("user:a", "k", 1)
    with eventkernel.open(pg_url) as a:
        _busy(a)
        a.compact(before=5, archive=str(tmp_path / "archive.db"))
    with pytest.raises(JournalError, match=r"replica holds it up to position 1.*compacted.*base is 4.*new replica"):
        eventkernel.open(pg_url, replica=kept)
    with eventkernel.open(pg_url) as fresh:
        assert fresh.memory.get("user:a", "k").value == 2
        _sound(fresh)


def test_a_live_replica_left_behind_by_a_compaction_refuses_its_next_command(pg_url: str, tmp_path: Path) -> None:
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        b._replica._stop.set()  # type: ignore[union-attr]  (B follows no more)
        b._replica._follower.join(10)  # type: ignore[union-attr]
        _busy(a)
        a.compact(before=5, archive=str(tmp_path / "archive.db"))
        before = snapshot(a)
        with pytest.raises(JournalError, match="compacted after that"):
            b.memory.put("user:b", "k", 1)
        assert snapshot(a) == before


def test_the_server_refuses_to_delete_rows_after_the_base(pg_url: str, tmp_path: Path) -> None:
    with eventkernel.open(pg_url) as k:
        _busy(k)
        k.compact(before=4, archive=str(tmp_path / "archive.db"))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        with pytest.raises(psycopg.errors.RestrictViolation, match="a compaction alone removes rows"):
            admin.execute("DELETE FROM eventkernel.journal WHERE position = 4")
        with pytest.raises(psycopg.errors.RestrictViolation):
            admin.execute("UPDATE eventkernel.journal_base SET position = 9")
    with postgres.open_journal(pg_url) as j:
        assert j.verify().ok


def test_refused_compactions_write_nothing_on_either_side(pg_url: str, tmp_path: Path) -> None:
    with eventkernel.open(pg_url) as k:
        _busy(k)
        before = snapshot(k)
        server = _server(pg_url, "SELECT position, hash FROM eventkernel.journal ORDER BY position")
        for bad, match in ((1, "before must be between 2"), (k.head + 1, "and the head")):
            with pytest.raises(InvalidArgument, match=match):
                k.compact(before=bad, archive=str(tmp_path / "a.db"))
        with k.transaction(), pytest.raises(InvalidArgument, match="inside this thread's transaction"):
            k.compact(before=3, archive=str(tmp_path / "a.db"))
        assert snapshot(k) == before
        assert _server(pg_url, "SELECT position, hash FROM eventkernel.journal ORDER BY position") == server
        assert _server(pg_url, "SELECT count(*) FROM eventkernel.journal_base") == [(0,)]


def test_a_replica_with_other_projections_cannot_start_after_a_compaction(pg_url: str, tmp_path: Path) -> None:
    """The projections stored at the base are the compacting process's: a
    process whose projections differ cannot build its own without the moved
    events, and says why."""
    with eventkernel.open(pg_url) as k:
        _busy(k)
        k.compact(before=4, archive=str(tmp_path / "archive.db"))
    with pytest.raises(JournalError, match="projection added or changed version since the compaction"):
        eventkernel.open(pg_url, projections=[NOTES])


def test_a_replica_without_the_compacting_process_s_application_projection_starts_from_its_base(
        pg_url: str, tmp_path: Path) -> None:
    """The projections stored at the base hold an application projection a
    process does not have: that process starts its replica from them all
    the same (the other tables left out), follows, writes and verifies; the
    process with it goes on; a compaction, and an erasure reaching the
    archive, are refused to the process without it (which could not make that projection again at
    the base) and, from the other, remakes both replicas' bases."""
    archive = str(tmp_path / "archive.db")
    with eventkernel.open(pg_url, projections=[NOTES]) as a:
        for i in range(3):
            a.append("note:x", Noted(text=f"n{i}"))
        session, *_ = _busy(a)
        with eventkernel.open(pg_url) as b:  # it would store a base without the projection it lacks: refused
            before = (snapshot(a), snapshot(b))
            with pytest.raises(CommandRejected, match="compact refused: the journal on the server holds projections "
                                                      "this process does not apply .'notes'"):
                b.compact(before=a.head - 2, archive=str(tmp_path / "not.db"))
            assert (snapshot(a), snapshot(b)) == before and not (tmp_path / "not.db").exists()
        a.compact(before=a.head - 2, archive=archive)
        with eventkernel.open(pg_url) as b:
            assert _local_base(b) == _local_base(a) > 0
            with b._db.statement("listing the replica's tables") as conn:
                assert not conn.table_exists("main", "notes")
            b.work.enqueue("task", {"n": 9})
            a.append("note:x", Noted(text="after"))
            until(lambda: b.head == a.head)
            for k in (a, b):
                _sound(k)
            assert [row[1] for row in a.table("notes")[1]] == ["n0", "n1", "n2", "after"]
            # b could not make the image of the base again with the projection it lacks: refused
            before = (snapshot(a), snapshot(b))
            with pytest.raises(CommandRejected, match="the journal's base on the server holds projections this "
                                                      "process does not apply .'notes'"):
                b.erase(stream=f"session:{session}", reason="test", actor="t", archive=archive)
            assert (snapshot(a), snapshot(b)) == before
            a.erase(stream=f"session:{session}", reason="test", actor="t", archive=archive)
            until(lambda: a.head == b.head and b._replica is not None and b._replica.forgotten > 0)
            for k in (a, b):
                _sound(k)
                with k._db.statement("reading the base's payloads") as conn:
                    assert conn.execute("SELECT count(*) FROM base_payloads WHERE stream = ?",
                                        (f"session:{session}",)).fetchone() == (0,)


def test_a_bare_journal_appends_after_the_base_at_the_moved_streams_versions(pg_url: str, tmp_path: Path) -> None:
    stream = "note:x"
    with eventkernel.open(pg_url) as k:
        k.append(stream, [Noted(text="a"), Noted(text="b")])
        _busy(k)
        k.compact(before=6, archive=str(tmp_path / "archive.db"))
    with postgres.open_journal(pg_url) as j:
        head = j.head
        with pytest.raises(ConcurrencyConflict):
            j.append(stream, [Noted(text="later")], expected_version=0)
        assert j.head == head
        assert j.append(stream, [Noted(text="later")], expected_version=2) == head + 1
        assert j.stream_version(stream) == 3 and j.verify().ok


def test_copy_refuses_a_compacted_server_journal(pg_url: str, tmp_path: Path) -> None:
    with eventkernel.open(pg_url) as k:
        _busy(k)
        k.compact(before=4, archive=str(tmp_path / "archive.db"))
    with pytest.raises(InvalidArgument, match=r"compacted: its events up to 3 are in the archive"):
        transfer.copy(pg_url, str(tmp_path / "out.db"))
    assert not (tmp_path / "out.db").exists()


def test_an_erasure_reaching_the_archive_reaches_the_server_and_every_replica(pg_url: str, tmp_path: Path) -> None:
    """The subject's events are in the archive and what they made is in the
    projections stored at the base: the erasing process makes them again
    without it, on the server too; another replica takes them from there, a
    new replica starts from them; no byte of the subject stays in a replica
    file, the archive or the server's base."""
    import glob
    import zlib

    archive = str(tmp_path / "archive.db")
    secret = "SSN-111-22-3333"
    kept = str(tmp_path / "b.db")
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url, replica=kept) as b:
        a.memory.put("person:ann", "ssn", secret)
        _busy(a)
        a.compact(before=5, archive=archive)
        until(lambda: _local_base(b) == 4)
        a.memory.put("person:bob", "ssn", "bob's")

        def anywhere() -> list[str]:
            found = [name for name in glob.glob(kept + "*") + glob.glob(archive + "*")
                     if secret.encode() in Path(name).read_bytes()]
            for k in (a, b):
                with k._db.statement("reading the snapshots") as conn:
                    found += [f"{k._db.path} snapshot" for (blob,) in conn.execute("SELECT data FROM snapshot_pages")
                              if secret.encode() in zlib.decompress(blob)]
            with psycopg.connect(pg_url) as conn:
                for table, column in (("base_image", "image"), ("base_payloads", "convert_to(data, 'UTF8')"),
                                      ("journal", "convert_to(data, 'UTF8')")):
                    if conn.execute(f"SELECT count(*) FROM eventkernel.{table} "
                                    f"WHERE position(convert_to(%s, 'UTF8') in {column}) > 0", (secret,)).fetchone()[0]:
                        found.append(f"server {table}")
            return found

        assert "server base_image" in anywhere()
        done = a.erase(stream_prefix="memory:person:ann", reason="asked", archive=archive)
        assert done.events == 1
        until(lambda: b.head == a.head)
        until(lambda: not anywhere(), 20)
        for k in (a, b):
            assert k.memory.get("person:ann", "ssn") is None and k.memory.get("person:bob", "ssn").value == "bob's"
            _sound(k)
        assert live_tables(a) == live_tables(b)
        with eventkernel.open(pg_url) as c:
            assert c.memory.get("person:ann", "ssn") is None
            assert live_tables(c) == live_tables(a)
            _sound(c)


def test_a_compaction_another_process_made_meanwhile_refuses_this_one(pg_url: str, tmp_path: Path) -> None:
    """B has not followed A's compaction yet when it compacts: the server's
    base, read under its lock, is not the one B's replica holds, and B's
    compaction is refused (its archive is kept); once B follows, it may
    compact further."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        _busy(a)
        a.work.enqueue("more", {})
        until(lambda: b.head == a.head)
        b._replica._stop.set()  # type: ignore[union-attr]  (B follows no more, between its commands)
        b._replica._follower.join(10)  # type: ignore[union-attr]
        a.compact(before=5, archive=str(tmp_path / "a.db"))
        server = _server(pg_url, "SELECT position, archive FROM eventkernel.journal_base")
        with pytest.raises(JournalError, match="another compaction ran meanwhile"):
            b.compact(before=7, archive=str(tmp_path / "b.db"))
        assert _server(pg_url, "SELECT position, archive FROM eventkernel.journal_base") == server
        assert _server(pg_url, "SELECT base FROM eventkernel.journal_head") == [(4,)]
        assert b._replica.follow_base() == 4  # type: ignore[union-attr]
        done = b.compact(before=7, archive=str(tmp_path / "b2.db"))
        assert done.base == 6 and _server(pg_url, "SELECT base FROM eventkernel.journal_head") == [(6,)]
        until(lambda: _local_base(a) == 6)
        for k in (a, b):
            _sound(k)
        with eventkernel.open(pg_url) as c:
            assert live_tables(c) == live_tables(a)
            _sound(c)


@pytest.mark.parametrize("trial", range(4))
def test_a_compaction_killed_at_any_moment_leaves_the_server_as_it_was_or_compacted(
        pg_url: str, tmp_path: Path, child_env: dict[str, str], trial: int) -> None:
    """A compacting process is SIGKILLed: the server's journal is either as it
    was (every event there) or compacted (its base recorded, the archive
    complete and verified, its head hash the base's); compacting again
    finishes the job, and a replica that holds the base already follows."""
    import os
    import random
    import signal
    import time

    from conftest import spawn

    rng = random.Random(f"pg-compact-{trial}")
    archive = str(tmp_path / "archive.db")
    with eventkernel.open(pg_url) as k:
        with k.transaction():
            for i in range(3000):
                k.work.enqueue(f"t{i % 7}", {"n": i, "text": "x" * 100})
        rows = [(r.position, r.hash) for r in k.read()]
        live = live_tables(k)
    before = len(rows) // 2
    child = spawn(child_env, "compactor", pg_url, archive, str(before))
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    # Here a compaction of this journal takes about 0.4 s, the archive its first quarter.
    time.sleep(rng.uniform(0.0, 0.1) if trial % 2 else rng.uniform(0.0, 0.5))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    # A COMMIT the child sent before it died is still the server's to finish: wait until its sessions end.
    until(lambda: _server(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()") == [(0,)])
    base = _server(pg_url, "SELECT position, hash FROM eventkernel.journal_base")
    present = _server(pg_url, "SELECT position, hash FROM eventkernel.journal ORDER BY position")
    if base:
        assert base == [(before - 1, rows[before - 2][1])] and present == rows[before - 1:]
        assert os.path.exists(archive), "compacted without its archive"
    else:
        assert "compacted" not in out and present == rows
    if os.path.exists(archive):  # linked into place only once complete
        with eventkernel.open(archive, read_only=True) as a:
            assert a.verify().ok and [(r.position, r.hash) for r in a.read()] == rows[:before - 1]
    with eventkernel.open(pg_url) as k:
        assert live_tables(k) == live
        if not base:
            k.compact(before=before, archive=archive)  # again: uses an archive already written, or writes it
        _sound(k)
    print(f"killed {'after' if base else 'before'} the compaction committed")
