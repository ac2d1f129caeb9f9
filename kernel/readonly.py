"""Ad-hoc SQL over a journal file, safely: a read-only connection whose
authorizer allows reading and nothing else, and one statement at a time.

APSW runs every statement in a string, so a second statement is refused
before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apsw
import apsw.ext

from eventkernel.connection import translating
from eventkernel.errors import InvalidArgument, ReadOnly

# What a SELECT needs: reading tables and columns, calling functions,
# recursive CTEs. Everything else (writes, ATTACH, PRAGMA, DDL, transactions) is denied.
_ALLOWED = {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}


def _authorizer(action: int, *args: Any) -> int:
    return apsw.SQLITE_OK if action in _ALLOWED else apsw.SQLITE_DENY


def open_read_only(path: str) -> apsw.Connection:
    """A connection that cannot write, attach, or change settings."""
    with translating(f"opening {path!r} read-only"):
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(5_000)
    conn.authorizer = _authorizer
    return conn


def query(path: str, sql: str, bindings: Any = None) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Run one read-only statement; returns (column names, rows)."""
    if type(sql) is not str or not sql.strip():
        raise InvalidArgument(f"query refused: the SQL must be a non-empty str, got {sql!r}")
    conn = open_read_only(path)
    try:
        conn.authorizer = None  # query_info prepares the text; the authorizer guards execution below
        try:
            info = apsw.ext.query_info(conn, sql)
        except apsw.Error as e:
            raise InvalidArgument(f"query refused: {type(e).__name__}: {e}") from e
        conn.authorizer = _authorizer
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
            raise ReadOnly(f"query refused: {sql.strip()!r} needs more than reading ({e})") from e
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
