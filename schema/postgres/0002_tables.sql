-- The projections' tables on the server (eventkernel.pgtables): each kernel
-- keeps a copy of every projection table here, in the transaction of its
-- journal rows. Added to a schema of format 1 when a kernel first opens it.

-- Which tables the last committer kept (a digest of their entries, see
-- table_sets), and the head they then reflected: a committer keeping the same
-- tables from that head sends only its changes.
ALTER TABLE journal_head
    ADD COLUMN IF NOT EXISTS tables_position bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS tables text NOT NULL DEFAULT '';

CREATE TABLE IF NOT EXISTS table_sets (
    tables  text PRIMARY KEY,    -- the digest journal_head.tables names
    entries text[] NOT NULL      -- the entries of projection_tables it stands for
);

CREATE TABLE IF NOT EXISTS projection_tables (
    name     text PRIMARY KEY,   -- the table, in this schema
    entry    text NOT NULL,      -- 'table:projection@version:digest of its server DDL'
    position bigint NOT NULL     -- the journal position its rows were last known to reflect
);
