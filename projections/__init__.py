"""Read models: each module owns its tables (``schema/projections/NAME.sql``),
declares ``NAME``, ``VERSION`` and ``HANDLES`` (the event types it folds), one
``apply(conn, recorded, event)`` used for live updates and rebuilds alike,
and the query functions over its tables."""

from projections import work_items

ALL = (work_items,)

__all__ = ["ALL", "work_items"]
