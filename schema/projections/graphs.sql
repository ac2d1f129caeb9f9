-- Graph checkpoints (LangGraph's): keys, metadata and journal positions; every
-- serialized value stays in the journal row at `position`, stored once.
CREATE TABLE IF NOT EXISTS graph_checkpoints (
    thread_id            TEXT NOT NULL,
    checkpoint_ns        TEXT NOT NULL,
    checkpoint_id        TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    run_id               TEXT,                -- metadata's run_id, if a str
    channel_versions     TEXT NOT NULL,       -- JSON {channel: version}
    metadata             TEXT NOT NULL,       -- JSON
    created_at           INTEGER NOT NULL,
    position             INTEGER NOT NULL,    -- the graph.checkpoint_saved event
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS graph_checkpoints_run ON graph_checkpoints (run_id) WHERE run_id IS NOT NULL;

-- One row per top-level metadata key of a checkpoint, ordered by (key, value):
-- list(filter=) finds checkpoints through it instead of decoding every one.
-- The checkpoint's own row holds its metadata, which says which rows to
-- delete with it (one B-tree per put, not a second one keyed by checkpoint).
CREATE TABLE IF NOT EXISTS graph_checkpoint_metadata (
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,               -- canonical JSON (sorted keys)
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    PRIMARY KEY (key, value, thread_id, checkpoint_ns, checkpoint_id)
) STRICT, WITHOUT ROWID;

-- Where each channel value is: the event at `position` holds it.
CREATE TABLE IF NOT EXISTS graph_values (
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    channel       TEXT NOT NULL,
    version       TEXT NOT NULL,               -- JSON of the version (1, 1.5 and "1" differ)
    position      INTEGER NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
) STRICT, WITHOUT ROWID;

-- Pending writes, in the order a framework replays them (task_path, task_id, idx).
CREATE TABLE IF NOT EXISTS graph_writes (
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    task_path     TEXT NOT NULL,
    position      INTEGER NOT NULL,            -- the graph.writes_saved event
    item          INTEGER NOT NULL,            -- the write's place in that event's list
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
) STRICT, WITHOUT ROWID;
