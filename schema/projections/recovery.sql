-- Failures and recovery of tasks.
CREATE TABLE IF NOT EXISTS recovery_attempts (
    attempt_id     TEXT PRIMARY KEY,
    task_id        TEXT NOT NULL,
    strategy       TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,           -- 1, 2, ... per task
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    success        INTEGER,                    -- NULL until finished, then 0 or 1
    reasoning      TEXT,
    notes          TEXT,
    resolution_ms  INTEGER,                    -- finished_at - started_at
    position       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS recovery_attempts_task ON recovery_attempts (task_id, attempt_number);
CREATE INDEX IF NOT EXISTS recovery_attempts_finished ON recovery_attempts (finished_at, success, resolution_ms)
    WHERE finished_at IS NOT NULL;

-- Failures of the same shape (type + message with numbers and ids masked).
CREATE TABLE IF NOT EXISTS failure_patterns (
    pattern_signature  TEXT PRIMARY KEY,
    failure_type       TEXT NOT NULL,
    error_message_hash TEXT NOT NULL,          -- of the latest message
    example_message    TEXT NOT NULL,          -- the latest message
    occurrence_count   INTEGER NOT NULL,
    first_seen_at      INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL,
    confidence         REAL NOT NULL,          -- 1 - 1/(1 + occurrence_count)
    position           INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS failure_patterns_top
    ON failure_patterns (occurrence_count DESC, last_seen_at DESC, pattern_signature);

CREATE TABLE IF NOT EXISTS recovery_explanations (
    task_id              TEXT PRIMARY KEY,     -- the latest explanation of the task
    failure_summary      TEXT NOT NULL,
    root_cause           TEXT NOT NULL,
    retry_decision       TEXT NOT NULL,
    user_action_required TEXT,
    severity             TEXT NOT NULL,        -- low | medium | high | critical
    created_at           INTEGER NOT NULL,
    position             INTEGER NOT NULL
) STRICT;

-- Per-task counters.
CREATE TABLE IF NOT EXISTS recovery_tasks (
    task_id                  TEXT PRIMARY KEY,
    failure_count            INTEGER NOT NULL,
    recovery_count           INTEGER NOT NULL, -- attempts started
    last_failure_type        TEXT,
    last_failure_at          INTEGER,
    last_recovery_attempt_at INTEGER,
    auto_recovery_enabled    INTEGER NOT NULL,
    position                 INTEGER NOT NULL
) STRICT;
