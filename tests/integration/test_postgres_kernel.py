"""The whole kernel on PostgreSQL: ``eventkernel.open("postgresql://…")``
gives the same Kernel, its journal on the server and its projections in a
replica file of this process. What differs from a file, and must hold:
commands decide on the state every process shares, reads follow other
processes, a replica reopens and catches up, a lost COMMIT is retried
exactly by command id."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import eventkernel
import eventkernel.aio
from eventkernel import postgres
from eventkernel.errors import CommitOutcomeUnknown, InvalidArgument, JournalCorrupt, NotFound

from support import (
    NOTES,
    AnswerLost,
    Noted,
    connection_lost_at_commit,
    deaf,
    in_thread,
    live_tables,
    rebuilt_tables,
    until,
)


def test_a_command_decides_on_the_servers_state_not_its_replicas(pg_url: str) -> None:
    """B's replica does not follow (its thread stopped): its reads are stale,
    but its commands take the server's lock and catch up first, so a claim
    never takes an item another process holds."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        b._replica._stop.set()  # type: ignore[union-attr]
        b._replica._follower.join(10)  # type: ignore[union-attr]
        item = a.work.enqueue("task", {"n": 1})
        with pytest.raises(NotFound):
            b.work.get(item)  # not followed yet
        claimed = b.work.claim("worker-b", lease_ms=60_000)
        assert claimed is not None and claimed.work_item_id == item and claimed.token == 1
        assert a.work.claim("worker-a", lease_ms=60_000) is None  # B's claim is on the server: A sees it
        assert a.work.get(item).lease_holder == "worker-b"
        b.work.complete(item, "worker-b", claimed.token, output={"ok": True})
        until(lambda: a.work.get(item).status == "completed")  # A follows the server
        a.memory.put("user:a", "k", 1)
        assert b.memory.get("user:a", "k") is None  # B does not follow, until its next command
        b.memory.put("user:b", "k", 2)
        assert b.memory.get("user:a", "k").value == 1
        until(lambda: a.head == b.head == 5)
        for k in (a, b):
            assert live_tables(k) == rebuilt_tables(k)
            assert k.verify().ok
        with postgres.open_journal(pg_url) as j:
            assert j.head_hash() == (a.verify().head, a.verify().head_hash)


def test_a_claim_that_finds_nothing_does_not_take_the_shared_lock(pg_url: str) -> None:
    """Workers polling an empty queue must not serialise every writer of every
    process: with its replica at the server's head, a claim that finds nothing
    answers from it. One that finds something, or whose replica is behind,
    takes the lock (and waits for it)."""
    with eventkernel.open(pg_url, busy_timeout_ms=300) as k:
        item = k.work.enqueue("task", None)
        claimed = k.work.claim("w", lease_ms=60_000)
        assert claimed is not None
        head = k.head
        with psycopg.connect(pg_url) as holder:  # another client holds the write lock
            holder.execute("SELECT position FROM eventkernel.journal_head FOR UPDATE")
            # (a claim that took the lock would raise JournalBusy after busy_timeout_ms)
            assert k.work.claim("w2", lease_ms=1000) is None
            assert k.work.claim("w2", lease_ms=1000, wait_ms=200) is None
            with pytest.raises(eventkernel.JournalBusy):
                k.work.claim("w2", lease_ms=1000, command_id="bound")  # an id to bind: the lock
            with pytest.raises(eventkernel.JournalBusy):
                k.work.enqueue("task", None)
            holder.rollback()
        assert k.head == head
        # a lease that ran out by the server's clock is claimable: the lock is taken, the item taken over
        k.work.release(item, "w", claimed.token)
        again = k.work.claim("w", lease_ms=1)
        assert again is not None
        time.sleep(0.05)
        taken = k.work.claim("w3", lease_ms=60_000)
        assert taken is not None and taken.work_item_id == item and taken.lease_holder == "w3"


