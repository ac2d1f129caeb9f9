-- From format 5 the file keeps snapshots of its projections: the image of every
-- projection table as of a journal position (a private SQLite database, page by
-- page), so that a view of the past folds only the events after the nearest one.
-- A snapshot stores only the pages that differ from its parent's image; the
-- rest are its parent's (and so on up to a snapshot that stores every page);
-- its page map says where each page of its image is stored.
-- Snapshots are derived data: they can be dropped and made again from the
-- journal at any time, and an erasure drops every snapshot from its first
-- erased event on.
CREATE TABLE snapshots (
    position    INTEGER PRIMARY KEY,  -- the journal head the image reflects
    parent      INTEGER,              -- the snapshot this one stores its changes from (NULL: every page stored)
    projections TEXT NOT NULL,        -- JSON {projection name: version}: what the image holds
    page_size   INTEGER NOT NULL,
    page_count  INTEGER NOT NULL,     -- pages of the whole image
    pages       INTEGER NOT NULL,     -- pages this snapshot stores
    bytes       INTEGER NOT NULL,     -- bytes this snapshot stores (compressed)
    crc32       INTEGER NOT NULL,     -- of the whole image: checks that the pages compose it
    page_map    BLOB NOT NULL,        -- zlib: per page of the image, the snapshot and run that store it
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE snapshot_pages (
    snapshot    INTEGER NOT NULL,     -- snapshots.position
    first_page  INTEGER NOT NULL,     -- index (from 0) of the first page of this run of pages
    pages       INTEGER NOT NULL,     -- consecutive pages in the run
    data        BLOB NOT NULL,        -- the run's pages, zlib-compressed
    crc32       INTEGER NOT NULL,     -- of data: a damaged run is found before it is used
    PRIMARY KEY (snapshot, first_page)
) STRICT;
