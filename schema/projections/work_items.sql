-- The work queue: one row per work item, folded from its stream 'work_item:<id>'.
CREATE TABLE IF NOT EXISTS work_items (
    work_item_id      TEXT PRIMARY KEY,
    task_id           TEXT NOT NULL,
    kind              TEXT NOT NULL,
    priority          INTEGER NOT NULL,           -- higher is claimed first
    input             TEXT,                       -- JSON
    status            TEXT NOT NULL,              -- pending|in_progress|completed|failed|cancelled
    attempt           INTEGER NOT NULL,           -- claims so far
    retry_count       INTEGER NOT NULL,           -- retries spent (failures, expiries)
    max_retries       INTEGER NOT NULL,
    token             INTEGER NOT NULL,           -- fencing token of the latest lease
    lease_holder      TEXT,
    lease_acquired_at INTEGER,
    lease_expires_at  INTEGER,
    lease_ms          INTEGER,                    -- the lease's length: heartbeats keep it by default
    heartbeat_at      INTEGER,
    output            TEXT,                       -- JSON
    error             TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    enqueued_position INTEGER NOT NULL,           -- journal position of the enqueue: FIFO order
    position          INTEGER NOT NULL            -- journal position of the last event
) STRICT;

-- claim: highest priority, then oldest, among pending items
CREATE INDEX IF NOT EXISTS work_items_dequeue
    ON work_items (status, priority DESC, enqueued_position);
-- expire_leases and claim's takeover of expired leases: live leases only, so
-- that an enqueue or a finished item does not touch it and it stays small
CREATE INDEX IF NOT EXISTS work_items_lease
    ON work_items (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX IF NOT EXISTS work_items_task
    ON work_items (task_id, enqueued_position);
