"""eventkernel for asyncio: the same kernel, the same services, awaitable.

    import eventkernel.aio

    async with eventkernel.aio.open("agents.db") as k:
        item_id = await k.work.enqueue("task-1", {"prompt": "hi"})
        item = await k.work.claim("worker-1", wait_ms=5_000)
        async with k.transaction() as tx:          # one commit for all of it
            await tx.work.complete(item.work_item_id, "worker-1", item.token)
            await tx.memory.put("task:task-1", "done", True)
        async for event in k.subscribe(after=0):
            ...

Every call runs on a thread of the kernel's own pool, so the event loop
never waits on SQLite or on fsync; commands awaited concurrently share a
group commit. A cancelled await never leaves half a command: the command
runs to its end (committed, or refused and undone) and only its answer is
dropped. A transaction runs on one thread of its own from start to end.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from queue import SimpleQueue
from typing import Any, TypeVar

from eventkernel.errors import InvalidArgument, KernelClosed
from eventkernel.journal import LogEntry, Recorded
from eventkernel.kernel import Kernel, Stats
from eventkernel.kernel import open as open_kernel
from eventkernel.registry import DOMAINS
from eventkernel.subscription import Consumer, Subscription
from eventkernel.verify import VerifyReport

T = TypeVar("T")


class ThreadsClosed(RuntimeError):
    """A call handed to :class:`Threads` after ``shutdown``."""


class Threads:
    """Threads that run blocking calls for event loops: ``run(fn)`` returns
    an asyncio future of ``fn()``'s result, run on one of at most
    ``max_threads`` threads (started as needed, kept for the next calls).
    The same work as ``loop.run_in_executor`` on a ThreadPoolExecutor, in
    one queue put and one ``call_soon_threadsafe``: an awaited call costs
    about 60 µs of hand-offs on a 2-core VM where ``asyncio.to_thread``
    costs 105. A future cancelled by its awaiter lets the call run to its
    end; its result is dropped."""

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self.name = name
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None] = \
            SimpleQueue()
        self._threads = 0
        self._idle = 0  # threads waiting for a call that no call has claimed yet
        self._closed = False

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._pid != os.getpid():  # after a fork: the threads (and the lock's holder) stayed in the parent
            self._lock = threading.Lock()
            self._reset()
        with self._lock:
            if self._closed:
                raise ThreadsClosed(f"{self.name}: the threads were shut down")
            if self._idle:
                self._idle -= 1
            elif self._threads < self.max_threads:
                self._threads += 1
                try:
                    threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
                except RuntimeError:  # the system gave no thread: the others serve the queue, if any
                    self._threads -= 1
                    if not self._threads:
                        raise
            self._queue.put((loop, future, fn))
        return future

    def _work(self) -> None:
        queue = self._queue
        while (item := queue.get()) is not None:
            loop, future, fn = item
            try:
                result = fn()
            except BaseException as e:  # handed to the awaiter, as an executor does
                _settle(loop, future, None, e)
            else:
                _settle(loop, future, result, None)
            del item, loop, future, fn  # nothing of this call is held while idle
            result = None
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """No new calls; the threads end once the calls queued have run."""
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._queue.put(None)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop was closed: no one awaits the answer any more

# Threads of a kernel's pool: each awaited call holds one while it runs or
# waits for its group commit, so this bounds how many commands can share one.
DEFAULT_THREADS = 64


def open(path: str, *, threads: int = DEFAULT_THREADS, **options: Any) -> _Opening:
    """Open the journal at ``path`` for asyncio, with the options of
    :func:`eventkernel.open`. Use as ``async with eventkernel.aio.open(p) as k``
    or ``k = await eventkernel.aio.open(p)`` (then ``await k.close()``)."""
    if type(threads) is not int or threads < 1:
        raise InvalidArgument(f"open refused: threads must be an int >= 1, got {threads!r:.60}")
    return _Opening(path, threads, options)


class _Opening:
    """What ``aio.open`` returns: awaitable, and an async context manager."""

    def __init__(self, path: str, threads: int, options: dict[str, Any]) -> None:
        self._path = path
        self._threads = threads
        self._options = options
        self._kernel: AsyncKernel | None = None

    async def _open(self) -> AsyncKernel:
        pool = Threads(self._threads, "eventkernel")
        try:
            kernel = await pool.run(functools.partial(open_kernel, self._path, **self._options))
        except BaseException:
            pool.shutdown()
            raise
        return AsyncKernel(kernel, pool)

    def __await__(self) -> Generator[Any, None, AsyncKernel]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncKernel:
        self._kernel = await self._open()
        return self._kernel

    async def __aexit__(self, *exc: object) -> None:
        if self._kernel is not None:
            await self._kernel.close()


class _Calls:
    """Runs a kernel's methods on a thread pool and awaits them."""

    def __init__(self, pool: Threads) -> None:
        self._pool = pool

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            future = self._pool.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)
        except ThreadsClosed as e:  # the pool was shut down with the kernel
            raise KernelClosed(f"{getattr(fn, '__name__', 'call')} refused: the kernel was closed") from e
        return await future


