-- Conversation sessions (the shape Google ADK uses).
CREATE TABLE IF NOT EXISTS sessions (
    session_id       TEXT PRIMARY KEY,
    app_name         TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    project_id       TEXT,
    status           TEXT NOT NULL,            -- created | active | paused | terminated | archived
    state            TEXT NOT NULL,            -- JSON object: the session's own keys (no app:/user:/temp:)
    metadata         TEXT,                     -- JSON
    event_count      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    terminated_at    INTEGER,
    archived_at      INTEGER,
    position         INTEGER NOT NULL,
    version          INTEGER NOT NULL          -- the stream's version after the session's last event
) STRICT;
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (app_name, user_id, updated_at);
-- Retention's sessions_archived rule: archived sessions by age (other sessions never touch it).
CREATE INDEX IF NOT EXISTS sessions_archived ON sessions (updated_at) WHERE status = 'archived';

-- The conversation, in order.
CREATE TABLE IF NOT EXISTS session_events (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,              -- 1, 2, 3 ... per session
    actor       TEXT NOT NULL,                 -- who spoke or acted
    content     TEXT,                          -- JSON
    state_delta TEXT NOT NULL,                 -- JSON object (temp: keys removed)
    recorded_at INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) STRICT;

-- app: keys (user_id = '') and user: keys shared across sessions; one row per
-- change, so the value as of any position is one lookup.
CREATE TABLE IF NOT EXISTS session_shared_state (
    app_name TEXT NOT NULL,
    user_id  TEXT NOT NULL,                    -- '' for app: keys
    key      TEXT NOT NULL,                    -- with its prefix, e.g. 'app:theme'
    position INTEGER NOT NULL,
    value    TEXT NOT NULL,                    -- JSON
    PRIMARY KEY (app_name, user_id, key, position)
) STRICT;
