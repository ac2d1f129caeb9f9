"""Projection snapshots: views of the past, rebuilds and verify start from the
nearest one; each stores only the pages that changed; verify checks them; an
erasure drops those that hold what it erased."""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
import zlib

import apsw
import pytest

import eventkernel
from eventkernel import cli, snapshots

from support import fill, live_tables, refused


def replayed(k: eventkernel.Kernel, position: int) -> apsw.Connection:
    """The projections at ``position`` replayed from position 1, no snapshot involved."""
    mem, upto = k._projector.build_in_memory(k._db, until=position)
    assert upto == position
    return mem


def same_as_replay(k: eventkernel.Kernel, position: int) -> list[str]:
    """Differences between ``k.at(position)`` and a replay from position 1."""
    mem = replayed(k, position)
    try:
        with k.at(position) as view:
            return k._projector.compare(view._db.conn, mem)
    finally:
        mem.close()


def test_views_start_from_the_nearest_snapshot_and_equal_a_replay(tmp_path, clock, monkeypatch):
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 400)
        head = k.head
        assert k.snapshot(every=60) == head
        stored = k.snapshots()
        positions = [s.position for s in stored]
        assert positions == [*range(60, head, 60), head] or positions == list(range(60, head + 1, 60))
        assert all(s.usable for s in stored)
        folded = []
        real_fold = snapshots.fold
        monkeypatch.setattr(snapshots, "fold", lambda p, c, m, after, until, progress=None: (
            folded.append((after, until)), real_fold(p, c, m, after, until, progress))[1])
        rng = random.Random(5)
        for p in sorted({0, 1, 59, 60, 61, 119, head - 1, head, *(rng.randrange(1, head) for _ in range(12))}):
            folded.clear()
            assert same_as_replay(k, p) == [], p
            if p >= 60:  # started from the snapshot at or before p, folding only what follows it
                base = max(s for s in positions if s <= p)
                assert folded == [(base, p)], (p, folded)
            else:
                assert folded == []


def test_a_snapshot_stores_only_the_pages_that_changed(tmp_path, clock):
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 300)
        first = k.snapshot()
        k.memory.put("user:0", "k0", {"v": "changed"})
        second = k.snapshot()
        a, b = k.snapshots()
        assert (a.position, a.parent, b.position, b.parent) == (first, None, second, first)
        assert a.pages == a.page_count > 20
        assert 0 < b.pages < b.page_count // 4, (b.pages, b.page_count)
        assert b.bytes < a.bytes // 4
        assert k.snapshot() == second and len(k.snapshots()) == 2  # one at the head already: nothing made
        with k._db.read() as conn:
            mem = snapshots.load(conn, second)
        try:
            assert k._projector.compare(k._db.conn, mem) == []  # the snapshot at the head is the live tables
        finally:
            mem.close()


def test_the_kernel_makes_snapshots_on_its_own_in_the_background(tmp_path, clock):
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=50) as k:
        fill(k, 60)
        assert [t for t in threading.enumerate() if t.name == "eventkernel-snapshots"]
        deadline = time.monotonic() + 30
        while not k.snapshots() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert k.snapshots(), "no snapshot made after 50 events"
        for _ in range(6):
            fill(k, 40, seed=len(k.snapshots()))
            target = k.head
            while (not k.snapshots() or target - k.snapshots()[-1].position >= 50) and time.monotonic() < deadline:
                time.sleep(0.02)
        made = [s.position for s in k.snapshots()]
        assert len(made) >= 3 and k.head - made[-1] < 50 + 40, made
        # No gap wider than 50 from position 0 on (the thread fills the history below its first), and
        # none made needlessly: at most two per 50 events.
        assert all(b - a <= 50 for a, b in itertools.pairwise([0, *made])), made
        assert len(made) <= 2 * made[-1] // 50 + 1, made
        assert k.verify().ok
    assert not [t for t in threading.enumerate() if t.name == "eventkernel-snapshots"]  # close stopped it
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:  # none without asking
        before = len(k.snapshots())
        fill(k, 200, seed=9)
        assert len(k.snapshots()) == before
    with eventkernel.open(path, read_only=True) as k:
        assert same_as_replay(k, made[-1] + 7) == []


def test_rebuild_starts_from_the_newest_snapshot_unless_from_scratch(tmp_path, clock, monkeypatch):
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 250)
        base = k.snapshot()
        fill(k, 30, seed=2)
        live = live_tables(k)
        calls = []
        real = k._projector.build_in_memory
        monkeypatch.setattr(k._projector, "build_in_memory", lambda *a, **kw: (calls.append(kw), real(*a, **kw))[1])
        assert k.rebuild() == k.head
        assert calls == [] and live_tables(k) == live
        assert k.rebuild("memory_entries") == k.head and calls == [] and live_tables(k) == live
        assert k.rebuild(from_scratch=True) == k.head and len(calls) == 1 and live_tables(k) == live
        assert base < k.head
        with refused(k, eventkernel.InvalidArgument, "from_scratch must be a bool"):
            k.rebuild(from_scratch="yes")