class AsyncService(_Calls):
    """A domain's service (``k.work``, ``k.memory`` …): every method, awaitable."""

    def __init__(self, service: object, pool: Threads) -> None:
        super().__init__(pool)
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._service, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, *args, **kwargs)

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call


class _Services(_Calls):
    def __init__(self, kernel: Any, pool: Threads) -> None:
        super().__init__(pool)
        for name in DOMAINS:
            setattr(self, name, AsyncService(getattr(kernel, name), pool))

    # For type checkers: every domain's service, each method awaitable.
    work: AsyncService
    checkpoints: AsyncService
    idempotency: AsyncService
    sessions: AsyncService
    memory: AsyncService
    recovery: AsyncService
    tasks: AsyncService


class AsyncKernel(_Services):
    """:class:`eventkernel.Kernel` for asyncio (see the module's docstring)."""

    def __init__(self, kernel: Kernel, pool: Threads) -> None:
        super().__init__(kernel, pool)
        self.kernel = kernel  # the synchronous kernel underneath, shared with its threads

    @property
    def path(self) -> str:
        return self.kernel.path

    @property
    def head(self) -> Awaitable[int]:
        """``await k.head``: the position of the last committed event."""
        return self._call(lambda: self.kernel.head)

    async def append(self, stream: str, events: Sequence[Any], *args: Any, **kwargs: Any) -> int:
        return await self._call(self.kernel.append, stream, events, *args, **kwargs)

    async def read(self, *args: Any, **kwargs: Any) -> AsyncIterator[Recorded]:
        """Events in position order, as ``Kernel.read`` (fetched a page at a time)."""
        async for r in self._iterate(self.kernel.read(*args, **kwargs)):
            yield r

    async def log(self, **kwargs: Any) -> AsyncIterator[LogEntry]:
        async for e in self._iterate(self.kernel.log(**kwargs)):
            yield e

    async def _iterate(self, rows: Iterator[T]) -> AsyncIterator[T]:
        def page() -> list[T]:
            return list(itertools.islice(rows, 1000))

        while batch := await self._call(page):
            for r in batch:
                yield r

    async def table(self, name: str) -> tuple[list[str], list[tuple[object, ...]]]:
        return await self._call(self.kernel.table, name)

    async def catch_up(self) -> int:
        return await self._call(self.kernel.catch_up)

    async def stream_version(self, stream: str) -> int:
        return await self._call(self.kernel.stream_version, stream)

    async def position_at(self, time_ms: int) -> int:
        return await self._call(self.kernel.position_at, time_ms)

    async def verify(self, **kwargs: Any) -> VerifyReport:
        return await self._call(self.kernel.verify, **kwargs)

    async def rebuild(self, name: str | None = None, **kwargs: Any) -> int:
        return await self._call(self.kernel.rebuild, name, **kwargs)

    async def stats(self) -> Stats:
        return await self._call(self.kernel.stats)

    async def diff(self, a: int, b: int, **kwargs: Any) -> Any:
        return await self._call(self.kernel.diff, a, b, **kwargs)

    async def checkpoint(self, mode: Any = "passive") -> tuple[int, int]:
        return await self._call(self.kernel.checkpoint, mode)

    async def backup(self, path: str) -> int:
        return await self._call(self.kernel.backup, path)

    async def erase(self, **kwargs: Any) -> Any:
        return await self._call(lambda: self.kernel.erase(**kwargs))

    async def compact(self, **kwargs: Any) -> Any:
        return await self._call(lambda: self.kernel.compact(**kwargs))

    async def snapshot(self, **kwargs: Any) -> int:
        return await self._call(lambda: self.kernel.snapshot(**kwargs))

    async def snapshots(self) -> list[Any]:
        return await self._call(self.kernel.snapshots)

    async def drop_snapshots(self) -> int:
        return await self._call(self.kernel.drop_snapshots)

    def at(self, position: int | None = None, **kwargs: Any) -> _AsyncView:
        """``async with k.at(p) as then:`` — the read methods as of position ``p``."""
        return _AsyncView(self, position, kwargs)

    def transaction(self) -> AsyncTransaction:
        """``async with k.transaction() as tx:`` — many commands (on ``tx``),
        one commit. Other tasks' commands wait for it (up to busy_timeout_ms)."""
        return AsyncTransaction(self.kernel)

    def subscribe(self, after: int = 0, **kwargs: Any) -> AsyncSubscription:
        """``async for r in k.subscribe(after)`` — as ``Kernel.subscribe``."""
        return AsyncSubscription(self.kernel.subscribe(after, **kwargs), self._pool)

    def consumer(self, name: str, **kwargs: Any) -> AsyncConsumer:
        return AsyncConsumer(self.kernel.consumer(name, **kwargs), self._pool)

    async def close(self) -> None:
        """Close the kernel (its group in flight commits first) and its threads."""
        try:
            await self._call(self.kernel.close)
        finally:
            self._pool.shutdown()

    async def __aenter__(self) -> AsyncKernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncKernel {self.kernel.path!r}>"


