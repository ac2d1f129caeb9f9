"""Read models: each module owns its tables (``schema/projections/NAME.sql``),
declares ``NAME``, ``VERSION`` and ``HANDLES`` (the event types it folds), one
``apply(conn, recorded, event)`` used for live updates and rebuilds alike,
and the query functions over its tables. The registry lists them."""
