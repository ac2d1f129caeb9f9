"""The journal on PostgreSQL beyond the shared contract: many writer
processes, a server crash, connections lost at COMMIT, waiting for commits,
moving journals between engines, and the CLI given a URL."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import eventkernel
from eventkernel import postgres, transfer, view
from eventkernel.cli import main
from eventkernel.errors import (
    CommitOutcomeUnknown,
    ConcurrencyConflict,
    InvalidArgument,
    JournalCorrupt,
    KernelClosed,
    KernelError,
    NotAJournal,
    WrongProcess,
)
from eventkernel.events.commands import PayloadsErased
from tests.integration.pg_children import Noted, raw_rows

from support import AnswerLost, connection_lost_at_commit

CHILD = Path(__file__).with_name("pg_children.py")


def run_child(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


MODES = ["default", "one_round_trip"]
"""How the processes of a test open the journal: the default (the lock first,
the server's clock under it) and ``one_round_trip=True``."""


@pytest.mark.parametrize("mode", MODES)
def test_writer_processes_with_rollbacks_leave_a_dense_chain_a_follower_misses_nothing(
        pg_url: str, tmp_path: Path, child_env: dict[str, str], mode: str) -> None:
    """Four processes append at once, some transactions rolled back: positions
    stay dense from 1 in commit order, a follower reading by position sees
    every row exactly once and in order, every acknowledged append is there
    and no rolled-back one, and the chain verifies."""
    postgres.open_journal(pg_url).close()  # the schema, before the writers race to make it
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        with postgres.open_journal(pg_url) as j:
            last = 0
            while not stop.is_set() or last < j.head:
                j.wait(last, 0.2)
                for r in j.read(after=last):
                    seen.append(r.position)
                    last = r.position

    follower = threading.Thread(target=follow)
    follower.start()
    outs = [tmp_path / f"w{i}.txt" for i in range(4)]
    children = [run_child(child_env, "writer", pg_url, f"p{i}", "60", str(i), str(out), mode)
                for i, out in enumerate(outs)]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    stop.set()
    follower.join(60)

    with postgres.open_journal(pg_url) as j:
        rows = raw_rows(j)
        head = j.head
        report = j.verify()
    assert report.ok, report.problems
    assert [r[0] for r in rows] == list(range(1, head + 1))
    assert seen == list(range(1, head + 1))
    acked = {w[1]: int(w[2]) for out in outs for w in lines(out) if w[0] == "ack"}
    rolled = {w[1] for out in outs for w in lines(out) if w[0] == "rolled"}
    assert rolled and acked
    stored = {r[7] for r in rows if r[7] is not None}
    assert stored == set(acked)
    assert not stored & rolled
    assert head == sum(acked.values())


@pytest.mark.parametrize("mode", MODES)
def test_a_server_crash_loses_no_acknowledged_append(pg_cluster: Any, pg_url: str, tmp_path: Path,
                                                     child_env: dict[str, str], mode: str) -> None:
    """`pg_ctl stop -m immediate` while a process appends: after the restart
    every acknowledged append is there, the chain verifies, and the append in
    flight, retried with its event id, is there exactly once."""
    postgres.open_journal(pg_url).close()
    out = tmp_path / "killed.txt"
    child = run_child(child_env, "until_killed", pg_url, str(out), mode)
    deadline = time.monotonic() + 60
    while sum(1 for w in lines(out) if w[0] == "ack") < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    pg_cluster.stop("immediate")
    try:
        _, err = child.communicate(timeout=60)
    finally:
        pg_cluster.start()
    log = lines(out)
    acked = [w[1] for w in log if w[0] == "ack"]
    assert len(acked) >= 50
    assert log[-1][0] == "error", err  # a KernelError, not a crash
    in_flight = [w[1] for w in log if w[0] == "try"][-1]
    with postgres.open_journal(pg_url) as j:
        stored = [r[7] for r in raw_rows(j)]
        assert stored[:len(acked)] == acked  # in order, none lost
        n = int(in_flight.split("-")[1])
        j.append("w:killed", [Noted(text="k", n=n)], event_ids=[in_flight])  # the retry of the unknown outcome
        stored = [r[7] for r in raw_rows(j)]
        assert stored.count(in_flight) == 1
        assert j.verify().ok


def test_a_connection_lost_at_commit_is_an_unknown_outcome_safe_to_retry(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        j.append("note:a", [Noted(text="first")])
        with (
            connection_lost_at_commit(pg_url, "NEW.event_id = 'e-2'"),
            pytest.raises(CommitOutcomeUnknown, match="Retry with the same event_ids"),
            j.transaction(),
        ):
            j.append("note:a", [Noted(text="second")], event_ids=["e-2"])
        assert j.head == 1  # it had not committed
        assert j.append("note:a", [Noted(text="second")], event_ids=["e-2"]) == 2  # a new connection
        assert j.append("note:a", [Noted(text="second")], event_ids=["e-2"]) == 2  # and exactly once
        assert j.verify().ok


def test_an_append_whose_answer_is_lost_is_an_unknown_outcome_retried_exactly_by_event_id(pg_url: str) -> None:
    """The server commits the append, the connection is lost before its
    answer: unknown outcome, and the retry by event id returns the position
    it committed at, appending nothing."""
    with AnswerLost(pg_url) as proxy, postgres.open_journal(proxy.url) as j:
        j.append("w:lost", [Noted(text="a", n=0)], event_ids=["e-0"])
        proxy.arm()
        with pytest.raises(CommitOutcomeUnknown, match="Retry with the same"):
            j.append("w:lost", [Noted(text="b", n=1)], event_ids=["e-1"])
        assert proxy.lost.is_set()
        assert j.append("w:lost", [Noted(text="b", n=1)], event_ids=["e-1"]) == 2  # the position it committed at
        assert j.head == 2 and [r.event.n for r in j.read()] == [0, 1] and j.verify().ok


def test_a_server_restart_between_appends_or_reads_does_not_fail_the_next_one(pg_cluster: Any, pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        assert j.append("note:a", [Noted(text="before")]) == 1
        pg_cluster.stop("fast")
        pg_cluster.start()
        # the writer connection the server dropped is replaced before anything is sent
        assert j.append("note:a", [Noted(text="after")], expected_version=1) == 2
        with j.transaction():
            j.append("note:a", [Noted(text="in a transaction")])
        assert j.stream_version("note:a") == 3
        pg_cluster.stop("fast")  # and its reads: the shared reader the server dropped is replaced
        pg_cluster.start()
        assert j.head == 3 and j.stream_version("note:a") == 3
        pg_cluster.stop("fast")
        pg_cluster.start()
        assert [e.event.text for e in j.read(stream="note:a")] == ["before", "after", "in a transaction"]
        pg_cluster.stop("fast")
        pg_cluster.start()
        assert j.stream_version("note:a") == 3 and j.head_hash()[0] == 3


def test_wait_wakes_on_a_commit_and_times_out_without_one(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j, postgres.open_journal(pg_url) as other:
        started = time.monotonic()
        assert j.wait(0, 0.2) == 0
        assert time.monotonic() - started >= 0.2
        threading.Timer(0.3, lambda: other.append("note:a", [Noted(text="x")])).start()
        started = time.monotonic()
        assert j.wait(0, 20) == 1
        assert time.monotonic() - started < 10
        assert j.wait(0, 0) == 1  # already past: no wait


def test_the_server_clock_stamps_by_default(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        before = time.time_ns() // 1_000_000
        j.append("note:a", [Noted(text="x")])
        j.append("note:a", [Noted(text="y")])
        after = time.time_ns() // 1_000_000
        times = [e.recorded_at for e in j.log()]
    assert before - 1_000 <= times[0] <= times[1] <= after + 1_000  # same machine: the same clock, give or take


def test_one_process_one_journal(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        with pytest.raises(WrongProcess, match="open one journal per process"):
            pickle.dumps(j)
        if hasattr(os, "fork"):
            pid = os.fork()
            if pid == 0:  # the child must not use the parent's connections
                try:
                    j.append("note:a", [Noted(text="child")])
                except WrongProcess:
                    os._exit(0)
                os._exit(1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        j.append("note:a", [Noted(text="parent")])
        assert j.head == 1
    with pytest.raises(KernelClosed):
        j.append("note:a", [Noted(text="late")])


def test_open_refuses_what_is_not_a_journal(pg_url: str) -> None:
    with pytest.raises(NotAJournal, match="holds no eventkernel journal"):
        postgres.open_journal(pg_url, create=False)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA eventkernel")
        admin.execute("CREATE TABLE eventkernel.journal (x int)")
        admin.execute("CREATE TABLE eventkernel.eventkernel_format (format int, created_at bigint)")
        admin.execute("INSERT INTO eventkernel.eventkernel_format VALUES (99, 0)")
    with pytest.raises(NotAJournal, match="format 99"):
        postgres.open_journal(pg_url)
    with pytest.raises(eventkernel.JournalError) as e:  # no such server: a clear error, no password in it
        eventkernel.open("postgresql://someone:secret@127.0.0.1:1/agents?connect_timeout=2")
    assert "connecting to PostgreSQL failed" in str(e.value) and "secret" not in str(e.value)


def test_journal_rows_cannot_be_changed_on_the_server(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        j.append("note:a", [Noted(text="x")])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for sql in ("UPDATE eventkernel.journal SET data = '{}'", "DELETE FROM eventkernel.journal",
                    "TRUNCATE eventkernel.journal",
                    # an erasure's blanking, but of a row whose digests were not kept
                    "UPDATE eventkernel.journal SET data = 'null', meta = NULL"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                admin.execute(sql)


# --- moving journals between engines ------------------------------------------------


def _busy_file(path: str) -> list[Any]:
    """A file with every domain's events, an erased subject and application events."""
    from eventkernel import demo

    demo.run(path, seed=3, out=None)
    with eventkernel.open(path) as k:
        k.append("note:keep", [Noted(text="kept")])
        k.append("note:secret", [Noted(text="to be erased")], correlation_id="subject-1")
        k.erase(correlation_id="subject-1", reason="a request to forget")
        return [(t, k.table(t)) for t in k.table_names()]


def test_sqlite_to_postgres_and_back_keeps_every_row_and_hash(pg_url: str, tmp_path: Path) -> None:
    src, back = str(tmp_path / "src.db"), str(tmp_path / "back.db")
    tables = _busy_file(src)
    with eventkernel.open(src, read_only=True) as k:
        rows, report = raw_rows(k), k.verify()
    assert transfer.copy(src, pg_url) == len(rows)
    with postgres.open_journal(pg_url) as j:
        assert raw_rows(j) == rows
        on_pg = j.verify(anchor=(report.head, report.head_hash))
        assert on_pg.ok and on_pg.head_hash == report.head_hash
        assert j.erased_rows()  # the erased payloads' digests went too
    assert transfer.copy(pg_url, back) == len(rows)
    with eventkernel.open(back, read_only=True) as b:
        assert raw_rows(b) == rows
        assert [(t, b.table(t)) for t in b.table_names()] == tables  # the projections rebuilt there
        assert b.verify(anchor=(report.head, report.head_hash)).ok
    # a repeated copy continues (here: nothing to add); a different journal is refused
    assert transfer.copy(src, pg_url) == len(rows)
    other = str(tmp_path / "other.db")
    with eventkernel.open(other) as o:
        o.append("note:other", [Noted(text="another journal")])
    with pytest.raises(InvalidArgument, match="not the start of"):
        transfer.copy(other, pg_url)


def test_copy_continues_a_journal_that_grew(pg_url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src.db")
    with eventkernel.open(src) as k:
        k.append("note:a", [Noted(text="1")])
        transfer.copy(src, pg_url)
        k.append("note:a", [Noted(text="2"), Noted(text="3")])
        assert transfer.copy(src, pg_url) == 3
        rows = raw_rows(k)
    with postgres.open_journal(pg_url) as j:
        assert raw_rows(j) == rows
        # and the journal goes on on PostgreSQL, chained from the copied head
        assert j.append("note:a", [Noted(text="4")], expected_version=3) == 4
        assert j.verify().ok


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_copy_of_a_journal_erased_meanwhile_completes(engine: str, pg_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process erases a subject while the copy reads the source's
    rows a batch at a time: the rows it reads after the erasure are blanked,
    with erasure records the copy had not read when it began (it refused
    them: "the chain breaks"). What it read before keeps its payload."""
    monkeypatch.setattr(view, "_PAGE", 4)
    monkeypatch.setattr(transfer, "BATCH", 4)
    src = pg_url if engine == "postgres" else str(tmp_path / "src.db")
    source: Any = transfer._Postgres if engine == "postgres" else transfer._Sqlite
    with eventkernel.open(src) as k:
        early = k.append("note:early", [Noted(text="read before the erasure")], correlation_id="subject-1")
        for i in range(6):
            k.append("note:kept", [Noted(text=f"kept {i}")])
        for i in range(6):
            k.append("note:secret", [Noted(text=f"secret {i}")], correlation_id="subject-1")
        reading = source.rows

        def erased_after_the_first_batch(self: Any, after: int) -> Any:
            batches = reading(self, after)
            yield next(batches)
            k.erase(correlation_id="subject-1", reason="a request to forget")
            yield from batches

        monkeypatch.setattr(source, "rows", erased_after_the_first_batch)
        out = str(tmp_path / "copy.db")
        assert transfer.copy(src, out) == k.head
    with eventkernel.open(out, read_only=True) as c:
        report = c.verify()
        assert report.ok, report.problems
        texts = {r.position: getattr(r.event, "text", None) for r in c.read()}
        assert early == 1 and texts[1] == "read before the erasure"  # in the first batch, before the erasure
        assert [texts[p] for p in range(2, 8)] == [f"kept {i}" for i in range(6)]
        assert [texts[p] for p in range(8, 14)] == [None] * 6  # blanked at the source, then read
        assert list(c.read())[-1].type == PayloadsErased.__event_type__


def test_copy_refuses_a_broken_chain_and_a_compacted_file(pg_url: str, tmp_path: Path) -> None:
    with postgres.open_journal(pg_url) as j:
        j.append("note:a", [Noted(text="1"), Noted(text="2")])
    with psycopg.connect(pg_url, autocommit=True) as admin:  # a superuser tampers with a payload
        admin.execute("ALTER TABLE eventkernel.journal DISABLE TRIGGER USER")
        admin.execute("UPDATE eventkernel.journal SET data = '{\"text\":\"changed\",\"n\":0}' WHERE position = 1")
    with postgres.open_journal(pg_url) as j:
        report = j.verify()
    assert not report.ok and report.first_bad_position == 1
    with pytest.raises(JournalCorrupt, match="breaks at position 1"):
        transfer.copy(pg_url, str(tmp_path / "copy.db"))

    compacted = str(tmp_path / "c.db")
    with eventkernel.open(compacted) as k:
        for i in range(3):
            k.append("note:a", [Noted(text=str(i))])
        k.compact(before=3, archive=str(tmp_path / "archive.db"))
    with pytest.raises(InvalidArgument, match="compacted"):
        transfer.copy(compacted, str(tmp_path / "out.db"))


def test_the_cli_reads_and_copies_a_journal_on_postgres(pg_url: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = str(tmp_path / "src.db")
    _busy_file(src)
    capsys.readouterr()
    assert main(["copy", src, pg_url, "--json"]) == 0
    copied = json.loads(capsys.readouterr().out)
    assert main(["verify", pg_url]) == 0
    assert capsys.readouterr().out.startswith(f"ok: head {copied['head']}")
    assert main(["log", pg_url, "--limit", "2", "--json"]) == 0
    assert [json.loads(line)["position"] for line in capsys.readouterr().out.splitlines()] == [1, 2]
    assert main(["show", pg_url, "1"]) == 0
    assert "work_item" in capsys.readouterr().out
    assert main(["replay", pg_url, "--to", "10"]) == 0
    assert "as of position 10" in capsys.readouterr().out
    assert main(["query", pg_url, "SELECT count(*) AS n FROM journal", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": copied["head"]}
    assert main(["diff", pg_url, "5", "10"]) == 0
    assert main(["export", pg_url, "--table", "work_items"]) == 0
    assert main(["stats", pg_url]) == 0
    assert f"head {copied['head']}" in capsys.readouterr().out
    assert main(["copy", pg_url, str(tmp_path / "back.db")]) == 0
    assert main(["verify", str(tmp_path / "back.db")]) == 0
    capsys.readouterr()
    assert main(["demo", pg_url]) == 0  # the domains on the server
    assert "verify: ok" in capsys.readouterr().out
    assert main(["erase", pg_url, "--stream", "note:keep", "--reason", "r"]) == 0
    assert "erased the payloads of 1 events" in capsys.readouterr().out
    assert main(["verify", pg_url]) == 0
    capsys.readouterr()
    assert main(["compact", pg_url, "--before", "3", "--archive", str(tmp_path / "archive.db")]) == 0
    assert "moved 2 events (to position 2)" in capsys.readouterr().out
    assert main(["verify", pg_url]) == 0
    assert main(["copy", pg_url, str(tmp_path / "again.db")]) == 1  # a copy starts at position 1
    assert "is compacted" in capsys.readouterr().err
    assert main(["log", pg_url, "--schema", "nowhere"]) == 1
    assert "holds no eventkernel journal" in capsys.readouterr().err


def test_log_follows_a_journal_on_postgres(pg_url: str, child_env: dict[str, str]) -> None:
    with postgres.open_journal(pg_url) as j:
        j.append("note:a", [Noted(text="before")])
        follower = subprocess.Popen([sys.executable, "-m", "eventkernel", "log", pg_url, "--follow", "--limit", "3",
                                     "--json"], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            j.append("note:a", [Noted(text="during 1")])
            j.append("note:b", [Noted(text="during 2")])
            out, err = follower.communicate(timeout=60)
        finally:
            follower.kill()
    assert follower.returncode == 0, err
    assert [json.loads(line)["data"]["text"] for line in out.splitlines()] == ["before", "during 1", "during 2"]


def test_appends_of_many_threads_share_a_commit_and_a_refusal_stays_its_own(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        j.append("g:conflict", [Noted(text="v1")])
        results: dict[int, Any] = {}

        def append(i: int) -> None:
            try:
                if i == 2:  # a stale expected version: refused alone
                    results[i] = j.append("g:conflict", [Noted(text="stale")], expected_version=0)
                else:
                    results[i] = j.append(f"g:{i}", [Noted(text=str(i))])
            except KernelError as e:
                results[i] = e

        with j.transaction():  # hold the lock while the threads queue
            j.append("g:first", [Noted(text="first")])
            threads = [threading.Thread(target=append, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while len(j._group.queue) < 6:  # type: ignore[union-attr]  # every thread queued behind the lock
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert results == {}
        for t in threads:
            t.join(30)
        assert isinstance(results[2], ConcurrencyConflict)
        positions = sorted(v for i, v in results.items() if i != 2)
        assert positions == [3, 4, 5, 6, 7]
        with psycopg.connect(pg_url) as conn:
            xmins = conn.execute("SELECT count(DISTINCT xmin::text) FROM eventkernel.journal WHERE position >= 3"
                                 ).fetchone()[0]
        assert xmins == 1  # the five queued appends committed in one transaction
        assert [r.stream for r in j.read(after=2)] == sorted(
            (f"g:{i}" for i in range(6) if i != 2), key=lambda s: results[int(s[2:])])
        assert j.verify().ok


def test_many_threads_appending_at_once(pg_url: str) -> None:
    with postgres.open_journal(pg_url) as j:
        got: list[int] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            for n in range(20):
                p = j.append(f"t:{t}", [Noted(text="x", n=n)], expected_version=n)
                with lock:
                    got.append(p)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(got) == list(range(1, 161))
        assert all(j.stream_version(f"t:{t}") == 20 for t in range(8))
        assert j.verify().ok