def test_a_claim_of_an_item_the_replica_holds_asks_the_server_nothing_first(pg_url: str) -> None:
    """The round trip that lets a claim find nothing without the lock is
    made only when the replica holds no pending item: with one, the claim
    runs at once. A pending item
    another process took meanwhile is decided under the lock: the claim
    takes the next, or finds nothing."""
    with eventkernel.open(pg_url) as a, deaf(eventkernel.open(pg_url)) as b:
        assert b._replica is not None
        asked: list[str] = []
        current = b._replica.current
        b._replica.current = lambda doing: asked.append(doing) or current(doing)  # type: ignore[method-assign]
        first, second = a.work.enqueue("t", {"n": 1}), a.work.enqueue("t", {"n": 2})
        assert b.catch_up() == a.head
        mine = b.work.claim("b", lease_ms=60_000)
        assert mine is not None and mine.work_item_id == first and asked == []
        assert a.work.claim("a", lease_ms=60_000).work_item_id == second  # b's replica still shows it pending
        assert b.work.claim("b", lease_ms=60_000) is None  # decided on the server's state
        assert asked == []
        assert b.work.claim("b", lease_ms=60_000) is None  # now the replica holds none: the server is asked
        assert asked == ["work.claim"]
        assert live_tables(b) == rebuilt_tables(b)


def test_reads_follow_what_other_processes_commit(pg_url: str) -> None:
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        sub = b.subscribe()
        a.sessions.create("app", "u1", session_id="s-1", state={"x": 1})
        until(lambda: b.head == a.head)
        assert b.sessions.get("s-1").state == {"x": 1}
        got = next(iter(sub))
        assert got.stream == "session:s-1"
        sub.close()


def test_a_writing_processes_follower_leaves_the_folding_to_its_writes(pg_url: str) -> None:
    """While B writes command after command, each of its writes folds what A
    committed when it takes the lock: B's follower does not pull the same
    rows beside them (it pulled at nearly every one of A's commits, and
    waited for B's writes to do it). Once B stops, it follows A again."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        assert b._replica is not None
        pulls = []
        pull = b._replica.pull
        b._replica.pull = lambda *args, **kw: pulls.append(1) or pull(*args, **kw)  # type: ignore[method-assign]
        stop = threading.Event()

        def a_writes() -> int:
            n = 0
            while not stop.is_set():
                a.work.enqueue("by-a", {"n": n})
                n += 1
            return n

        thread, box = in_thread(a_writes)
        for i in range(150):
            b.work.enqueue("by-b", {"n": i})
        stop.set()
        thread.join(30)
        assert box.get("result", 0) >= 30, box  # A committed all along
        assert len(pulls) <= box["result"] // 5, (len(pulls), box["result"])
        during = len(pulls)
        a.work.enqueue("after", {})
        until(lambda: b.head == a.head)  # B idle: its follower pulls again
        assert len(pulls) > during
        assert len(b.work.list(task_id="by-a")) == box["result"]
        assert live_tables(b) == rebuilt_tables(b)


def test_the_follower_reads_no_head_from_the_server_once_it_listens(pg_url: str) -> None:
    """The commits' notifications carry their heads: after the first read of
    the head (once listening), B's follower asks the server for none of
    them, and still follows every one of A's commits."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        assert b._replica is not None
        a.work.enqueue("first", {})
        until(lambda: b.head == a.head)
        listener = b._replica.pg._listener
        assert listener is not None
        statements: list[str] = []
        execute = listener.execute
        listener.execute = lambda query, *args, **kw: statements.append(str(query)) or execute(query, *args, **kw)
        for i in range(20):
            a.work.enqueue("t", {"n": i})
            until(lambda: b.head == a.head)
        assert statements == []
        assert len(b.work.list(task_id="t")) == 20


