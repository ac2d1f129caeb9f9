-- Metrics: every recorded sample (the event's position is its key).
CREATE TABLE IF NOT EXISTS metrics (
    position    INTEGER PRIMARY KEY,   -- the metric.recorded event
    name        TEXT NOT NULL,
    value       REAL NOT NULL,
    tags        TEXT,                  -- JSON object of str → str
    recorded_at INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS metrics_by_time ON metrics (name, recorded_at);
CREATE INDEX IF NOT EXISTS metrics_by_age ON metrics (recorded_at);
