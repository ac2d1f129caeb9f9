"""Read models: each module owns its tables (``schema/projections/NAME.sql``),
declares ``NAME``, ``VERSION`` and ``HANDLES`` (the event types it folds), one
``apply(conn, recorded, event)`` used for live updates and rebuilds alike,
and the query functions over its tables."""

# Importing any kernel module runs kernel/__init__, which imports the facade,
# which imports this package's modules: let that finish before ours.
import kernel.codec  # noqa: F401  isort: skip
from projections import checkpoints, idempotency_keys, memory_entries, recovery, sessions, tasks, work_items

ALL = (work_items, checkpoints, idempotency_keys, sessions, memory_entries, recovery, tasks)

__all__ = ["ALL", "checkpoints", "idempotency_keys", "memory_entries", "recovery", "sessions", "tasks", "work_items"]
