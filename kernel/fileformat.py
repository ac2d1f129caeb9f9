"""What an eventkernel file is, and how one is recognised before a byte is written.

A journal file carries ``PRAGMA application_id = APPLICATION_ID`` and
``PRAGMA user_version =`` its format level: the number of journal migrations
applied to it (https://sqlite.org/fileformat2.html#database_header). Files
written by eventkernel 0.1.0 carry neither; they are recognised by their
``journal`` and ``schema_migrations`` tables and stamped on their first
writable open. Anything else is refused with :class:`NotAJournal`, having
only been read.
"""

from __future__ import annotations

from typing import Literal

import apsw
import msgspec

from eventkernel import journal
from eventkernel.errors import JournalCorrupt, NotAJournal

APPLICATION_ID = 0x45764B6E  # b"EvKn"
# The level from which the row hash chains over digests of the payload
# (journal.row_hash); below it, over the payload itself (journal.row_hash_v1).
DIGEST_CHAIN_LEVEL = 3

JOURNAL_COLUMNS = (
    "position", "stream", "version", "type", "schema", "data", "meta", "event_id", "correlation_id",
    "recorded_at", "hash",
)
_MIGRATION_COLUMNS = ("version", "name", "applied_at")


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`inspect` found in a file."""

    kind: Literal["new", "journal"]
    level: int  # journal migrations applied; 0 for a new file
    stamped: bool  # application_id and user_version are set


def _columns(conn: apsw.Connection, table: str) -> tuple[str, ...]:
    return tuple(str(row[1]) for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))


def _describe(tables: list[str], application_id: int, user_version: int) -> str:
    shown = ", ".join(repr(t) for t in tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
    what = f"a SQLite database with {len(tables)} table{'s' if len(tables) != 1 else ''} ({shown})" if tables \
        else "a SQLite database with no tables"
    marks = []
    if application_id:
        marks.append(f"application_id {application_id:#010x}, which belongs to another application")
    if user_version:
        marks.append(f"user_version {user_version}")
    return what + (f", {', '.join(marks)}" if marks else "")


def _legacy_level(conn: apsw.Connection, objects: list[tuple[str, str]]) -> list[int] | None:
    """The migration versions of a file shaped like a 0.1.0 journal, or None."""
    tables = {n for t, n in objects if t == "table"}
    if not {"journal", "schema_migrations"} <= tables or _columns(conn, "journal") != JOURNAL_COLUMNS \
            or _columns(conn, "schema_migrations") != _MIGRATION_COLUMNS:
        return None
    return [int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _incomplete(e: NotAJournal) -> NotAJournal:
    """Mark a refusal that the file's -wal could still overturn."""
    e.wal_may_complete = True  # type: ignore[attr-defined]
    return e


def peek(conn: apsw.Connection, path: str, *, newest: int, complete: bool, doing: str = "open") -> None:
    """Refuse a file that is plainly not ours, judging by the database file
    alone: ``conn`` reads it with ``immutable=1``, which creates no -wal or
    -shm file, takes no lock and never rolls a journal back. ``complete``:
    there is no -wal beside the file, so the database file is the whole
    truth and every verdict (a tail that does not chain included) is final.
    Otherwise only what the -wal could not overturn is refused here; the
    rest is inspected by a normal connection."""
    try:
        found = inspect(conn, path, newest=newest, doing=doing)
        if complete and found.kind == "journal":
            check_head(conn, path, found.level, doing=doing)
    except NotAJournal as e:
        if complete or not getattr(e, "wal_may_complete", False):
            raise
    except JournalCorrupt:
        if complete:
            raise
    except apsw.Error:
        return  # not conclusive on the file alone: the normal open reports it


