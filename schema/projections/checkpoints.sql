-- Checkpoints of long runs: append-only, sequence 1, 2, 3 ... per task.
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id   TEXT PRIMARY KEY,
    task_id         TEXT NOT NULL,
    work_item_id    TEXT,
    session_id      TEXT,
    checkpoint_type TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,          -- = version of stream 'checkpoint:<task_id>'
    snapshot        TEXT,                      -- JSON
    created_at      INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    UNIQUE (task_id, sequence_number)
) STRICT;
