-- Idempotency keys: one row per key, its latest generation.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,                -- sha256 of the request's canonical JSON
    task_id      TEXT,
    status       TEXT NOT NULL,                -- pending | completed | failed
    response     TEXT,                         -- JSON
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    expires_at   INTEGER,                      -- NULL: never
    position     INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at)
    WHERE expires_at IS NOT NULL;
