-- Retention: the file's policies, and what each run forgot (the audit; the
-- keys themselves are in each run's retention.rows_forgotten events).
CREATE TABLE IF NOT EXISTS retention_policies (
    rule       TEXT PRIMARY KEY,       -- see eventkernel.services.retention.RULES
    days       INTEGER NOT NULL,       -- rows this many days old are forgotten
    set_at     INTEGER NOT NULL,
    position   INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS retention_log (
    position   INTEGER PRIMARY KEY,    -- the retention.rows_forgotten event
    rule       TEXT NOT NULL,
    table_name TEXT NOT NULL,
    rows       INTEGER NOT NULL,       -- how many rows it forgot
    days       INTEGER NOT NULL,
    cutoff_ms  INTEGER NOT NULL,       -- rows last changed at or before this were forgotten
    applied_at INTEGER NOT NULL
) STRICT;
