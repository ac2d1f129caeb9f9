"""eventkernel.aio: the same kernel for asyncio."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings

import pytest

import eventkernel
import eventkernel.aio
from eventkernel.journal import command_event_id

BOTH_ENGINES = True  # the tests taking ``journal`` run on a file and on PostgreSQL


def run(coro):
    return asyncio.run(coro)


def test_open_both_ways_and_every_service_is_awaitable(journal):
    async def main():
        async with journal.aio() as k:
            item_id = await k.work.enqueue("t", {"n": 1})
            assert (await k.work.get(item_id)).status == "pending"
            await k.memory.put("ns", "k", 1)
            assert (await k.memory.get("ns", "k")).value == 1
            assert await k.head == 2
            assert (await k.verify()).ok
            assert [r.type async for r in k.read()] == ["work_item.enqueued", "memory.put"]
            async with k.at(1) as then:
                assert await then.memory.get("ns", "k") is None
        k = await journal.aio()
        try:
            assert await k.head == 2
        finally:
            await k.close()
        with pytest.raises(eventkernel.KernelClosed):
            await k.work.enqueue("t", None)

    run(main())


def test_the_loop_never_waits_on_sqlite(journal):
    async def main():
        async with journal.aio() as k:
            ticks = 0
            stop = False

            async def ticker():
                nonlocal ticks
                while not stop:
                    ticks += 1
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(ticker())
            loop_thread = threading.get_ident()
            seen_threads = set()
            original = k.kernel.work.enqueue

            def spy(*a, **kw):
                seen_threads.add(threading.get_ident())
                return original(*a, **kw)

            k.kernel.work.enqueue = spy
            k.work = eventkernel.aio.AsyncService(k.kernel.work, k._pool)
            await asyncio.gather(*(k.work.enqueue("t", i) for i in range(100)))
            stop = True
            await t
            assert seen_threads and loop_thread not in seen_threads and ticks > 0  # the loop ran meanwhile

    run(main())


def test_gathered_commands_share_group_commits(tmp_path):
    from support import slow_sync_vfs

    async def main(vfs):
        async with eventkernel.aio.open(str(tmp_path / "g.db"), vfs=vfs) as k:
            before = k.kernel._db.commit_count
            ids = await asyncio.gather(*(k.work.enqueue("t", i, command_id=f"g{i}") for i in range(200)))
            assert len(set(ids)) == 200
            assert k.kernel._db.commit_count - before < 100
            assert (await k.verify()).ok

    with slow_sync_vfs(0.002) as vfs:
        run(main(vfs))


def test_an_async_transaction_commits_once_or_not_at_all(journal):
    async def main():
        async with journal.aio() as k:
            async with k.transaction() as tx:
                await tx.work.enqueue("t", 1)
                await tx.memory.put("ns", "k", 1)
            assert await k.head == 2
            with pytest.raises(RuntimeError):
                async with k.transaction() as tx:
                    await tx.work.enqueue("t", 2)
                    raise RuntimeError("undo")
            assert await k.head == 2
            with pytest.raises(eventkernel.InvalidArgument):
                async with k.transaction() as tx:
                    await tx.work.enqueue("t", 3)
                    await tx.work.enqueue("", 4)  # refused: the block ends with it, all undone
            assert await k.head == 2

    run(main())


def test_a_cancelled_await_never_leaves_half_a_command_nor_loses_an_acknowledged_one(journal):
    async def main():
        async with journal.aio() as k:
            acked = []

            async def one(i):
                cid = f"c{i}"
                async with k.transaction() as tx:
                    await tx.work.enqueue("t", i, command_id=cid)
                    await tx.memory.put("ns", f"k{i}", i, command_id=cid + "m")
                acked.append(cid)

            tasks = [asyncio.create_task(one(i)) for i in range(40)]
            await asyncio.sleep(0.05)
            for t in tasks[::3]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            events = [r.event_id async for r in k.read()]
            for cid in acked:
                assert command_event_id(cid, 0) in events and command_event_id(cid + "m", 0) in events
            pairs = {e.split(":")[1].rstrip("m") for e in events if e}
            for cid in pairs:  # never one half of a transaction without the other
                assert (command_event_id(cid, 0) in events) == (command_event_id(cid + "m", 0) in events)
            assert (await k.verify()).ok

    run(main())


def test_async_subscriptions_and_blocking_claims(journal):
    async def main():
        async with journal.aio() as k:
            got = []

            async def follow():
                async for r in k.subscribe(after=0):
                    got.append(r.position)
                    if len(got) == 3:
                        return

            f = asyncio.create_task(follow())
            claim = asyncio.create_task(k.work.claim("w", wait_ms=5_000))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            for i in range(3):
                await k.work.enqueue("t", i)
            await asyncio.wait_for(f, 5)
            item = await asyncio.wait_for(claim, 5)
            assert got == [1, 2, 3] and item is not None and time.monotonic() - started < 2

    run(main())


def test_the_threads_run_calls_side_by_side_up_to_their_bound_and_hand_back_results_and_errors():
    pool = eventkernel.aio.Threads(3, "test")
    together = threading.Barrier(3, timeout=10)  # three calls must run at once to pass it
    names = []

    def meet(i):
        together.wait()
        names.append(threading.current_thread().name)
        return i

    def fail():
        raise KeyError("from the thread")

    async def main():
        assert await asyncio.gather(*(pool.run(lambda i=i: meet(i)) for i in range(3))) == [0, 1, 2]
        with pytest.raises(KeyError, match="from the thread"):
            await pool.run(fail)
        names.clear()
        assert await asyncio.gather(*(pool.run(lambda i=i: threading.current_thread().name) for i in range(20)))
        return {n for n in await asyncio.gather(*(pool.run(lambda: threading.current_thread().name)
                                                   for _ in range(20)))}

    used = run(main())
    assert 1 <= len(used) <= 3  # never more threads than the bound
    pool.shutdown()
    with pytest.raises(eventkernel.aio.ThreadsClosed, match="shut down"):
        run(_on(pool, lambda: None))


def test_a_cancelled_await_lets_the_call_finish_and_the_threads_serve_the_next():
    pool = eventkernel.aio.Threads(1, "test")
    release, finished = threading.Event(), threading.Event()

    def slow():
        release.wait(10)
        finished.set()
        return "dropped"

    async def main():
        task = asyncio.ensure_future(pool.run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await pool.run(lambda: "next") == "next"  # the one thread came back
        assert finished.is_set()

    run(main())
    pool.shutdown()


def test_the_threads_serve_a_forked_child():
    import multiprocessing

    pool = eventkernel.aio.Threads(2, "test")
    assert run(_on(pool, os.getpid)) == os.getpid()  # threads started in the parent

    def child(out):
        out.put(run(_on(pool, os.getpid)))

    context = multiprocessing.get_context("fork")
    out = context.Queue()
    process = context.Process(target=child, args=(out,))
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads: here that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()
    got = out.get(timeout=30)
    process.join(30)
    assert got == process.pid
    pool.shutdown()


async def _on(pool, fn):
    return await pool.run(fn)
