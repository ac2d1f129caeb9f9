"""The base of every event the kernel itself writes."""

from __future__ import annotations

from typing import ClassVar

from eventkernel.codec import Event


class KernelEvent(Event):
    """An event owned by a kernel service; ``k.append`` refuses it."""

    __kernel_owned__: ClassVar[bool] = True
