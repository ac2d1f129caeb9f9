-- From format 4 a subject's payloads can be erased from the journal itself.
-- An erased row keeps every column the chain covers, its payload (data) becomes
-- the JSON 'null' and its metadata NULL; the digests the row was chained over
-- are kept here, so that verify still proves the chain. Rows here never change.
CREATE TABLE erased (
    position    INTEGER PRIMARY KEY,   -- the journal row whose payload was erased
    data_digest TEXT NOT NULL,         -- sha256 hex of the erased data
    meta_digest TEXT,                  -- sha256 hex of the erased meta (NULL: there was none)
    erasure     INTEGER NOT NULL       -- position of the journal.erased event that erased it
) STRICT;

CREATE TRIGGER erased_no_update BEFORE UPDATE ON erased
BEGIN
    SELECT RAISE(ABORT, 'erased rows are append-only: UPDATE refused');
END;

CREATE TRIGGER erased_no_delete BEFORE DELETE ON erased
BEGIN
    SELECT RAISE(ABORT, 'erased rows are append-only: DELETE refused');
END;

-- Journal rows stay append-only, but for the one change an erasure makes:
-- the payload to 'null' and the metadata to NULL, of a row recorded in erased.
DROP TRIGGER journal_no_update;
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
WHEN NOT (
    NEW.data = 'null' AND NEW.meta IS NULL
    AND NEW.position = OLD.position AND NEW.stream = OLD.stream AND NEW.version = OLD.version
    AND NEW.type = OLD.type AND NEW.schema = OLD.schema AND NEW.event_id IS OLD.event_id
    AND NEW.correlation_id IS OLD.correlation_id AND NEW.recorded_at = OLD.recorded_at AND NEW.hash = OLD.hash
    AND EXISTS (SELECT 1 FROM erased WHERE erased.position = OLD.position)
)
BEGIN
    SELECT RAISE(ABORT, 'journal rows are append-only: UPDATE refused (an erasure alone may blank a payload)');
END;
