"""One Kernel shared by many threads: reads on connections of their own,
transactions that belong to their thread, group commits."""

from __future__ import annotations

import os
import pickle
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.journal import command_event_id

from support import in_thread, live_tables, rebuilt_tables
from workload import commands, resolve

BOTH_ENGINES = True  # the tests taking ``journal`` run on a file and on PostgreSQL


@settings(max_examples=15, deadline=None)
@given(plans=st.lists(st.lists(commands, min_size=1, max_size=12), min_size=2, max_size=6))
def test_many_threads_on_one_kernel_lose_nothing_and_rebuild_equals_live(tmp_path_factory, plans):
    path = str(tmp_path_factory.mktemp("threads") / "shared.db")
    clock = eventkernel.FrozenClock(1_700_000_000_000)
    acked: list[str] = []
    lock = threading.Lock()
    with eventkernel.open(path, clock=clock) as k:
        def work(t: int, plan: list) -> None:
            for i, op in enumerate(plan):
                if op[0] == "advance":
                    continue  # a shared clock moves in one place only
                call = resolve(k, op)
                if call is None:
                    continue
                fn, kwargs = call
                cid = f"t{t}-{i}"
                try:
                    fn(**kwargs, command_id=cid)
                except eventkernel.CommandRejected:
                    continue  # another thread changed what this op expected
                with lock:
                    acked.append(cid)

        threads = [threading.Thread(target=work, args=(t, plan)) for t, plan in enumerate(plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        present = {r.event_id for r in k.read()}
        assert all(command_event_id(c, 0) in present for c in acked)
        assert k.verify().ok
        assert live_tables(k) == rebuilt_tables(k)


def test_a_rebuild_beside_another_threads_commands_fails_neither(journal):
    """A rebuild's swap attaches its build to the writer connection, which
    every thread's commands use: another thread's command between the
    ATTACH and the swap's transaction ran on it at the same time, and both
    failed (apsw refuses a connection two threads use at once)."""
    with journal(snapshot_every=0) as k:
        for i in range(300):
            k.work.enqueue("before", {"i": i})
        stop, failures, done = threading.Event(), [], []

        def writer() -> None:
            while not stop.is_set():
                try:
                    done.append(k.work.enqueue("during", {"n": len(done)}))
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    failures.append(e)
                    return

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            rebuilt = 0
            for _ in range(25):
                try:
                    k.rebuild(from_scratch=True)
                    rebuilt += 1
                except Exception as e:  # noqa: BLE001
                    failures.append(e)
        finally:
            stop.set()
            thread.join()
        assert not failures and rebuilt == 25 and done, failures[:3]
        assert len(k.work.list(limit=None)) == 300 + len(done)
        assert live_tables(k) == rebuilt_tables(k)
        assert k.verify().ok


def test_reads_of_other_threads_never_see_uncommitted_work_nor_wait_for_it(journal):
    with journal() as k:
        k.work.enqueue("before", None)
        inside, release = threading.Event(), threading.Event()

        def holder():
            with k.transaction():
                k.work.enqueue("uncommitted", None)
                assert k.head == 2 and len(k.work.list()) == 2  # its own thread sees its own work
                inside.set()
                release.wait(5)
                raise RuntimeError("undo it")

        t, box = in_thread(holder)
        assert inside.wait(5)
        started = time.monotonic()
        assert k.head == 1
        assert [i.task_id for i in k.work.list()] == ["before"]
        assert [r.position for r in k.read()] == [1] and len(list(k.log())) == 1
        assert len(k.table("work_items")[1]) == 1
        assert time.monotonic() - started < 1  # and none of it waited for the transaction
        release.set()
        t.join()
        assert isinstance(box["error"], RuntimeError)
        assert k.head == 1


def test_a_transaction_belongs_to_its_thread_and_others_wait_for_it(journal):
    with journal() as k:
        inside, release = threading.Event(), threading.Event()

        def holder():
            with k.transaction():
                k.work.enqueue("mine", None, work_item_id="mine")
                inside.set()
                release.wait(5)
                raise RuntimeError("undo mine")

        t, box = in_thread(holder)
        assert inside.wait(5)
        other, other_box = in_thread(lambda: k.work.enqueue("theirs", None, work_item_id="theirs"))
        time.sleep(0.2)
        assert other.is_alive()  # it waits: it does not join the other thread's transaction
        release.set()
        t.join()
        other.join(5)
        assert other_box == {"result": "theirs"}
        assert [i.work_item_id for i in k.work.list()] == ["theirs"]  # theirs committed, mine undone


def test_a_command_waits_for_another_threads_transaction_no_longer_than_busy_timeout(journal):
    with journal(busy_timeout_ms=200) as k:
        inside, release = threading.Event(), threading.Event()

        def holder():
            with k.transaction():
                inside.set()
                release.wait(5)

        t, _ = in_thread(holder)
        assert inside.wait(5)
        started = time.monotonic()
        with pytest.raises(eventkernel.JournalBusy, match="busy_timeout_ms"):
            k.work.enqueue("late", None)
        assert 0.15 < time.monotonic() - started < 2
        with pytest.raises(eventkernel.JournalBusy), k.transaction():
            pass
        release.set()
        t.join()
        assert k.head == 0
        k.work.enqueue("now", None)
        assert k.head == 1


def test_a_group_commits_once_a_refusal_undoes_only_itself_and_later_commands_see_earlier_ones(db_path):
    # (a file's: on PostgreSQL a claim that finds nothing answers from the server's state at once, without
    # queueing behind the transaction)
    with eventkernel.open(db_path) as k:
        group = k._db.group
        results: dict[str, object] = {}
        threads = []

        def queue(name, fn):
            def run():
                try:
                    results[name] = fn()
                except eventkernel.KernelError as e:
                    results[name] = e
            threads.append(threading.Thread(target=run))
            threads[-1].start()
            while len(group.queue) < len(threads):
                time.sleep(0.001)

        with k.transaction():  # holds the journal: the commands queue, in order, behind it
            queue("first", lambda: k.work.enqueue("t", 1, work_item_id="x"))
            queue("duplicate", lambda: k.work.enqueue("t", 2, work_item_id="x"))
            queue("claim", lambda: k.work.claim("w"))
            commits = k._db.commit_count
        for t in threads:
            t.join()
        assert k._db.commit_count == commits + 2  # this empty transaction's, then the whole group's
        assert results["first"] == "x"
        assert isinstance(results["duplicate"], eventkernel.InvalidArgument)
        assert results["claim"].work_item_id == "x"  # it saw the enqueue of its own group
        assert [r.type for r in k.read()] == ["work_item.enqueued", "work_item.claimed"]
        assert k.verify().ok


def test_concurrent_commands_share_commits(tmp_path):
    from support import slow_sync_vfs

    path = str(tmp_path / "slow.db")
    with slow_sync_vfs(0.002) as vfs, eventkernel.open(path, vfs=vfs) as k:
        before = k._db.commit_count
        threads = [threading.Thread(target=lambda t=t: [k.work.enqueue(f"t{t}", n) for n in range(15)]) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        commits = k._db.commit_count - before
        assert k.head == 120
        assert commits < 60, f"120 commands took {commits} commits"
        assert k.verify().ok


def test_a_kernel_does_not_cross_processes(journal):
    with journal() as k:
        k.work.enqueue("t", None)
        with pytest.raises(eventkernel.WrongProcess, match="cannot be pickled"):
            pickle.dumps(k)
        pid = os.fork()
        if pid == 0:  # the child: every use is refused, clearly
            try:
                k.work.enqueue("child", None)
            except eventkernel.WrongProcess as e:
                os._exit(0 if "after fork()" in str(e) and "open one kernel per process" in str(e) else 2)
            except BaseException:
                os._exit(3)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert k.head == 1  # and the parent's kernel works on


def test_close_wakes_waiters_and_every_later_use_raises(journal):
    k = journal()
    sub = k.subscribe(after=0)
    waiting_sub, sub_box = in_thread(lambda: next(sub))
    waiting_claim, claim_box = in_thread(lambda: k.work.claim("w", wait_ms=30_000))
    time.sleep(0.3)
    started = time.monotonic()
    k.close()
    waiting_sub.join(5)
    waiting_claim.join(5)
    assert time.monotonic() - started < 2
    assert isinstance(sub_box.get("error"), eventkernel.KernelClosed)
    assert isinstance(claim_box.get("error"), eventkernel.KernelClosed)
    for use in (lambda: k.head, lambda: k.work.enqueue("t", None), lambda: k.work.list(), lambda: list(k.read())):
        with pytest.raises(eventkernel.KernelClosed, match="the kernel was closed"):
            use()
    k.close()  # idempotent


def test_vector_search_from_many_threads_while_others_index(journal):
    """The in-memory embeddings are shared by the kernel's threads: searches
    racing writes never fail, and once the writes end every thread sees them all."""
    import random

    errors: list[BaseException] = []
    with journal() as k:
        def writer(w: int) -> None:
            rng = random.Random(w)
            try:
                for i in range(40):
                    k.documents.index(f"w{w}/{i}.txt", title="t", content="x",
                                      embedding=[rng.uniform(-1, 1) for _ in range(4)])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def reader() -> None:
            try:
                for _ in range(60):
                    hits = k.documents.search(vector=[1.0, 0.5, 0.0, -0.5], k=5)
                    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        seen = [in_thread(lambda: k.documents.search(vector=[1.0, 0.5, 0.0, -0.5], k=200)) for _ in range(2)]
        for t, out in seen:
            t.join()
        expected = k.documents.search(vector=[1.0, 0.5, 0.0, -0.5], k=200)
        assert len(expected) == 120
        assert all(out.get("result") == expected for _, out in seen), [out.get("error") for _, out in seen]
