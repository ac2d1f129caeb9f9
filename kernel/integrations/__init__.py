"""Backends for orchestration frameworks, each behind its extra:
:mod:`eventkernel.integrations.langgraph` (``pip install eventkernel[langgraph]``)
and :mod:`eventkernel.integrations.adk` (``pip install eventkernel[adk]``)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from eventkernel.aio import DEFAULT_THREADS, AsyncKernel, Threads
from eventkernel.kernel import Kernel
from eventkernel.view import KernelView

T = TypeVar("T")

# The threads that run a backend's calls on a Kernel that is not an
# eventkernel.aio one (shared by every such backend of the process).
_THREADS = Threads(DEFAULT_THREADS, "eventkernel-backend")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on one of the backends' threads, awaited."""
    return await _THREADS.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)


def bind(kernel: Kernel | AsyncKernel | KernelView) -> tuple[Kernel | KernelView, Callable[..., Any]]:
    """The kernel a backend calls, and how its async methods run a call off
    the event loop: on an ``eventkernel.aio`` kernel's pool, or else on the
    backends' threads."""
    if isinstance(kernel, AsyncKernel):
        return kernel.kernel, kernel._call
    return kernel, in_thread


def catching_up(kernel: Kernel | KernelView) -> Callable[[], object]:
    """What a backend calls before a read its framework expects to see every
    commit in, another process's too (as its own backends on a database
    server do): on a kernel on PostgreSQL, :meth:`Kernel.catch_up` (one
    round trip when nothing is new); otherwise nothing (a file's reads see
    every commit, and a view of the past does not move)."""
    if isinstance(kernel, Kernel) and kernel._replica is not None:
        return kernel.catch_up
    return lambda: None


class Closing(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closing)


class Opening(Generic[C]):
    """What a backend's ``from_conn_string`` returns: a context manager, sync
    and async (``async with`` opens and closes off the event loop), that
    makes the backend on a kernel of its own and closes both at the end."""

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._made: C | None = None

    def _open(self) -> C:
        self._made = self._make()
        return self._made

    def _close(self) -> None:
        if self._made is not None:
            self._made.close()

    def __enter__(self) -> C:
        return self._open()

    def __exit__(self, *exc: object) -> None:
        self._close()

    async def __aenter__(self) -> C:
        return await asyncio.to_thread(self._open)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._close)
