-- An optimistic commit (eventkernel.postgres.Replica): a replica that believes
-- it is at the server's head decides its command without taking the lock
-- first, and sends the check, its rows and COMMIT at once. This check takes
-- the lock and aborts the transaction (SQLSTATE EK001) unless the head, the
-- base and the server's tables are the ones the replica decided on and its
-- time is the server's to within p_slack ms: then nothing was committed in
-- between, the command decided on the state every process shares, and the
-- replica runs it again the usual way. Returns the server's time (ms).
CREATE OR REPLACE FUNCTION expect_head(p_position bigint, p_hash bytea, p_base bigint, p_tables_position bigint,
                                       p_tables text, p_now bigint, p_slack bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    h record;
    now_ms bigint;
BEGIN
    SELECT position, hash, base, tables_position, tables INTO h FROM journal_head FOR UPDATE;
    now_ms := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    IF h.position <> p_position OR h.hash <> p_hash OR h.base <> p_base
       OR (p_tables IS NOT NULL AND (h.tables_position <> p_tables_position OR h.tables <> p_tables))
       OR abs(now_ms - p_now) > p_slack THEN
        RAISE EXCEPTION 'the journal moved on since the replica read it (head %, base %), or the clocks differ by % ms',
            h.position, h.base, now_ms - p_now USING ERRCODE = 'EK001';
    END IF;
    RETURN now_ms;
END;
$$;
