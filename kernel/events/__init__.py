"""The kernel's own events, one module per domain (the registry names them).

These types are written only by the kernel's commands (``k.work.*`` …); the
public ``k.append`` refuses them so that the rules of each domain cannot be
bypassed. Applications define their own events with :class:`eventkernel.Event`.
"""

from eventkernel.events.base import KernelEvent

__all__ = ["KernelEvent"]
