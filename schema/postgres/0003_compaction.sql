-- Compaction on PostgreSQL (Kernel.compact): a prefix of the journal moved to
-- an archive (an SQLite journal file), the rest starting after its base, as
-- on SQLite (schema/journal/0006_compaction.sql). Added to a schema made
-- without it when a kernel or PgJournal first opens it.

-- The newest base's position, read with the head under its lock: a replica
-- learns of a compaction from the row every command reads anyway.
ALTER TABLE journal_head ADD COLUMN IF NOT EXISTS base bigint NOT NULL DEFAULT 0;

-- One row per compaction; the newest is the base: the last event moved, its
-- chain hash (the archive's head hash, from which the journal continues).
CREATE TABLE IF NOT EXISTS journal_base (
    position     bigint PRIMARY KEY,
    hash         bytea NOT NULL,
    recorded_at  bigint NOT NULL,
    archive      text NOT NULL,      -- the archive's path, on the machine that compacted
    compacted_at bigint NOT NULL
);

-- The projections as of the newest base (an SQLite database image, as the
-- replicas store it): where a new replica starts, since the events before
-- the base are no longer here to fold.
CREATE TABLE IF NOT EXISTS base_image (
    position    bigint PRIMARY KEY,
    projections text NOT NULL,       -- the projections and versions it holds
    page_size   integer NOT NULL,
    image       bytea NOT NULL
);

-- Each stream's version at the base: the next event of a stream whose events
-- all moved takes the version after it.
CREATE TABLE IF NOT EXISTS base_streams (
    stream  text PRIMARY KEY,
    version bigint NOT NULL
);

-- The correlation ids of moved events (an erasure of one must reach the archive).
CREATE TABLE IF NOT EXISTS base_correlations (
    correlation_id text PRIMARY KEY
);

-- Moved events whose payload live rows still read (a LangGraph checkpoint of
-- an idle thread), out of the chain.
CREATE TABLE IF NOT EXISTS base_payloads (
    position       bigint PRIMARY KEY,
    stream         text NOT NULL,
    type           text NOT NULL,
    schema         integer NOT NULL,
    data           text NOT NULL,
    correlation_id text
);

-- Journal rows and their erasure records stay append-only, but for the one
-- removal a compaction makes: rows at or before the base it recorded.
CREATE OR REPLACE FUNCTION compaction_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.position <= (SELECT coalesce(max(position), 0) FROM journal_base) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% rows are append-only: DELETE refused (a compaction alone removes rows, at or before its base)',
        TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$;

DROP TRIGGER IF EXISTS journal_no_change ON journal;
DROP TRIGGER IF EXISTS journal_no_delete ON journal;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION compaction_only();

DROP TRIGGER IF EXISTS erased_no_change ON erased;
DROP TRIGGER IF EXISTS erased_no_update ON erased;
DROP TRIGGER IF EXISTS erased_no_delete ON erased;
CREATE TRIGGER erased_no_update BEFORE UPDATE ON erased
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER erased_no_delete BEFORE DELETE ON erased
    FOR EACH ROW EXECUTE FUNCTION compaction_only();

DROP TRIGGER IF EXISTS journal_base_no_change ON journal_base;
CREATE TRIGGER journal_base_no_change BEFORE UPDATE OR DELETE ON journal_base
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
