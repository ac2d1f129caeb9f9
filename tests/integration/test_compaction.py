"""Compaction: the events before a position move into an archive that is a
journal of its own; the live file keeps a base (position, hash, streams,
the payloads live rows read, the projections there) and gives the space back."""

from __future__ import annotations

import json
import os

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel import cli, compaction

from support import NOTES, Noted, fill, live_tables, rebuilt_tables, refused
from workload import run_steps, step


def tables_at(k: eventkernel.Kernel, position: int) -> dict[str, list[tuple[object, ...]]]:
    with k.at(position) as view:
        return {t: sorted(view._db.conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in view.table_names()}


def test_the_prefix_moves_to_a_verifiable_archive_and_the_file_continues_from_its_base(tmp_path, clock):
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "archive.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        k.memory.put("team:early", "k", 1)
        k.memory.put("team:early", "k", 2)
        fill(k, 600)
        head = k.head
        cut = head // 2
        rows = [(r.position, r.hash) for r in k.read()]
        then = {p: tables_at(k, p) for p in (cut, cut + 7, head)}
        live = live_tables(k)
        report = k.verify()
        k.snapshot(every=100)
        done = k.compact(before=cut + 1, archive=archive)
        assert (done.base, done.events, done.archive) == (cut, cut, archive)
        assert done.base_hash == dict(rows)[cut].hex() and done.bytes_after < done.bytes_before
        # the live file: the same tables, verified from its base, rebuilt from it
        assert live_tables(k) == live
        after = k.verify()
        assert after.ok, after.problems
        assert (after.head, after.head_hash) == (report.head, report.head_hash)
        assert any("archive" in n for n in after.notes)
        assert rebuilt_tables(k) == live == rebuilt_tables(k, bulk=False)
        assert k.rebuild() == head and live_tables(k) == live
        assert [(r.position, r.hash) for r in k.read()] == rows[cut:]
        for p, tables in then.items():
            assert tables_at(k, p) == tables, p
        with pytest.raises(eventkernel.InvalidArgument, match=f"before the journal's base {cut}.*{archive}"):
            k.at(cut - 1)
        # the archive: positions 1..cut with the same hashes, its head hash the base's
        with eventkernel.open(archive, read_only=True) as a:
            checked = a.verify()
            assert checked.ok, checked.problems
            assert (checked.head, checked.head_hash) == (cut, done.base_hash)
            assert [(r.position, r.hash) for r in a.read()] == rows[:cut]
            assert {t: r for t, r in tables_at(a, cut).items()} == then[cut]
            assert {t: sorted(rows_, key=repr) for t, rows_ in ((t, a.table(t)[1]) for t in a.table_names())} \
                == then[cut]
        # commands go on: versions of streams whose events all moved continue
        assert k._db.conn.execute("SELECT count(*) FROM journal WHERE stream = 'memory:team:early/k'").fetchone() \
            == (0,)
        assert k.stream_version("memory:team:early/k") == 2 and k.memory.get("team:early", "k").version == 2
        assert k.memory.put("team:early", "k", 3).version == 3
        assert [e.value for e in k.memory.history("team:early", "k")] == [1, 2, 3]
        fill(k, 50, seed=5)
        assert k.verify().ok and rebuilt_tables(k) == live_tables(k)
        k.snapshot(every=100)  # the history after the base again; each compared with the journal from it
        assert k.verify(all_snapshots=True).ok
    with eventkernel.open(path, clock=clock) as k:  # reopens: its tail chains from the base
        assert k.verify().ok


def test_a_second_compaction_chains_archives_and_leaves_one_event(tmp_path, clock):
    path = str(tmp_path / "live.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 200)
        first = k.compact(before=100, archive=str(tmp_path / "a1.db"))
        fill(k, 100, seed=2)
        live = live_tables(k)
        head = k.head
        second = k.compact(before=head, archive=str(tmp_path / "a2.db"))  # all but the last event
        assert second.base == head - 1 and k._db.conn.execute("SELECT count(*) FROM journal").fetchone() == (1,)
        assert live_tables(k) == live and k.verify().ok
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:  # one row left: it chains from the base
        assert k.verify().ok and rebuilt_tables(k) == live_tables(k)
        k.memory.put("user:0", "k0", "after")
        assert k.verify().ok
    with eventkernel.open(str(tmp_path / "a2.db"), read_only=True) as a2:
        report = a2.verify()
        assert report.ok and report.head == head - 1 and report.head_hash == second.base_hash
        assert next(a2.read()).position == first.base + 1  # itself based on the first archive


def test_langgraph_checkpoints_of_an_idle_thread_stay_readable(tmp_path, clock):
    from langgraph.checkpoint.base import empty_checkpoint

    from eventkernel.integrations.langgraph import EventKernelSaver

    path = str(tmp_path / "lg.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        saver = EventKernelSaver(k)
        config = {"configurable": {"thread_id": "idle", "checkpoint_ns": ""}}
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": ["hello", b"bytes too"]}
        cp["channel_versions"] = {"messages": "1"}
        saved = saver.put(config, cp, {"source": "input", "step": 0}, {"messages": "1"})
        saver.put_writes(saved, [("messages", "pending")], "task-1")
        before = saver.get_tuple(config)
        fill(k, 200)
        done = k.compact(before=k.head - 5, archive=str(tmp_path / "lg-archive.db"))
        assert done.payloads_kept >= 2
        after = saver.get_tuple(config)
        assert after.checkpoint == before.checkpoint and after.pending_writes == before.pending_writes
        assert [t.config for t in saver.list(config)] == [before.config]
        with k.at(k.head) as view:
            assert EventKernelSaver(view).get_tuple(config).checkpoint == before.checkpoint
        assert k.verify().ok


def test_refused_compactions_write_nothing(tmp_path, clock):
    path = str(tmp_path / "live.db")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"not a journal")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 50)
        head = k.head
        for before in (0, 1, head + 1):
            with refused(k, eventkernel.InvalidArgument, "before must be between 2 and the head"):
                k.compact(before=before, archive=str(tmp_path / "a.db"))
        with refused(k, eventkernel.InvalidArgument, "exists and is not a journal"):
            k.compact(before=10, archive=str(foreign))
        with refused(k, eventkernel.InvalidArgument, "cannot be the journal itself"):
            k.compact(before=10, archive=path)
        with refused(k, eventkernel.InvalidArgument, "does not exist"):
            k.compact(before=10, archive=str(tmp_path / "nowhere" / "a.db"))
        with k.transaction(), pytest.raises(eventkernel.InvalidArgument, match="inside this thread's transaction"):
            k.compact(before=10, archive=str(tmp_path / "a.db"))
        k.compact(before=20, archive=str(tmp_path / "a.db"))
        with refused(k, eventkernel.InvalidArgument, "exists and is not this journal's archive up to position 29"):
            k.compact(before=30, archive=str(tmp_path / "a.db"))
        assert not os.path.exists(tmp_path / "nowhere")
    with eventkernel.open(path, read_only=True) as k, pytest.raises(eventkernel.ReadOnly):
        k.compact(before=30, archive=str(tmp_path / "b.db"))
    with eventkernel.open(":memory:") as k:
        fill(k, 10)
        with pytest.raises(eventkernel.InvalidArgument, match="in-memory"):
            k.compact(before=5, archive=str(tmp_path / "m.db"))


def test_a_compaction_needs_every_projection_of_the_file(tmp_path, clock):
    """A process opened without an application's projection appends its
    events without folding them; had it compacted them into an archive, the
    projection would never have seen them. The compaction is refused
    (nothing written, no archive); from a process with the projection it runs."""
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "a.db")
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        k.append("note:1", [Noted(text="one")])
    with eventkernel.open(path, clock=clock) as k:
        for i in range(3):
            k.append("note:1", [Noted(text=f"more {i}")])
        with refused(k, eventkernel.CommandRejected, "projections this process does not apply \\('notes'"):
            k.compact(before=k.head, archive=archive)
        assert not os.path.exists(archive)
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        assert [text for _, text in k.table("notes")[1]] == ["one", "more 0", "more 1", "more 2"]
        k.compact(before=k.head, archive=archive)
        assert k.verify().ok and live_tables(k) == rebuilt_tables(k)


