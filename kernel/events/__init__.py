"""The kernel's own events, one module per domain.

These types are written only by the kernel's commands (``k.work.*`` …); the
public ``k.append`` refuses them so that the rules of each domain cannot be
bypassed. Applications define their own events with :class:`eventkernel.Event`.
"""

from eventkernel.events import checkpoints, commands, idempotency, memory, recovery, sessions, tasks, work
from eventkernel.events.base import KernelEvent

# The stream kinds ('<kind>:<id>') the kernel's commands write: ``k.append``
# refuses application events there, and ``verify`` reports any it finds.
KERNEL_STREAM_KINDS = frozenset({
    "agent", "checkpoint", "command", "idempotency", "memory", "recovery", "session", "task", "work_item", "workflow",
})

__all__ = [
    "KERNEL_STREAM_KINDS", "KernelEvent", "checkpoints", "commands", "idempotency", "memory", "recovery", "sessions",
    "tasks", "work",
]
