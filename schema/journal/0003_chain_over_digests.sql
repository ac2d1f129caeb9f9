-- From format 3 the row hash chains over sha256 digests of the payload and the
-- metadata instead of the payload itself, so that a payload can be erased while
-- the chain still verifies. Migrating re-chains the existing rows once (see
-- migrations._rechain); this table records the head in both formats, so that an
-- anchor (position, hash) taken before the migration stays checkable.
CREATE TABLE chain_history (
    position      INTEGER PRIMARY KEY,   -- the head when the chain was re-hashed
    old_format    INTEGER NOT NULL,      -- 1: sha256 over the payload itself
    old_head_hash BLOB NOT NULL,
    new_format    INTEGER NOT NULL,      -- 2: sha256 over the payload's digest
    new_head_hash BLOB NOT NULL,
    changed_at    INTEGER NOT NULL       -- ms since the epoch, UTC
) STRICT;
