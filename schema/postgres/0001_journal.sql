-- The journal on PostgreSQL: the same columns, the same chain and the same
-- rules as on SQLite, in a schema of its own (eventkernel.postgres sets the
-- search_path to it). Payloads stay text, byte for byte what the chain hashed;
-- the journal_events view reads them as jsonb.
CREATE TABLE eventkernel_format (
    format     integer NOT NULL,     -- the PostgreSQL journal format of this schema
    created_at bigint NOT NULL       -- ms since the epoch, UTC
);

CREATE TABLE journal (
    position       bigint PRIMARY KEY CHECK (position > 0),  -- global order, dense, from 1
    stream         text NOT NULL,                           -- '<kind>:<id>'
    version        bigint NOT NULL CHECK (version > 0),     -- 1, 2, ... within the stream
    type           text NOT NULL,                           -- stable dotted event type
    schema         integer NOT NULL DEFAULT 1,              -- event schema version
    data           text NOT NULL,                           -- JSON object of the event's fields
    meta           text,                                    -- JSON: command, command_id, actor, ...
    event_id       text CONSTRAINT event_id UNIQUE,          -- optional client id: idempotent append
    correlation_id text,
    recorded_at    bigint NOT NULL,                         -- ms since epoch, UTC
    hash           bytea NOT NULL,                          -- the chain hash, as on SQLite
    CONSTRAINT stream_version UNIQUE (stream, version)
);

CREATE INDEX journal_type ON journal (type, position);
CREATE INDEX journal_correlation ON journal (correlation_id, position) WHERE correlation_id IS NOT NULL;

-- The head: one row, taken FOR UPDATE by every writer (PostgreSQL's BEGIN
-- IMMEDIATE). The next position is its position + 1 and the next row chains
-- from its hash, so positions are dense and in commit order.
CREATE TABLE journal_head (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position    bigint NOT NULL,
    hash        bytea NOT NULL,
    recorded_at bigint NOT NULL
);
INSERT INTO journal_head (position, hash, recorded_at) VALUES (0, decode(repeat('00', 32), 'hex'), 0);

-- Payloads erased on SQLite before the journal was copied here: the digests
-- their rows were chained over (see the SQLite schema's erased table).
CREATE TABLE erased (
    position    bigint PRIMARY KEY,
    data_digest text NOT NULL,
    meta_digest text,
    erasure     bigint NOT NULL
);

-- Durable consumers' positions (Kernel.consumer): bookkeeping every process
-- shares, moved in the transaction of the commands their handler issues.
CREATE TABLE consumer_positions (
    name       text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at bigint NOT NULL       -- ms since the epoch, UTC
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- The one change a journal row allows: an erasure blanks its payload (data
-- 'null', meta NULL), every other column kept, once the digests the chain
-- covers are in erased (Kernel.erase).
CREATE FUNCTION journal_erasure_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.data = 'null' AND NEW.meta IS NULL
       AND (NEW.position, NEW.stream, NEW.version, NEW.type, NEW.schema, NEW.event_id, NEW.correlation_id,
            NEW.recorded_at, NEW.hash)
           IS NOT DISTINCT FROM (OLD.position, OLD.stream, OLD.version, OLD.type, OLD.schema, OLD.event_id,
                                 OLD.correlation_id, OLD.recorded_at, OLD.hash)
       AND EXISTS (SELECT 1 FROM erased WHERE erased.position = OLD.position) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'journal rows are append-only: UPDATE refused (only an erasure recorded in erased may blank a payload)'
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER journal_no_change BEFORE DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_erasure_only BEFORE UPDATE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_erasure_only();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER erased_no_change BEFORE UPDATE OR DELETE ON erased
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_head_no_delete BEFORE DELETE ON journal_head
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Every event with the common fields decoded, for analytics (as on SQLite).
CREATE VIEW journal_events AS
SELECT position,
       stream,
       split_part(stream, ':', 1)                 AS stream_kind,
       substr(stream, strpos(stream, ':') + 1)    AS stream_id,
       version,
       type,
       data::jsonb                                AS data,
       meta::jsonb ->> 'command'                  AS command,
       meta::jsonb ->> 'command_id'               AS command_id,
       event_id,
       correlation_id,
       recorded_at,
       to_timestamp(recorded_at / 1000.0)         AS recorded_at_ts
FROM journal;
