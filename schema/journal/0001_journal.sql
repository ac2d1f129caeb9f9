-- The journal: the only source of truth. Append-only; dense positions from 1.
CREATE TABLE journal (
    position       INTEGER PRIMARY KEY,          -- global order, dense, from 1
    stream         TEXT NOT NULL,                -- '<kind>:<id>'
    version        INTEGER NOT NULL,             -- 1, 2, ... within the stream
    type           TEXT NOT NULL,                -- stable dotted event type
    schema         INTEGER NOT NULL DEFAULT 1,   -- event schema version (upcasting)
    data           TEXT NOT NULL,                -- JSON object of the event's fields
    meta           TEXT,                         -- JSON: command, command_id, actor, ...
    event_id       TEXT,                         -- optional client id: idempotent append (unique, below)
    correlation_id TEXT,                         -- e.g. the task an event belongs to
    recorded_at    INTEGER NOT NULL,             -- ms since epoch, UTC, kernel clock
    hash           BLOB NOT NULL,                -- sha256(previous hash || canonical row)
    UNIQUE (stream, version)
) STRICT;

-- Only the rows that carry a client id are indexed: an append without one
-- writes no page of this index. (Files made by earlier versions declare
-- `event_id TEXT UNIQUE`, which indexes every row: the same rule, one more
-- page written per commit.)
CREATE UNIQUE INDEX journal_event_id ON journal (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX journal_type ON journal (type, position);
CREATE INDEX journal_correlation ON journal (correlation_id, position)
    WHERE correlation_id IS NOT NULL;

CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN
    SELECT RAISE(ABORT, 'journal rows are append-only: UPDATE refused');
END;

CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN
    SELECT RAISE(ABORT, 'journal rows are append-only: DELETE refused');
END;

-- How far each projection has applied the journal, updated in the same
-- transaction as the projection's rows.
CREATE TABLE projection_positions (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL
) STRICT;