def test_catch_up_reads_what_another_process_just_committed(pg_url: str) -> None:
    """Reads lag other processes by about a notification; ``k.catch_up()``
    folds what the server holds at once, so the read after it sees every
    commit made before it. Inside a transaction (whose first command caught
    up under the lock) it folds nothing. The async kernel has it too."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        for i in range(30):
            item = a.work.enqueue("t", {"n": i})
            assert b.catch_up() == a.head
            assert b.work.get(item).input == {"n": i}
        a.work.enqueue("t", {"n": "before b's transaction"})
        with b.transaction():
            b.work.enqueue("t", {"n": "b's"})  # (under the lock: what a committed is folded first)
            assert b.catch_up() == b.head == a.head + 1
        assert a.catch_up() == b.head

        async def main() -> int:
            async with eventkernel.aio.open(pg_url) as c:
                a.memory.put("user:x", "k", 1)
                return await c.catch_up()

        assert asyncio.run(main()) == a.head


def test_a_table_read_on_a_replica_holds_what_another_process_just_committed(pg_url: str) -> None:
    """``k.table()`` catches up first on PostgreSQL, as on a file it folds an
    application projection first: it agrees with the journal."""
    with eventkernel.open(pg_url, projections=[NOTES]) as a, deaf(eventkernel.open(pg_url, projections=[NOTES])) as b:
        for i in range(5):
            a.append("note:x", [Noted(text=f"n{i}")])
            assert [row[1] for row in b.table("notes")[1]] == [f"n{j}" for j in range(i + 1)]


def test_a_replica_file_reopens_catches_up_and_belongs_to_one_journal(pg_url: str, tmp_path: Path) -> None:
    mine = str(tmp_path / "mine.db")
    with eventkernel.open(pg_url, replica=mine) as k:
        k.work.enqueue("task", None, work_item_id="wi-1")
    with eventkernel.open(pg_url) as other:
        other.work.enqueue("task", None, work_item_id="wi-2")
        head = other.head
    with eventkernel.open(pg_url, replica=mine) as k:
        assert k.head == head  # caught up on open
        assert [w.work_item_id for w in k.work.list()] == ["wi-1", "wi-2"]
        assert k.verify().ok
    with eventkernel.open(pg_url, schema="another") as elsewhere:
        elsewhere.work.enqueue("task", None, work_item_id="wi-x")
    with pytest.raises(JournalCorrupt, match="not a replica"):
        eventkernel.open(pg_url, replica=mine, schema="another")
    with pytest.raises(InvalidArgument, match="replica= is for a postgresql:// URL"):
        eventkernel.open(str(tmp_path / "file.db"), replica=mine)
    with pytest.raises(InvalidArgument, match="read_only"):
        eventkernel.open(pg_url, read_only=True)


def test_a_lost_commit_is_retried_exactly_by_command_id(pg_url: str) -> None:
    """The connection dies while the server runs the COMMIT: the server rolled
    back, the client cannot know it, so it reports the outcome unknown, keeps
    nothing in its replica, and the retry by command id appends exactly once."""
    with eventkernel.open(pg_url) as k:
        k.work.enqueue("task", None, work_item_id="wi-0")
        before = k.head
        with (
            connection_lost_at_commit(pg_url, "NEW.stream = 'work_item:wi-1'"),
            pytest.raises(CommitOutcomeUnknown, match="Retry with the same command_id"),
            k.transaction(),
        ):
            k.work.enqueue("task", {"n": 1}, work_item_id="wi-1", command_id="enqueue-1")
        assert k.head == before  # neither the server nor the replica kept it
        first = k.work.enqueue("task", {"n": 1}, work_item_id="wi-1", command_id="enqueue-1")
        again = k.work.enqueue("task", {"n": 1}, work_item_id="wi-1", command_id="enqueue-1")
        assert first == again == "wi-1"
        assert k.head == before + 1
        assert k.verify().ok


def test_a_commit_whose_answer_is_lost_after_the_server_committed_it_is_kept_once(pg_url: str) -> None:
    """The server commits, then the connection is lost before the client
    hears it (a one-round-trip commit): the kernel asks the server once the
    session that sent it is gone, finds its rows there, and returns as if it
    had heard; the replica keeps them too, and a retry by id appends nothing."""
    with AnswerLost(pg_url) as proxy, eventkernel.open(proxy.url, one_round_trip=True) as k:
        k.work.enqueue("task", None, work_item_id="wi-0")
        before = k.head
        proxy.arm()
        assert k.work.enqueue("task", {"n": 1}, work_item_id="wi-1", command_id="enqueue-1") == "wi-1"
        assert k._replica.optimistic_tx  # type: ignore[union-attr]  (it was committed in one round trip)
        assert proxy.lost.is_set() and k.head == before + 1
        assert k.work.enqueue("task", {"n": 1}, work_item_id="wi-1", command_id="enqueue-1") == "wi-1"
        assert k.head == before + 1 and k.work.get("wi-1").input == {"n": 1}
        k.memory.put("user:a", "k", 1)  # and the kernel goes on, on a new connection
        assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
        head = k.head
    with eventkernel.open(pg_url) as other:
        assert other.head == head and other.work.get("wi-1").input == {"n": 1} and other.verify().ok


def test_a_commit_under_the_lock_whose_answer_is_lost_is_an_unknown_outcome_retried_exactly(pg_url: str) -> None:
    """The same loss with ``one_round_trip=False`` (or when the lock is
    taken first): the outcome is reported unknown, and the retry by command
    id returns what the commit that did happen returned, appending nothing."""
    with AnswerLost(pg_url) as proxy, eventkernel.open(proxy.url, one_round_trip=False) as k:
        k.work.enqueue("task", None, work_item_id="wi-0")
        before = k.head
        proxy.arm()
        with pytest.raises(CommitOutcomeUnknown, match="Retry with the same command_id"):
            k.work.enqueue("task", {"n": 1}, command_id="enqueue-1")
        assert proxy.lost.is_set()
        first = k.work.enqueue("task", {"n": 1}, command_id="enqueue-1")
        assert k.work.enqueue("task", {"n": 1}, command_id="enqueue-1") == first
        assert k.head == before + 1 and [w.work_item_id for w in k.work.list()][1:] == [first]
        assert live_tables(k) == rebuilt_tables(k) and k.verify().ok


def test_a_consumers_position_is_the_servers_shared_by_every_process(pg_url: str) -> None:
    """Two processes (two kernels, two replicas) run the same consumer: each
    event is handled once in all, the position read anywhere is the server's,
    and one that moved it first makes the other's move a conflict with its
    commands undone."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        b._replica._stop.set()  # type: ignore[union-attr]  # b does not follow: handle() fetches what it needs
        b._replica._follower.join(10)  # type: ignore[union-attr]
        for i in range(6):
            a.work.enqueue(f"t{i}", {"i": i})
        on_a, on_b = a.consumer("mailer", types=["work_item.enqueued"]), b.consumer("mailer", types=["work_item.enqueued"])

        def sender(k: eventkernel.Kernel) -> Any:
            return lambda r: k.memory.put("sent", r.event.task_id, k is a)

        assert on_a.handle(sender(a), limit=2) == 2
        assert on_b.position == on_a.position == 2  # b's replica keeps no position of its own
        assert on_b.handle(sender(b)) == 4
        assert on_a.handle(sender(a)) == 0
        until(lambda: a.head == b.head)
        sent = {e.key: e.value for e in a.memory.list("sent")}
        assert sent == {"t0": True, "t1": True, "t2": False, "t3": False, "t4": False, "t5": False}
        assert on_a.position == on_b.position == b.head

        a.work.enqueue("t6", None)
        start, head = on_b.position, a.head  # b reads where to start, then a moves it first
        on_a.reset(head)
        with pytest.raises(eventkernel.ConcurrencyConflict), b.transaction():
            b.memory.put("sent", "t6", "from b")
            on_b._move(start, head)  # what handle() does after the handler
        assert a.memory.get("sent", "t6") is None  # b's put was undone with its move
        on_a.reset(0)
        assert on_b.position == 0