def test_verify_checks_every_snapshot_and_views_survive_a_damaged_one(tmp_path, clock, caplog):
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 300)
        k.snapshot(every=100)
        assert k.verify().ok
        newest = k.snapshots()[-1].position
        run = k._db.conn.execute("SELECT snapshot, first_page, pages FROM snapshot_pages WHERE snapshot = ? "
                                 "ORDER BY first_page DESC LIMIT 1", (newest,)).fetchone()
        zeros = zlib.compress(bytes(run[2] * 4096))

        def damage(sql: str, *args: object) -> list[str]:
            with k._db.write() as conn:
                conn.execute(sql, (*args, run[0], run[1]))
            return k.verify().problems

        # a run replaced by zeros: its CRC-32 no longer matches
        problems = damage("UPDATE snapshot_pages SET data = ? WHERE snapshot = ? AND first_page = ?", zeros)
        assert f"snapshot at position {newest}: the run of pages from {run[1]} is damaged" in problems
        with k.at(newest) as view, pytest.raises(eventkernel.JournalCorrupt, match=(
                f"snapshot at position {newest}: the run of pages from {run[1]} is damaged.*--drop")):
            for name in view.table_names():  # the damaged pages are found when they are read
                view.table(name)
        # a damaged page map is found when a view opens: it is replayed from position 1 instead
        with k._db.write() as conn:
            good_map = conn.execute("SELECT page_map FROM snapshots WHERE position = ?", (newest,)).fetchone()[0]
            conn.execute("UPDATE snapshots SET page_map = x'00' WHERE position = ?", (newest,))
        assert any("page map cannot be read" in p for p in k.verify().problems)
        with caplog.at_level(logging.WARNING, logger="eventkernel"):
            assert same_as_replay(k, newest) == []
        assert f"snapshot at position {newest}" in caplog.text and "page map" in caplog.text
        with k._db.write() as conn:
            conn.execute("UPDATE snapshots SET page_map = ? WHERE position = ?", (good_map, newest))
        # the same with its CRC-32 forged too: the image no longer composes
        problems = damage("UPDATE snapshot_pages SET crc32 = ? WHERE snapshot = ? AND first_page = ?",
                          zlib.crc32(zeros))
        assert any(f"snapshot at position {newest}: its pages do not compose the image" in p for p in problems)
        problems = damage("UPDATE snapshot_pages SET data = x'00', crc32 = ? WHERE snapshot = ? AND first_page = ?",
                          zlib.crc32(b"\x00"))
        assert any("cannot be read" in p for p in problems), problems
        problems = damage("DELETE FROM snapshot_pages WHERE snapshot = ? AND first_page = ?")
        assert any("stored nowhere" in p for p in problems), problems
        assert same_as_replay(k, newest - 1) == []  # an earlier snapshot is sound
        assert k.drop_snapshots() == 4 and k.snapshots() == []
        assert same_as_replay(k, newest) == []
        assert k.verify().ok


def test_a_snapshot_dropped_while_a_view_opens_it_is_read_from_the_view_s_own_read(tmp_path, clock, caplog):
    """A view found its snapshot in its read; another writer dropped it
    before the view opened it (an erasure, a compaction, a replica following
    one): the view reads it whole from its own read instead of reporting it
    unusable and replaying from position 1."""
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        for i in range(30):
            k.work.enqueue("t", {"n": i})
        k.snapshot(every=10)
        with caplog.at_level(logging.WARNING), k._db.read("a view") as conn:
            position = snapshots.nearest(conn, k._projector, 25)
            assert position == 20
            k.drop_snapshots()
            mem = snapshots.open_lazily(k._db, conn, position)
            try:
                assert mem.execute("SELECT count(*) FROM work_items").fetchone() == (20,)
            finally:
                mem.close()
        assert not [r for r in caplog.records if "cannot be used" in r.getMessage()]
        assert k.snapshots() == []


def test_verify_finds_a_snapshot_that_does_not_follow_from_the_journal(tmp_path, clock):
    """A snapshot whose image is sound but whose rows are wrong (made from a
    tampered projection): verify compares the newest with the rebuild."""
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 200)
        real_fold = snapshots.fold

        def tampered(projector, conn, mem, after, until, progress=None):
            real_fold(projector, conn, mem, after, until, progress)
            mem.execute("UPDATE memory_entries SET value = '\"forged\"' WHERE rowid = 1")

        snapshots.fold = tampered
        try:
            with k._db.read() as conn:
                base = snapshots.nearest(conn, k._projector, k.head)
            assert base is None
            k.memory.put("user:9", "k", {"v": 1})
            k.snapshot(every=100)  # the first is a replay, each later one a fold: forged
        finally:
            snapshots.fold = real_fold
        report = k.verify()
        assert not report.ok
        assert any("snapshot at position" in p and "memory_entries" in p for p in report.problems), report.problems