class AsyncTransaction:
    """One transaction, run start to end on one thread of its own: commands
    on the object it yields join it; it commits when the block ends and is
    undone if the block raises (or is cancelled)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._pool = Threads(1, "eventkernel-transaction")  # one thread: the transaction is its
        self._context: AbstractContextManager[Kernel] | None = None

    async def __aenter__(self) -> _Services:
        self._context = context = self._kernel.transaction()
        entering = self._pool.run(context.__enter__)
        try:
            await asyncio.shield(entering)
        except asyncio.CancelledError:
            # The transaction may still begin on its thread: end it there
            # (undone) before giving up, or it would hold the journal forever.
            await asyncio.shield(self._abandon(entering))
            raise
        except BaseException:
            self._pool.shutdown()
            raise
        return _Services(self._kernel, self._pool)

    async def _abandon(self, entering: asyncio.Future[Any]) -> None:
        assert self._context is not None
        try:
            try:
                await entering
            except BaseException:
                return  # it never began
            context, error = self._context, asyncio.CancelledError()
            await self._pool.run(lambda: context.__exit__(type(error), error, None))
        finally:
            self._pool.shutdown()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self._context is not None
        # Shielded: a cancellation must not leave the transaction open on its thread.
        try:
            context = self._context
            await asyncio.shield(self._pool.run(lambda: context.__exit__(exc_type, exc, None)))
        finally:
            self._pool.shutdown()


class _AsyncView:
    def __init__(self, k: AsyncKernel, position: int | None, kwargs: dict[str, Any]) -> None:
        self._k = k
        self._position = position
        self._kwargs = kwargs
        self._view: Any = None

    async def __aenter__(self) -> _Services:
        self._view = await self._k._call(self._k.kernel.at, self._position, **self._kwargs)
        services = _Services(self._view, self._k._pool)
        services.head = self._view.head  # type: ignore[attr-defined]
        services.table = functools.partial(self._k._call, self._view.table)  # type: ignore[attr-defined]
        return services

    async def __aexit__(self, *exc: object) -> None:
        await self._k._call(self._view.close)


class AsyncSubscription(_Calls):
    """``async for`` over a :class:`Subscription`. While it waits for a
    commit it holds one thread of the pool, which costs no CPU."""

    def __init__(self, subscription: Subscription, pool: Threads) -> None:
        super().__init__(pool)
        self.subscription = subscription

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Recorded:
        sub = self.subscription
        while True:
            if sub._buffer:
                first: Recorded = sub._buffer.popleft()
                return first
            if sub._closed:
                raise StopAsyncIteration
            if not await self._call(sub.poll):
                await self._call(sub.wait, 1.0)

    def close(self) -> None:
        self.subscription.close()


class AsyncConsumer(_Calls):
    """A :class:`Consumer` for asyncio: the handler is synchronous (it runs
    on the transaction's thread, and its commands join the transaction)."""

    def __init__(self, consumer: Consumer, pool: Threads) -> None:
        super().__init__(pool)
        self.consumer = consumer

    @property
    def position(self) -> Awaitable[int]:
        return self._call(lambda: self.consumer.position)

    async def handle(self, handler: Callable[[Recorded], object], **kwargs: Any) -> int:
        return await self._call(self.consumer.handle, handler, **kwargs)

    async def run(self, handler: Callable[[Recorded], object], **kwargs: Any) -> int:
        return await self._call(self.consumer.run, handler, **kwargs)

    def stop(self) -> None:
        self.consumer.stop()