def test_a_compaction_folds_first_what_another_process_appended(tmp_path, clock):
    """The process with the projection is open while another appends its
    events without it: its compaction folds them in before they move to the
    archive (they were lost to its table: the events had moved away before
    its next command would have folded them)."""
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "a.db")
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k, eventkernel.open(path, clock=clock) as other:
        k.append("note:1", [Noted(text="one")])
        for i in range(3):
            other.append("note:1", [Noted(text=f"more {i}")])
        other.work.enqueue("t", {})  # (the last event stays)
        k.compact(before=k.head, archive=archive)
        assert [text for _, text in live_tables(k)["notes"]] == ["one", "more 0", "more 1", "more 2"]
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems


def test_an_archive_left_by_a_stopped_compaction_is_used(tmp_path, clock):
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "archive.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 100)
        hash_at = {r.position: r.hash for r in k.read()}
        # the archive was written, then the process stopped before the live file changed
        compaction._write_archive("compact", k._db, k._projector, 40, hash_at[40], archive)
        written = os.path.getmtime(archive)
        assert k._db.conn.execute("SELECT count(*) FROM journal_base").fetchone() == (0,)
        done = k.compact(before=41, archive=archive)
        assert done.base == 40 and os.path.getmtime(archive) == written and k.verify().ok