def test_an_erasure_drops_the_snapshots_that_hold_the_subject(tmp_path, clock):
    secret = "SSN-987-65-4321"
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 150)
        k.memory.put("person:alice", "ssn", {"value": secret})
        first = k.head
        fill(k, 150, seed=3)
        k.snapshot(every=50)
        kept = [s.position for s in k.snapshots() if s.position < first]
        assert kept and len(k.snapshots()) > len(kept)

        def stored_bytes() -> bytes:
            out = b""
            for (blob,) in k._db.conn.execute("SELECT data FROM snapshot_pages"):
                out += zlib.decompress(blob)
            return out

        assert secret.encode() in stored_bytes()
        k.erase(stream_prefix="memory:person:alice", reason="request", actor="dpo")
        assert [s.position for s in k.snapshots()] == kept
        assert secret.encode() not in stored_bytes()
        assert k.verify().ok
        for p in (first - 1, first, k.head):
            assert same_as_replay(k, p) == []
        with k.at(first) as view:
            assert view.memory.get("person:alice", "ssn") is None  # the past shows it erased, not its data
        k.snapshot(every=50)  # made again, without it
        assert secret.encode() not in stored_bytes() and k.verify().ok


def test_a_snapshot_made_across_an_erasure_is_not_stored(tmp_path, clock, monkeypatch):
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=0) as k:
        fill(k, 100)
        k.memory.put("person:bob", "card", {"value": "4111"})
        fill(k, 20, seed=4)
        real_fold = snapshots.fold
        erased = []

        def erasing(projector, conn, mem, after, until, progress=None):
            real_fold(projector, conn, mem, after, until, progress)
            if not erased:  # the snapshot has been folded with the value; then it is erased
                erased.append(k.erase(stream_prefix="memory:person:bob", reason="request"))

        monkeypatch.setattr(snapshots, "fold", erasing)
        made = snapshots.take(k._db, k._projector, k._ctx.now, [k.head])
        assert erased and made == [] and k.snapshots() == []


def test_snapshots_of_other_projections_are_kept_but_not_used(tmp_path, clock):
    class Notes:
        NAME, VERSION, HANDLES = "note_count", 1, ("memory.put",)
        DDL = "CREATE TABLE note_count (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"

        @staticmethod
        def apply(conn, recorded, event):
            conn.execute("INSERT INTO note_count (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1")

    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0, projections=[Notes]) as k:
        fill(k, 120)
        k.snapshot()
        assert [s.usable for s in k.snapshots()] == [True]
        with k.at(k.head) as view:
            assert view.table("note_count")[1][0][1] > 0
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        assert [s.usable for s in k.snapshots()] == [False]
        assert same_as_replay(k, k.head) == []
        k.snapshot()  # the head has a snapshot already (of the other projections): one position, one snapshot
        assert [s.usable for s in k.snapshots()] == [False]
        k.memory.put("user:0", "k", "later")
        k.snapshot()
        assert [s.usable for s in k.snapshots()] == [False, True]
        assert same_as_replay(k, k.head) == [] and k.verify().ok


def test_snapshot_refusals_write_nothing(tmp_path, clock):
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 30)
        with refused(k, eventkernel.InvalidArgument, "every must be"):
            k.snapshot(every=0)
        with refused(k, eventkernel.InvalidArgument, "progress must be a callable"):
            k.snapshot(progress=3)
        with k.transaction():
            with pytest.raises(eventkernel.InvalidArgument, match="inside this thread's transaction"):
                k.snapshot()
            with pytest.raises(eventkernel.InvalidArgument, match="inside this thread's transaction"):
                k.drop_snapshots()
        assert k.snapshots() == []
    with pytest.raises(eventkernel.InvalidArgument, match="snapshot_every must be"):
        eventkernel.open(path, snapshot_every=-1)
    with eventkernel.open(path, read_only=True) as k:
        with pytest.raises(eventkernel.ReadOnly, match="snapshot refused"):
            k.snapshot()
        assert k.snapshots() == []


