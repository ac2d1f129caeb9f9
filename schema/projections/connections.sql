-- Connection tracking: one row per connection, active or closed.
CREATE TABLE IF NOT EXISTS connections (
    connection_id     TEXT PRIMARY KEY,
    client_id         TEXT NOT NULL,
    user_id           TEXT,
    connection_type   TEXT NOT NULL,       -- e.g. websocket | http | grpc
    is_active         INTEGER NOT NULL,    -- 1 until closed or timed out
    metadata          TEXT,                -- JSON object
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    closed_at         INTEGER,
    close_reason      TEXT,                -- closed | timed_out
    position          INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS connections_by_state ON connections (is_active, connection_id);
CREATE INDEX IF NOT EXISTS connections_by_client ON connections (client_id, connection_id);
CREATE INDEX IF NOT EXISTS connections_by_user ON connections (user_id, connection_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS connections_heartbeat ON connections (last_heartbeat_at) WHERE is_active = 1;
CREATE INDEX IF NOT EXISTS connections_closed ON connections (updated_at) WHERE is_active = 0;