def test_verify_checks_the_servers_journal_and_the_replica_against_it(pg_url: str) -> None:
    with eventkernel.open(pg_url) as k, eventkernel.open(pg_url) as other:
        for i in range(3):
            k.work.enqueue("task", {"i": i})
        other.memory.put("user:a", "k", 1)  # appended by another process: verify brings the replica up to it
        report = k.verify()
        assert report.ok, report.problems
        assert (report.head, report.head_hash) == k._replica.pg.head_hash()  # type: ignore[union-attr]
        assert k.verify(anchor=(report.head, report.head_hash)).ok
        with psycopg.connect(pg_url, autocommit=True) as admin:  # a superuser changes a payload on the server
            admin.execute("ALTER TABLE eventkernel.journal DISABLE TRIGGER USER")
            admin.execute("UPDATE eventkernel.journal SET data = replace(data, '\"i\":1', '\"i\":9') "
                          "WHERE position = 2")
        broken = k.verify()
        assert not broken.ok and broken.first_bad_position == 2
        assert broken.problems[0].startswith("on the server: position 2: the chain hash does not match")
        with psycopg.connect(pg_url, autocommit=True) as admin:  # and the last row's hash, which the replica holds
            admin.execute("UPDATE eventkernel.journal SET hash = sha256(hash) WHERE position = 4")
        assert any("the replica's row 4 is not the server's" in p for p in k.verify().problems)


def test_verify_reads_the_server_in_one_snapshot_while_other_processes_write(pg_url: str) -> None:
    """Its statements read one snapshot: a commit landing between the last
    page of rows and the head row was reported as "the head row says
    position n + 1, the journal ends at n" (8 of 10 runs under a steady
    writer)."""
    with eventkernel.open(pg_url) as k, eventkernel.open(pg_url) as writer:
        with writer.transaction():
            for i in range(1_500):  # more than a page of rows
                writer.work.enqueue("task", {"i": i})
        stop = threading.Event()
        thread, outcome = in_thread(lambda: _write_until(writer, stop))
        try:
            reports = [k._replica.pg.verify() for _ in range(6)]  # type: ignore[union-attr]
            reports += [k.verify() for _ in range(3)]
        finally:
            stop.set()
            thread.join(30)
        assert outcome.get("error") is None and outcome["result"] > 0
        assert [r.problems for r in reports] == [[]] * len(reports)
        assert reports[-1].head > 1_500