def inspect(conn: apsw.Connection, path: str, *, newest: int, doing: str = "open") -> Found:
    """Classify the file behind ``conn`` by reading its header and schema only.

    Raises NotAJournal for a file that is not a SQLite database, a database of
    something else, or a journal of a newer format than ``newest``;
    JournalCorrupt for a database SQLite finds malformed.
    """
    try:
        # One read transaction: another process may be creating the file
        # right now, and the header and the schema must be seen together.
        conn.execute("BEGIN DEFERRED")
        try:
            application_id = int(conn.pragma("application_id"))
            user_version = int(conn.pragma("user_version"))
            page_count = int(conn.pragma("page_count"))
            objects = [(str(t), str(n)) for t, n in conn.execute("SELECT type, name FROM sqlite_schema")]
            legacy = _legacy_level(conn, objects) if application_id == 0 and user_version == 0 else None
        finally:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
    except apsw.NotADBError as e:
        # The -wal may hold the first page itself (a crash before the first
        # checkpoint): only a reader of the -wal can tell.
        raise _incomplete(NotAJournal(path, "it is not a SQLite database (SQLite says: file is not a database)",
                                      doing=doing)) from e
    except apsw.CorruptError as e:
        raise JournalCorrupt(f"{doing} refused: {path!r} is a malformed SQLite database ({e})") from e
    tables = sorted(n for t, n in objects if t == "table" and not n.startswith("sqlite_"))
    if page_count == 0 or (not objects and application_id == 0 and user_version == 0):
        return Found(kind="new", level=0, stamped=False)
    if application_id == APPLICATION_ID:
        if user_version > newest:
            raise NotAJournal(
                path, f"it was written by a newer eventkernel (file format {user_version}; this version reads "
                f"formats up to {newest}); upgrade eventkernel to open it", doing=doing,
            )
        if "journal" not in tables:
            raise _incomplete(NotAJournal(path, "it is marked as an eventkernel journal but has no journal table",
                                          doing=doing))
        return Found(kind="journal", level=user_version, stamped=True)
    if legacy is not None:
        # A journal written by eventkernel 0.1.0, before files were marked.
        versions = legacy
        if versions != list(range(1, len(versions) + 1)):
            raise _incomplete(NotAJournal(path, f"its schema_migrations table lists versions {versions}", doing=doing))
        if len(versions) > newest:
            raise NotAJournal(
                path, f"it was written by a newer eventkernel ({len(versions)} journal migrations; this version "
                f"knows {newest}); upgrade eventkernel to open it", doing=doing,
            )
        return Found(kind="journal", level=len(versions), stamped=False)
    raise NotAJournal(path, _describe(tables, application_id, user_version), doing=doing)


def _chains(last: tuple[object, ...], prev_position: object, prev_hash: object, level: int,
            erased: tuple[object, ...] | None = None) -> bool:
    """Whether ``last`` follows (prev_position, prev_hash); ``erased``: its
    row in ``erased`` when its payload was erased (chained by the digests)."""
    hash_ = journal.row_hash if level >= DIGEST_CHAIN_LEVEL else journal.row_hash_v1
    try:
        if last[0] != prev_position + 1:  # type: ignore[operator]
            return False
        if erased is not None:
            return journal.expected_hash(prev_hash, last, erased) == last[10]  # type: ignore[arg-type]
        return hash_(prev_hash, *last[:10]) == last[10]  # type: ignore[arg-type]
    except (TypeError, AttributeError, ValueError):  # columns of the wrong type: pages that are not ours
        return False


def _erased_row(conn: apsw.Connection, last: tuple[object, ...], level: int) -> tuple[object, ...] | None:
    """The erasure record of the last row, when its payload was erased (an
    archive's last event may be: the erasure's own event is in the live file)."""
    if level < DIGEST_CHAIN_LEVEL or last[5] != journal.ERASED_DATA:
        return None
    try:
        row = conn.execute("SELECT position, data_digest, meta_digest, erasure FROM erased WHERE position = ?",
                           (last[0],)).fetchone()
    except apsw.Error:  # no such table (not an erasure), or pages that are not ours: the chain check says so
        return None
    return None if row is None else tuple(row)


def check_head(conn: apsw.Connection, path: str, level: int, *, doing: str = "open") -> None:
    """Check that the journal's last event chains to the one before it.

    A write-ahead log left beside the file by another database (or by another
    state of this one) is applied by SQLite when the file is read; the pages
    it brings rarely leave a journal tail that still chains. Raises
    JournalCorrupt, before anything could checkpoint that log into the file.
    """
    try:
        rows = conn.execute(
            f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal ORDER BY position DESC LIMIT 2"
        ).fetchall()
    except apsw.CorruptError as e:
        raise JournalCorrupt(
            f"{doing} refused: {path!r} is malformed ({e}); if a -wal file lies beside it that does not belong "
            "to it, move that file away (the database file itself was not changed)"
        ) from e
    if not rows:
        return
    prev_position, prev_hash = (rows[1][0], rows[1][10]) if len(rows) == 2 else (0, journal.GENESIS_HASH)
    if len(rows) == 1:
        found = journal.base(conn)  # the rest moved to an archive: the chain continues from the base
        if found is not None:
            prev_position, prev_hash = found[0], found[1]
    if not _chains(rows[0], prev_position, prev_hash, level, _erased_row(conn, rows[0], level)):
        raise JournalCorrupt(
            f"{doing} refused: in {path!r} the journal's last event (position {rows[0][0]!r}) does not chain to "
            "the one before it. Either the journal's tail was altered, or a write-ahead log (-wal file) that does "
            "not belong to this file lies beside it; the database file itself was not changed. Move a stray -wal "
            "file away, or run `eventkernel verify` on a copy to find the first bad position"
        )