def test_a_file_of_the_previous_format_gains_snapshots_when_opened_writable(tmp_path, clock):
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 40)
    raw = apsw.Connection(path)
    with raw:
        raw.execute("DROP TABLE journal_base; DROP TABLE base_streams; DROP TABLE base_correlations; "
                    "DROP TABLE base_payloads; DROP TABLE snapshots; DROP TABLE snapshot_pages; "
                    "DELETE FROM schema_migrations WHERE version >= 5; PRAGMA user_version = 4")
    raw.close()
    with eventkernel.open(path, read_only=True) as k:
        assert k.snapshots() == [] and same_as_replay(k, 20) == []
        with pytest.raises(eventkernel.ReadOnly):
            k.snapshot()
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        assert k.snapshot() == k.head and len(k.snapshots()) == 1
        assert k.verify().ok


def test_the_snapshot_command(tmp_path, clock, capsys):
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 200)
        head = k.head
    assert cli.main(["snapshot", path, "--every", "80", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == head and out["made"] == [80, 160, head] and out["snapshots"] == 3
    assert cli.main(["snapshot", path, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "80" and "every page" in lines[0]
    assert "pages changed since 80" in lines[1]
    assert cli.main(["snapshot", path]) == 0
    assert "made 0 snapshots" in capsys.readouterr().out
    assert cli.main(["verify", path]) == 0
    capsys.readouterr()
    assert cli.main(["snapshot", path, "--drop", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dropped": 3}
    assert cli.main(["snapshot", str(tmp_path / "missing.db")]) == 1


def test_snapshots_are_awaitable(tmp_path):
    import asyncio

    import eventkernel.aio

    async def main() -> None:
        async with eventkernel.aio.open(str(tmp_path / "a.db"), snapshot_every=0) as k:
            for i in range(5):
                await k.memory.put("user:a", f"k{i}", i)
            assert await k.snapshot(every=2) == 5
            assert [s.position for s in await k.snapshots()] == [2, 4, 5]
            async with k.at(3) as view:
                assert [e.key for e in await view.memory.list("user:a")] == ["k0", "k1", "k2"]
            assert await k.drop_snapshots() == 3

    asyncio.run(main())


def test_the_background_thread_fills_the_history_an_erasure_emptied(tmp_path, clock):
    with eventkernel.open(str(tmp_path / "s.db"), clock=clock, snapshot_every=50) as k:
        k.memory.put("person:early", "ssn", "123")
        fill(k, 300)
        k.snapshot(every=50)
        assert len(k.snapshots()) >= 6
        k.erase(stream_prefix="memory:person:early", reason="asked")  # its first event is position 1
        assert k.snapshots() == []
        k.memory.put("user:0", "wake", 1)  # a commit wakes the thread
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            made = [s.position for s in k.snapshots()]
            if made and all(b - a <= 50 for a, b in itertools.pairwise([0, *made])) and k.head - made[-1] < 50:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the history was not filled: {[s.position for s in k.snapshots()]} of {k.head}")
        assert k.verify().ok
        assert same_as_replay(k, 123) == []


def test_verify_all_snapshots_compares_each_with_the_journal(tmp_path, clock, monkeypatch, capsys):
    """An older snapshot made wrong, the newest right: the default verify
    (the newest against the rebuild) cannot see it; all_snapshots does."""
    path = str(tmp_path / "s.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 150)
        real = k._projector.build_in_memory

        def forged(*args, **kwargs):
            mem, upto = real(*args, **kwargs)
            mem.execute("UPDATE memory_entries SET value = '\"forged\"' WHERE rowid = (SELECT min(rowid) "
                        "FROM memory_entries)")
            return mem, upto

        monkeypatch.setattr(k._projector, "build_in_memory", forged)
        old = k.snapshot()  # made from a (forged) replay: no snapshot before it
        monkeypatch.setattr(k._projector, "build_in_memory", real)
        fill(k, 100, seed=2)
        with k._db.write() as conn:  # the newest made from a replay too, not from the forged one
            conn.execute("UPDATE snapshots SET projections = 'other' WHERE position = ?", (old,))
        newest = k.snapshot()
        with k._db.write() as conn:
            conn.execute("UPDATE snapshots SET projections = ? WHERE position = ?", (snapshots.key(k._projector), old))
        assert [s.position for s in k.snapshots() if s.usable] == [old, newest]
        assert k.verify().ok
        report = k.verify(all_snapshots=True)
        assert not report.ok
        assert any(f"snapshot at position {old}: " in p and "memory_entries" in p for p in report.problems)
        assert not any(f"snapshot at position {newest}" in p for p in report.problems), report.problems
        with pytest.raises(eventkernel.InvalidArgument, match="all_snapshots must be a bool"):
            k.verify(all_snapshots="yes")
    assert cli.main(["verify", path]) == 0
    assert cli.main(["verify", path, "--all-snapshots"]) == 1
    printed = capsys.readouterr()
    assert f"snapshot at position {old}" in printed.out + printed.err