def _write_until(k: eventkernel.Kernel, stop: threading.Event) -> int:
    n = 0
    while not stop.is_set():
        k.work.enqueue("task", {"n": n})
        n += 1
    return n


def _server_payloads(url: str) -> list[tuple[int, str, str | None]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT position, data, meta FROM eventkernel.journal ORDER BY position")]


def test_an_erasure_blanks_the_server_and_every_replica(pg_url: str, tmp_path: Path) -> None:
    """One process erases a subject: the server's rows are blanked in the
    erasure's transaction and their digests kept, so the chain verifies; a
    replica following at the time and one opened later (from a file that
    held the payloads) fold the erasure: the same tables as the eraser's,
    and no byte of the payloads left in their files."""
    secret = b"alice@example.com"
    later = str(tmp_path / "later.db")
    with eventkernel.open(pg_url, replica=later) as c:
        c.memory.put("user:bob", "email", "bob@example.com")
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url, replica=str(tmp_path / "b.db")) as b:
        a.memory.put("user:alice", "email", secret.decode(), actor="alice")
        a.memory.put("user:alice", "city", "Lyon")
        a.work.enqueue("mail", {"to": "alice"})
        until(lambda: b.head == a.head)
        assert b.memory.get("user:alice", "email").value == secret.decode()
        done = a.erase(stream_prefix="memory:user:alice", reason="right to be forgotten", actor="dpo")
        assert done.events == 2 and "memory_entries" in done.projections
        assert a.memory.get("user:alice", "email") is None
        blank = [(p, d, m) for p, d, m in _server_payloads(pg_url) if p in (2, 3)]
        assert blank == [(2, "null", None), (3, "null", None)]
        assert a.verify().ok
        until(lambda: b.head == a.head and b.memory.get("user:alice", "email") is None)
        assert live_tables(b) == live_tables(a) == rebuilt_tables(a)
        assert b.verify().ok
        b_file = tmp_path / "b.db"
        until(lambda: secret not in b_file.read_bytes() and not (
            Path(str(b_file) + "-wal").exists() and secret in Path(str(b_file) + "-wal").read_bytes()))
        assert b.work.list()[0].input == {"to": "alice"}  # what was not erased stays
        with eventkernel.open(pg_url, replica=later) as c:  # a replica that held nothing of alice: just follows
            assert c.memory.get("user:alice", "email") is None
            assert live_tables(c) == live_tables(a)
            assert c.verify().ok
    with psycopg.connect(pg_url, autocommit=True) as admin:  # the trigger allows nothing else
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            admin.execute("UPDATE eventkernel.journal SET data = 'null', meta = NULL WHERE position = 1")
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            admin.execute("UPDATE eventkernel.journal SET type = 'x' WHERE position = 2")


def test_erasures_interleaved_with_writes_of_another_process_converge(pg_url: str) -> None:
    """A writer thread of one process keeps putting memories of several
    subjects while another process erases subjects one after the other (its
    replica and the writer's following each other all along): at the end
    both replicas hold the same tables, equal to a rebuild, and verify, and
    no erased payload is left on the server."""
    import threading

    with eventkernel.open(pg_url) as writer, eventkernel.open(pg_url) as eraser:
        stop = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            i = 0
            try:
                while not stop.is_set():
                    writer.memory.put(f"user:{i % 4}", f"k{i}", f"secret-{i % 4}-{i}")
                    i += 1
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        t = threading.Thread(target=write)
        t.start()
        try:
            for subject in range(3):
                until(lambda s=subject: bool(eraser.memory.list(f"user:{s}")))  # type: ignore[misc]
                eraser.erase(stream_prefix=f"memory:user:{subject}/", reason="asked")
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors
        writer.memory.put("user:x", "last", 1)
        until(lambda: eraser.head == writer.head)
        for k in (writer, eraser):
            assert k.verify().ok
            assert live_tables(k) == rebuilt_tables(k)
        assert live_tables(writer) == live_tables(eraser)
        with psycopg.connect(pg_url) as conn:
            erased = {p for (p,) in conn.execute("SELECT position FROM eventkernel.erased")}
            leftover = conn.execute(
                "SELECT count(*) FROM eventkernel.journal WHERE position = ANY(%s) AND data != 'null'",
                (list(erased),)).fetchone()[0]
        assert erased and leftover == 0


