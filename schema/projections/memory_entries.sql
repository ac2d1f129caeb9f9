-- Versioned long-term memory: one row per version of (namespace, key).
-- Version n of a memory is version n of stream 'memory:<namespace>/<key>'.
CREATE TABLE IF NOT EXISTS memory_entries (
    namespace   TEXT NOT NULL,                 -- hierarchical, e.g. 'user:alice:preferences'
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL,              -- 1, 2, 3 ...
    value       TEXT,                          -- JSON
    memory_type TEXT NOT NULL,                 -- semantic | episodic | procedural
    is_deleted  INTEGER NOT NULL,              -- 1 after a delete or an expiry
    operation   TEXT NOT NULL,                 -- put | delete | restore | rollback | expire | publish
    metadata    TEXT,                          -- JSON
    created_by  TEXT,                          -- actor of version 1
    updated_by  TEXT,                          -- actor of this version
    created_at  INTEGER NOT NULL,              -- time of version 1
    updated_at  INTEGER NOT NULL,              -- time of this version
    expires_at  INTEGER,                       -- TTL deadline, ms since epoch (a touch moves it)
    ttl_ms      INTEGER,                       -- the TTL a touch counts again from now
    is_latest   INTEGER NOT NULL,              -- 1 on the newest version only
    position    INTEGER NOT NULL,
    PRIMARY KEY (namespace, key, version)
) STRICT;

CREATE INDEX IF NOT EXISTS memory_latest ON memory_entries (namespace, key) WHERE is_latest = 1;
-- A namespace's newest versions, the most recently written first (memory.recent,
-- the LangGraph store's search of one namespace): read in order, not sorted.
CREATE INDEX IF NOT EXISTS memory_recent ON memory_entries (namespace, position) WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS memory_expiry ON memory_entries (expires_at)
    WHERE is_latest = 1 AND is_deleted = 0 AND expires_at IS NOT NULL;