def test_a_subject_that_predates_the_base_is_erased_with_its_archive(tmp_path, clock):
    """Its events are in the archive and what they made is in the base's
    snapshot: without the archive the erasure is refused; with it, no byte
    of the subject is left in either file, and both verify."""
    import glob
    import zlib

    path, archive = str(tmp_path / "live.db"), str(tmp_path / "a.db")
    secrets_ = ("SSN-111-22-3333", "SSN-444-55-6666")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        k.memory.put("person:ann", "ssn", secrets_[0])
        k.sessions.create("app", "ann", session_id="s-ann", state={"card": secrets_[1]})
        fill(k, 60)
        k.compact(before=30, archive=archive)
        k.sessions.append_event("s-ann", actor="ann", content="after the base")
        k.memory.put("person:bob", "ssn", "bob's")

        def anywhere() -> list[str]:
            found = []
            for name in glob.glob(path + "*") + glob.glob(archive + "*"):
                with open(name, "rb") as f:
                    raw = f.read()
                found += [f"{name}: {s}" for s in secrets_ if s.encode() in raw]
            for (blob,) in k._db.conn.execute("SELECT data FROM snapshot_pages"):
                found += [f"snapshot: {s}" for s in secrets_ if s.encode() in zlib.decompress(blob)]
            return found

        assert anywhere()
        for selector in ({"stream_prefix": "memory:person:ann"}, {"stream": "session:s-ann"}):
            with refused(k, eventkernel.InvalidArgument, "before the journal's base 29.*give archive="):
                k.erase(**selector, reason="asked")
        with refused(k, eventkernel.InvalidArgument, "is not this journal's archive"):
            k.erase(stream="session:s-ann", reason="asked", archive=path)
        live_head = k.head
        first = k.erase(stream_prefix="memory:person:ann", reason="asked", actor="dpo", archive=archive)
        second = k.erase(stream="session:s-ann", reason="asked", archive=archive)
        assert (first.events, second.events) == (1, 2)  # the session: its creation archived, one event live
        assert k.head == live_head + 2
        assert anywhere() == []
        assert k.memory.get("person:ann", "ssn") is None and k.memory.get("person:bob", "ssn").value == "bob's"
        with pytest.raises(eventkernel.NotFound):
            k.sessions.get("s-ann")
        report = k.verify()
        assert report.ok, report.problems
        assert rebuilt_tables(k) == live_tables(k)
        (event,) = [e for e in k.log(types=["journal.payloads_erased"]) if e.data.get("stream") == "session:s-ann"]
        assert event.meta["archive"] == archive
        assert k.erase(stream="session:s-ann", reason="again", archive=archive).events == 0  # nothing left
    with eventkernel.open(archive, read_only=True) as a:
        checked = a.verify()
        assert checked.ok and checked.head == 29
        assert a.memory.get("person:ann", "ssn") is None
        with pytest.raises(eventkernel.NotFound):
            a.sessions.get("s-ann")


def test_an_archive_whose_last_event_was_erased_opens(tmp_path, clock):
    """The erasure's own event is in the live file, so an archive's last
    event may be one it erased: the check of the tail at open took its blank
    payload for a tail that does not chain, and the archive could no longer
    be opened, read-only or not."""
    path, archive = str(tmp_path / "live.db"), str(tmp_path / "a.db")
    with eventkernel.open(path, clock=clock) as k:
        k.append("note:1", [Noted(text="kept")])
        k.append("note:2", [Noted(text="zebra-one")], correlation_id="subject")
        k.append("note:2", [Noted(text="zebra-two")], correlation_id="subject")  # the archive's last event
        k.append("note:1", [Noted(text="stays live")])
        k.compact(before=4, archive=archive)
        assert k.erase(correlation_id="subject", reason="asked", archive=archive).events == 2
    for read_only in (True, False):
        with eventkernel.open(archive, read_only=read_only) as a:
            report = a.verify()
            assert report.ok and report.head == 3, report.problems
            assert [getattr(r.event, "text", None) for r in a.read()] == ["kept", None, None]
    with open(archive, "rb") as f:
        assert b"zebra" not in f.read()