def test_a_replica_that_folded_the_payloads_forgets_them_when_it_reopens(pg_url: str, tmp_path: Path) -> None:
    secret = b"carol@example.com"
    kept = tmp_path / "kept.db"
    with eventkernel.open(pg_url, replica=str(kept)) as b:
        b.memory.put("user:carol", "email", secret.decode())
        b.memory.put("user:dave", "email", "dave@example.com")
    assert secret in kept.read_bytes() + (Path(str(kept) + "-wal").read_bytes()
                                          if Path(str(kept) + "-wal").exists() else b"")
    with eventkernel.open(pg_url) as a:
        a.erase(stream="memory:user:carol/email", reason="asked")
    with eventkernel.open(pg_url, replica=str(kept)) as b:
        assert b.memory.get("user:carol", "email") is None
        assert b.memory.get("user:dave", "email").value == "dave@example.com"
        assert b.verify().ok
        until(lambda: secret not in kept.read_bytes())


def test_the_async_kernel_on_postgres(pg_url: str) -> None:
    async def main() -> None:
        async with eventkernel.aio.open(pg_url, schema="s_" + uuid.uuid4().hex[:8]) as k:
            ids = await asyncio.gather(*(k.work.enqueue("task", {"n": i}) for i in range(20)))
            assert len(set(ids)) == 20
            item = await k.work.claim("w", lease_ms=60_000)
            assert item is not None
            assert (await k.verify()).ok

    asyncio.run(main())


def test_a_server_restart_between_commands_does_not_fail_the_next_one(pg_cluster: Any, pg_url: str) -> None:
    """The server restarts (a failover, maintenance) while two processes sit
    idle: the next command, and the next read of the server (a claim that
    finds nothing, a consumer's position), replace the dropped connection
    and succeed, and the other process's follower reconnects."""
    with eventkernel.open(pg_url) as a, eventkernel.open(pg_url) as b:
        a.memory.put("user:a", "k", 1)
        assert a.work.claim("w", lease_ms=1000) is None and a.consumer("c").position == 0  # the reader in use
        until(lambda: b.head == a.head)
        pg_cluster.stop("fast")
        pg_cluster.start()
        assert a.work.claim("w", lease_ms=1000) is None  # no error
        assert a.consumer("c").position == 0
        a.memory.put("user:a", "k", 2)  # no error
        until(lambda: b.memory.get("user:a", "k").value == 2, 20)
        b.work.enqueue("task", None)  # b's writer connection was dropped too
        until(lambda: a.head == b.head == 3, 20)
        assert a.verify().ok


def test_a_server_crash_mid_command_loses_no_acknowledged_command(pg_cluster: Any, pg_url: str) -> None:
    with eventkernel.open(pg_url) as k:
        acked: list[str] = []
        import threading

        def crash() -> None:
            time.sleep(0.5)
            pg_cluster.stop("immediate")

        t = threading.Thread(target=crash)
        t.start()
        try:
            for i in range(100_000):
                acked.append(k.work.enqueue("task", {"n": i}, work_item_id=f"wi-{i}", command_id=f"c-{i}"))
        except eventkernel.JournalError:
            pass
        finally:
            t.join()
            pg_cluster.start()
        assert len(acked) > 10
        in_flight = f"wi-{len(acked)}"
        # the command in flight, retried by its id, takes effect exactly once
        assert k.work.enqueue("task", {"n": len(acked)}, work_item_id=in_flight, command_id=f"c-{len(acked)}") \
            == in_flight
    with eventkernel.open(pg_url) as fresh:
        ids = [w.work_item_id for w in fresh.work.list(limit=None)]
        assert ids[:len(acked)] == acked or set(acked) <= set(ids)
        assert set(acked) | {in_flight} == set(ids)
        assert fresh.verify().ok


