-- The document index: one row per document, and its text for full-text
-- search (FTS5, bm25). The document's rowid in document_fts is the position
-- that first indexed it, so a rebuild gives every document the same one.
CREATE TABLE IF NOT EXISTS document_index (
    file_path       TEXT PRIMARY KEY,
    title           TEXT NOT NULL,
    document_type   TEXT,                  -- design | specification | plan | report
    content_hash    TEXT NOT NULL,         -- sha256 of the content (UTF-8), hex
    chunk_count     INTEGER,
    embedding_model TEXT,
    embedding       BLOB,                  -- float32 little-endian
    embedding_dim   INTEGER,               -- its number of floats
    metadata        TEXT,                  -- JSON object
    last_synced_at  INTEGER,
    sync_status     TEXT NOT NULL,         -- pending | synced | failed | stale
    sync_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    created_position INTEGER NOT NULL,     -- the document's rowid in document_fts
    position        INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS document_index_status ON document_index (sync_status, file_path);
CREATE INDEX IF NOT EXISTS document_index_vectors ON document_index (embedding_dim, position)
    WHERE embedding_dim IS NOT NULL;

CREATE VIRTUAL TABLE IF NOT EXISTS document_fts USING fts5(
    file_path UNINDEXED, title, content, tokenize = 'unicode61'
);