def test_a_file_with_an_application_projection_compacts_twice_and_erases_into_its_archives(tmp_path, clock):
    """The second compaction opened the first archive's copy without the
    application's projections, whose base it could not rebuild from (the
    base holds them): it failed. So did an erasure into that archive."""
    path, first, second = str(tmp_path / "live.db"), str(tmp_path / "a1.db"), str(tmp_path / "a2.db")
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        for i in range(4):
            k.append("note:1", [Noted(text=f"early {i}")])
        k.compact(before=3, archive=first)
        for i in range(3):
            k.append("note:2", [Noted(text=f"zebra {i}")], correlation_id="subject")
        k.append("note:1", [Noted(text="later")])
        k.compact(before=k.head, archive=second)
        assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
        assert k.erase(correlation_id="subject", reason="asked", archive=second).events == 3
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems
    with eventkernel.open(second, read_only=True, projections=[NOTES]) as a:
        report = a.verify()
        assert report.ok, report.problems
        assert [text for _, text in a.table("notes")[1]] == [f"early {i}" for i in range(4)]
    for name in (path, second):
        with open(name, "rb") as f:
            assert b"zebra" not in f.read()


def test_a_process_without_the_application_projection_reads_backs_up_and_rebuilds_a_compacted_file(tmp_path, clock):
    """The base holds every projection of the compacting process, the
    application's too; a process without it (the CLI, a backup's check, a
    worker) needed exactly that set to build from the base, so it could not
    verify, view the past, rebuild, or back up the file ("failed
    verification"). It now uses the base for its own projections and leaves
    the others out."""
    from eventkernel import backup

    path = str(tmp_path / "live.db")
    with eventkernel.open(path, clock=clock, projections=[NOTES]) as k:
        for i in range(5):
            k.append("note:1", [Noted(text=f"n{i}")])
            k.memory.put("ns", "k", i)
        k.compact(before=6, archive=str(tmp_path / "a.db"))
        notes = live_tables(k)["notes"]
    with eventkernel.open(path, read_only=True) as r:  # as the CLI's read commands open it
        report = r.verify()
        assert report.ok, report.problems
        with r.at(8) as then:
            assert then.memory.get("ns", "k").value == 3 and "notes" not in then.table_names()
    with eventkernel.open(path, clock=clock) as w:
        w.rebuild()
        assert live_tables(w) == rebuilt_tables(w) and w.verify().ok
        assert w.backup(str(tmp_path / "b.db")) == 10
    assert backup.restore(str(tmp_path / "b.db"), str(tmp_path / "restored.db")) == 10
    with eventkernel.open(str(tmp_path / "restored.db"), clock=clock, projections=[NOTES]) as k:
        assert live_tables(k)["notes"] == notes and live_tables(k) == rebuilt_tables(k) and k.verify().ok


def test_the_compact_command(tmp_path, clock, capsys):
    path = str(tmp_path / "live.db")
    with eventkernel.open(path, clock=clock, snapshot_every=0) as k:
        fill(k, 80)
    assert cli.main(["compact", path, "--before", "41", "--archive", str(tmp_path / "a.db"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["base"] == 40 and out["events"] == 40 and out["archive"] == str(tmp_path / "a.db")
    assert cli.main(["verify", path]) == 0
    assert cli.main(["verify", str(tmp_path / "a.db")]) == 0
    capsys.readouterr()
    assert cli.main(["compact", path, "--before", "41", "--archive", str(tmp_path / "b.db")]) == 1
    assert "before must be between 42" in capsys.readouterr().err
    raw = apsw.Connection(path)
    assert raw.execute("SELECT min(position) FROM journal").fetchone() == (41,)
    raw.close()
    assert cli.main(["erase", path, "--prefix", "session:", "--reason", "asked"]) == 1
    assert "give archive=" in capsys.readouterr().err
    assert cli.main(["erase", path, "--prefix", "session:", "--reason", "asked", "--archive",
                     str(tmp_path / "a.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] > 0
    assert cli.main(["verify", path]) == 0 and cli.main(["verify", str(tmp_path / "a.db")]) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=2, max_size=20), cut=st.floats(0.1, 0.9), at=st.floats(0, 1))
def test_rebuilt_equals_live_across_compactions_of_every_domain(tmp_path_factory, steps, cut, at):
    """The central property with a compaction at a random moment of a random
    workload over every domain: live tables equal a rebuild from the base,
    verify is ok, and so is the archive, whose head hash is the base's."""
    clock = eventkernel.FrozenClock(1_000)
    where = tmp_path_factory.mktemp("c")
    archive = str(where / "archive.db")
    done = []
    with eventkernel.open(str(where / "live.db"), clock=clock, snapshot_every=0) as k:

        def compact_once(i: int) -> None:
            if i == int(at * len(steps)) and k.head >= 2 and not done:
                done.append(k.compact(before=max(2, int(k.head * cut)), archive=archive))

        run_steps(k, clock, steps, before=compact_once)
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems
        if done:
            with eventkernel.open(archive, read_only=True) as a:
                checked = a.verify()
                assert checked.ok and (checked.head, checked.head_hash) == (done[0].base, done[0].base_hash)