def test_a_lone_command_on_a_current_replica_commits_in_one_round_trip(pg_url: str) -> None:
    """Once the process has learnt the server's clock (opening it takes the
    lock once), a lone command of a process whose replica knows of no newer
    commit decides on it and sends check, rows and COMMIT at once; the
    journal is the same."""
    with eventkernel.open(pg_url, one_round_trip=True) as k:
        k.work.enqueue("first", None)
        assert k._replica.optimistic_tx  # type: ignore[union-attr]
        item = k.work.enqueue("second", {"n": 2})
        assert k._replica.optimistic_tx  # type: ignore[union-attr]
        claimed = k.work.claim("w", lease_ms=60_000)
        assert claimed is not None and claimed.token == 1 and k._replica.optimistic_tx  # type: ignore[union-attr]
        k.work.complete(claimed.work_item_id, "w", claimed.token)
        with k.transaction():  # a transaction of the caller's takes the lock first: it cannot be run again
            k.work.enqueue("third", None)
        assert not k._replica.optimistic_tx  # type: ignore[union-attr]
        assert k.work.get(claimed.work_item_id).status == "completed" and k.work.get(item).status == "pending"
        assert k.head == 5  # three enqueues, a claim, a completion
        assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
    with postgres.open_journal(pg_url) as j:
        times = [r.recorded_at for r in j.read()]
        assert times == sorted(times)
        assert abs(times[-1] - time.time() * 1000) < 5_000


def _server_ms(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()[0])


def test_a_one_round_trip_time_is_never_ahead_of_the_servers_clock(pg_url: str) -> None:
    """A command decided on the replica takes this machine's clock set to the
    server's; the check under the lock refuses a time ahead of the server's
    clock (here an estimate 80 ms fast, well inside the 100 ms allowed
    behind it), and the command runs again under the lock at the server's
    time: a lease is never taken over before the server's clock says it ran
    out. An estimate behind the server's clock, within 100 ms, commits in
    one round trip. The same holds for a ``PgJournal``'s appends."""
    with eventkernel.open(pg_url, one_round_trip=True) as k:
        replica = k._replica
        assert replica is not None
        k.work.enqueue("first", None)  # (the lock: the server's clock learnt)
        k.work.enqueue("second", None)
        assert replica.optimistic_tx and replica.offset is not None
        replica.offset += 80
        k.work.enqueue("ahead", None)
        assert not replica.optimistic_tx  # refused by the check: run again under the lock
        assert next(iter(k.read(after=k.head - 1))).recorded_at <= _server_ms(pg_url)
        replica.contended_until = 0.0
        replica.offset -= 20  # (measured again under the lock: now about 20 ms behind)
        k.work.enqueue("behind", None)
        assert replica.optimistic_tx
        assert k.head == 4 and live_tables(k) == rebuilt_tables(k) and k.verify().ok
    with postgres.open_journal(pg_url, one_round_trip=True) as j:
        j.append("note:s", [Noted(text="a")])
        j.append("note:s", [Noted(text="b")])
        assert j._offset is not None and j._contended_until == 0.0
        j._offset += 80
        j.append("note:s", [Noted(text="ahead")])
        assert j._contended_until > time.monotonic()  # refused once, then under the lock
        assert next(iter(j.read(after=j.head - 1))).recorded_at <= _server_ms(pg_url)
        times = [r.recorded_at for r in j.read()]
        assert times == sorted(times)


