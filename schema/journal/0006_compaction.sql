-- From format 6 a prefix of the journal can be moved to an archive (compaction).
-- The live file keeps the base: the last event moved, its chain hash (the
-- archive's head hash, from which the live chain continues), each stream's
-- version there, and the payloads of moved events that live rows still read.
-- The projections as of the base are the snapshot at its position, which is
-- never dropped. Each compaction adds a row; the newest is the base.
CREATE TABLE journal_base (
    position     INTEGER PRIMARY KEY,  -- the last event moved to the archive
    hash         BLOB NOT NULL,        -- its chain hash: the archive's head hash
    recorded_at  INTEGER NOT NULL,     -- its time
    archive      TEXT NOT NULL,        -- the archive's path when it was written
    compacted_at INTEGER NOT NULL
) STRICT;

CREATE TRIGGER journal_base_no_update BEFORE UPDATE ON journal_base
BEGIN
    SELECT RAISE(ABORT, 'journal_base rows are append-only: UPDATE refused');
END;

CREATE TRIGGER journal_base_no_delete BEFORE DELETE ON journal_base
BEGIN
    SELECT RAISE(ABORT, 'journal_base rows are append-only: DELETE refused');
END;

-- Each stream's version at the base: the next event of a stream whose events
-- all moved to the archive takes the version after it.
CREATE TABLE base_streams (
    stream  TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The correlation ids of moved events (an erasure of one must reach the archive).
CREATE TABLE base_correlations (
    correlation_id TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;

-- Moved events whose payload live rows still read (a LangGraph checkpoint of
-- an idle thread): kept here, out of the chain (the archive holds them chained).
CREATE TABLE base_payloads (
    position       INTEGER PRIMARY KEY,
    stream         TEXT NOT NULL,
    type           TEXT NOT NULL,
    schema         INTEGER NOT NULL,
    data           TEXT NOT NULL,
    correlation_id TEXT
) STRICT;

-- Journal rows (and their erasure records) stay append-only, but for the one
-- removal a compaction makes: rows at or before the base it recorded.
DROP TRIGGER journal_no_delete;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
WHEN OLD.position > (SELECT coalesce(max(position), 0) FROM journal_base)
BEGIN
    SELECT RAISE(ABORT, 'journal rows are append-only: DELETE refused (a compaction alone removes rows, at or before its base)');
END;

DROP TRIGGER erased_no_delete;
CREATE TRIGGER erased_no_delete BEFORE DELETE ON erased
WHEN OLD.position > (SELECT coalesce(max(position), 0) FROM journal_base)
BEGIN
    SELECT RAISE(ABORT, 'erased rows are append-only: DELETE refused');
END;
