-- Tasks, workflows (ordered task lists), tool executions and agents.
CREATE TABLE IF NOT EXISTS tasks (
    task_id        TEXT PRIMARY KEY,
    title          TEXT NOT NULL,
    task_type      TEXT NOT NULL,
    status         TEXT NOT NULL,              -- pending | running | completed | failed | cancelled
    config         TEXT,                       -- JSON
    metadata       TEXT,                       -- JSON
    session_id     TEXT,
    parent_task_id TEXT,
    priority       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    error          TEXT,
    position       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS tasks_session ON tasks (session_id, created_at) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS workflows (
    workflow_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    definition  TEXT,                          -- JSON
    created_at  INTEGER NOT NULL,
    position    INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS workflow_tasks (
    workflow_id TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    task_id     TEXT NOT NULL,
    added_at    INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, sequence),
    UNIQUE (workflow_id, task_id)
) STRICT;

CREATE TABLE IF NOT EXISTS tool_executions (
    execution_id TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL,
    tool_name    TEXT NOT NULL,
    arguments    TEXT,                         -- JSON
    output       TEXT,                         -- JSON
    status       TEXT NOT NULL,                -- succeeded | failed | timeout | cancelled
    error        TEXT,
    duration_ms  INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    position     INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tool_executions_task ON tool_executions (task_id, position);

CREATE TABLE IF NOT EXISTS agents (
    agent_id   TEXT PRIMARY KEY,
    task_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    session_id TEXT,
    status     TEXT NOT NULL,                  -- spawned | running | completed | failed | terminated
    spawned_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    position   INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS agents_task ON agents (task_id, spawned_at);