def test_by_default_every_command_takes_the_lock_first_and_the_servers_clock_under_it(pg_url: str) -> None:
    """Opened with the server's clock and ``one_round_trip`` left as it is
    (or ``False``), no command decides on the replica: each takes the lock
    first, its time the server's clock read under the lock, whatever this
    machine's estimate of it (here 80 ms fast, which a one-round-trip commit
    would have had refused). With a clock of the caller's, whose time is the
    same either way, the default commits in one round trip."""
    for options in ({}, {"one_round_trip": False}):
        with eventkernel.open(pg_url, **options) as k:  # type: ignore[arg-type]
            replica = k._replica
            assert replica is not None
            for n in range(3):
                before = _server_ms(pg_url)
                k.work.enqueue(f"t-{n}", None)
                assert not replica.optimistic_tx
                assert before <= next(iter(k.read(after=k.head - 1))).recorded_at <= _server_ms(pg_url)
                assert replica.offset is not None
                replica.offset += 80
            assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
    with eventkernel.open(pg_url, clock=lambda: time.time_ns() // 1_000_000) as k:
        k.work.enqueue("t-6", None)
        k.work.enqueue("t-7", None)
        assert k._replica.optimistic_tx  # type: ignore[union-attr]
        assert k.head == 8 and k.verify().ok
    with pytest.raises(eventkernel.InvalidArgument, match="one_round_trip must be a bool or None"):
        eventkernel.open(pg_url, one_round_trip="no")  # type: ignore[arg-type]


def test_an_optimistic_command_on_a_stale_replica_runs_again_under_the_lock(pg_url: str) -> None:
    """B's replica does not follow and has heard of no newer commit: its
    commands decide on it, the server's check finds the journal moved on,
    and each runs again under the lock, deciding on the shared state: a
    claim takes the item A left, a cancel of an item B has not seen finds it."""
    with eventkernel.open(pg_url, one_round_trip=True) as a, eventkernel.open(pg_url, one_round_trip=True) as b:
        b.memory.put("user:b", "k", 0)  # (B's first command: the lock, the server's clock)
        until(lambda: a.head == b.head)
        b._replica._stop.set()  # type: ignore[union-attr]
        b._replica._follower.join(10)  # type: ignore[union-attr]
        first, second = a.work.enqueue("t", {"n": 1}), a.work.enqueue("t", {"n": 2})
        took = a.work.claim("wa", lease_ms=60_000)
        assert took is not None and took.work_item_id == first
        claimed = b.work.claim("wb", lease_ms=60_000)  # B's replica shows both items pending
        assert claimed is not None and claimed.work_item_id == second and claimed.token == 1
        assert b._replica.contended_until > 0  # type: ignore[union-attr]  (its check failed: the lock first, a while)
        third = a.work.enqueue("t", {"n": 3})
        b._replica.contended_until = 0.0  # type: ignore[union-attr]  (optimistic again at once)
        b.memory.put("user:b", "k", 1)  # optimistic: the server's check fails, it runs again
        b.work.cancel(third, "not needed")  # its replica now holds the item (the catch-up of the run again)
        a._replica._stop.set()  # type: ignore[union-attr]
        a._replica._follower.join(10)  # type: ignore[union-attr]
        a.memory.put("user:a", "k", 1)  # A, now stale: its first try fails, then it catches up
        assert a.work.get(third).status == "cancelled" and a.work.get(second).lease_holder == "wb"
        for k in (a, b):
            assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
        with postgres.open_journal(pg_url) as j:
            assert j.verify().ok and j.head == a.head == b.head
            times = [r.recorded_at for r in j.read()]
            assert times == sorted(times)


def test_an_optimistic_commit_on_a_connection_just_dropped_runs_again(pg_url: str) -> None:
    """The server ends the writer's session right after a command (a
    failover, an administrator): the next command, sent optimistically on
    the dead connection, finds out that nothing was written (the session
    that would have written it is gone, its rows absent) and runs again on a
    new connection, once."""
    with eventkernel.open(pg_url, one_round_trip=True) as k:
        k.memory.put("user:a", "k", 1)
        pid = k._replica.pg._writer.raw.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        head = k.head
        k.memory.put("user:a", "k", 2)  # no error
        assert k.head == head + 1 and k.memory.get("user:a", "k").value == 2
        assert k._replica.pg._writer.raw.info.backend_pid != pid  # type: ignore[union-attr]
        assert live_tables(k) == rebuilt_tables(k) and k.verify().ok


def test_many_optimistic_commits_found_stale_leave_the_connection_sound(pg_url: str) -> None:
    """Two dozen optimistic commits found stale in a row, each run again
    under the lock: every command lands once and the writer's connection
    stays usable. (The lease-contention test across processes is the one
    that caught statements psycopg counted as prepared in an aborted
    pipeline: "prepared statement … does not exist".)"""
    with eventkernel.open(pg_url, one_round_trip=True) as a, eventkernel.open(pg_url, one_round_trip=True) as b:
        b.memory.put("user:b", "k", 0)
        until(lambda: a.head == b.head)
        b._replica._stop.set()  # type: ignore[union-attr]
        b._replica._follower.join(10)  # type: ignore[union-attr]
        for i in range(24):
            if i == 12:
                b.work.enqueue("t", {"n": -1})  # (once more alone: the failed tries fall on other counts)
            a.work.enqueue("t", {"n": i})
            b._replica.contended_until = 0.0  # type: ignore[union-attr]  (optimistic each time)
            b.work.enqueue("t", {"n": i})  # found stale, run again
        assert len(b.work.list(limit=100)) == 49
        for k in (a, b):
            assert live_tables(k) == rebuilt_tables(k) and k.verify().ok
