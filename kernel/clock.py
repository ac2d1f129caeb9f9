"""Clocks. The kernel reads time only through a clock: a zero-argument callable
returning integer milliseconds since the Unix epoch, UTC."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def system_clock() -> int:
    """Wall-clock time in ms since the epoch, UTC."""
    return time.time_ns() // 1_000_000


class FrozenClock:
    """A clock that only moves when told to: for tests, simulations and replays.

    >>> c = FrozenClock(1_000)
    >>> c.advance(250)
    1250
    >>> c()
    1250
    """

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        if isinstance(start_ms, bool) or not isinstance(start_ms, int):
            raise TypeError(f"FrozenClock start_ms must be an int, got {start_ms!r}")
        self._now = start_ms

    def __call__(self) -> int:
        return self._now

    @property
    def now(self) -> int:
        """The current reading, in ms since the epoch."""
        return self._now

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` (>= 0) and return the new reading."""
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise ValueError(f"FrozenClock.advance needs a non-negative int of ms, got {ms!r}")
        self._now += ms
        return self._now

    def __repr__(self) -> str:
        return f"FrozenClock({self._now})"
