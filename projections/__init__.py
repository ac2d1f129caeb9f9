"""Read models: each module owns its tables (``schema/projections/NAME.sql``),
declares ``NAME``, ``VERSION`` and ``HANDLES`` (the event types it folds), one
``apply(conn, recorded, event)`` used for live updates and rebuilds alike,
and the query functions over its tables."""

from eventkernel.projections import checkpoints, idempotency_keys, memory_entries, recovery, sessions, tasks, work_items

ALL = (work_items, checkpoints, idempotency_keys, sessions, memory_entries, recovery, tasks)

__all__ = ["ALL", "checkpoints", "idempotency_keys", "memory_entries", "recovery", "sessions", "tasks", "work_items"]
