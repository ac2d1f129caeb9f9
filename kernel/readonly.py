"""Ad-hoc SQL over a journal file, safely: a read-only connection whose
authorizer allows reading and nothing else, and one statement at a time.

The authorizer judges a statement while SQLite prepares it, which is before
anything of it can take effect: some PRAGMAs act during preparation, and a
setting like ``hard_heap_limit`` applies to the whole process. APSW runs
every statement in a string, so a second statement is refused before
anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apsw
import apsw.ext

from eventkernel.connection import Database, translating
from eventkernel.errors import InvalidArgument, ReadOnly
from eventkernel.validate import check_text

# What a SELECT needs: reading tables and columns, calling functions,
# recursive CTEs. Everything else (writes, ATTACH, PRAGMA, DDL, transactions) is denied.
_ALLOWED = {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
_WRITES = {
    apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE, apsw.SQLITE_CREATE_TABLE, apsw.SQLITE_CREATE_INDEX,
    apsw.SQLITE_CREATE_TRIGGER, apsw.SQLITE_CREATE_VIEW, apsw.SQLITE_DROP_TABLE, apsw.SQLITE_DROP_INDEX,
    apsw.SQLITE_DROP_TRIGGER, apsw.SQLITE_DROP_VIEW, apsw.SQLITE_ALTER_TABLE, apsw.SQLITE_CREATE_VTABLE,
    apsw.SQLITE_DROP_VTABLE, apsw.SQLITE_REINDEX, apsw.SQLITE_ANALYZE,
}


class _Guard:
    """The authorizer: allows reads, remembers the first thing it denied."""

    def __init__(self) -> None:
        self.denied: int | None = None

    def __call__(self, action: int, *args: Any) -> int:
        if action in _ALLOWED:
            return apsw.SQLITE_OK
        if self.denied is None:
            self.denied = action
        return apsw.SQLITE_DENY

    def refusal(self, sql: str, e: apsw.Error) -> ReadOnly:
        what = apsw.mapping_authorizer_function.get(self.denied or 0, "an action")
        if self.denied in _WRITES:
            return ReadOnly(f"query refused: {sql.strip()!r} would write ({what}); the query command only reads")
        return ReadOnly(f"query refused: {sql.strip()!r} needs more than reading ({what}: {e})")


def open_read_only(path: str) -> apsw.Connection:
    """A read-only connection to a journal (refusing any other file) that
    cannot write, attach, or change settings. The caller closes it."""
    db = Database(path, read_only=True, busy_timeout_ms=5_000)
    conn = db.conn
    conn.authorizer = _Guard()
    return conn


def query(path: str, sql: str, bindings: Any = None) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Run one read-only statement on the journal at ``path``; returns
    (column names, rows). Raises InvalidArgument, ReadOnly, NotAJournal."""
    if type(sql) is not str or not sql.strip():
        raise InvalidArgument(f"query refused: the SQL must be a non-empty str, got {sql!r:.60}")
    check_text("query", "the SQL", sql, max_len=1_000_000)
    conn = open_read_only(path)
    guard = _Guard()
    conn.authorizer = guard
    try:
        try:
            info = apsw.ext.query_info(conn, sql)  # prepares the first statement, under the authorizer
        except apsw.AuthError as e:
            raise guard.refusal(sql, e) from e
        except apsw.Error as e:
            raise InvalidArgument(f"query refused: {type(e).__name__}: {e}") from e
        if info.query_remaining and info.query_remaining.strip():
            raise InvalidArgument(
                f"query refused: one statement at a time; found more after {info.first_query.strip()!r}"
            )
        if not info.is_readonly:
            raise ReadOnly(f"query refused: {info.first_query.strip()!r} would write; the query command only reads")
        columns = [d[0] for d in info.description or ()]
        try:
            cursor = conn.execute(sql, bindings)
        except apsw.AuthError as e:
            raise guard.refusal(sql, e) from e
        except apsw.Error as e:
            raise InvalidArgument(f"query refused: {type(e).__name__}: {e}") from e
    except BaseException:
        conn.close()
        raise

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            with translating("query"):
                yield from cursor
        finally:
            conn.close()

    return columns, rows()
