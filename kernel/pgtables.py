"""The projections' tables on the PostgreSQL server, for whatever reads SQL there.

A kernel on PostgreSQL folds the journal into its projections in a replica (an
SQLite file, :class:`eventkernel.postgres.Replica`). So that analytics, reports
and other programs find the same tables on the server, every write transaction
also brings the server's copy of each projection table to the replica's state,
in the same server transaction as its journal rows:

- the rows its commands changed, as SQLite's session extension recorded them
  in the replica while they ran (one INSERT, UPDATE or DELETE per row, by
  primary key; a command undone by its savepoint records nothing); or
- the whole table, when the server's copy is not known to reflect the journal
  up to the lock's head: new, made for another version of its projection, last
  written by a process without that projection (or by a bare journal writer),
  or rebuilt by this transaction (an erasure).

The server's ``journal_head`` row records which tables the last committer
kept (``tables``: a digest of their entries ``table:projection@version:digest``,
listed in ``table_sets``) and up to where (``tables_position``);
``projection_tables`` records each table's entry and the position it was
last known to reflect. A transaction whose replica keeps
exactly the tables the head names, at the head, sends only its changes: no
extra round trip, one more column in the head's UPDATE.

Column types follow SQLite's type affinity (``INTEGER`` → ``bigint``,
``TEXT`` → ``text``, ``REAL`` → ``double precision``, ``BLOB`` or none →
``bytea``, other → ``numeric``); the primary key and NOT NULL are kept,
indexes are not (create your own on the server: they stay until the table's
projection changes version). A value a column's server type cannot hold
(text in an INTEGER column of a non-STRICT table) refuses the transaction,
naming the table and column; text PostgreSQL cannot hold (NUL) is escaped
(:func:`escape`). Virtual tables (full-text indexes) and tables without a
primary key stay in the replica, and rows whose primary key holds a NULL
are not copied (SQLite's session extension records neither).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import apsw

from eventkernel.connection import memory_connection
from eventkernel.errors import CommandRejected, InvalidArgument
from eventkernel.projector import Projector

# Names the journal's own schema on PostgreSQL uses (schema/postgres/).
RESERVED = frozenset({"journal", "journal_head", "erased", "consumer_positions", "eventkernel_format",
                      "projection_tables", "table_sets", "journal_events"})


_ESCAPE = "\uffff"


def escape(text: str) -> str:
    """Text as the server holds it. PostgreSQL's text cannot hold NUL (which
    SQLite's can: LangGraph's ids may contain it), so NUL is written as
    U+FFFF and "0", and U+FFFF itself (a noncharacter) as two of it: one
    value for one value, text without either character unchanged."""
    if "\x00" not in text and _ESCAPE not in text:
        return text
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("\x00", _ESCAPE + "0")


def unescape(text: str) -> str:
    """The text :func:`escape` made ``text`` from."""
    if _ESCAPE not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == _ESCAPE and i + 1 < len(text):
            out.append(_ESCAPE if text[i + 1] == _ESCAPE else "\x00")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def server_type(declared: str) -> str:
    """The PostgreSQL type of a column declared ``declared`` in SQLite, by
    SQLite's rules of type affinity (the first that applies)."""
    t = declared.upper()
    if "INT" in t:
        return "bigint"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "text"
    if "BLOB" in t or not t:
        return "bytea"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "double precision"
    return "numeric"


_FITS: dict[str, tuple[type, ...]] = {
    "bigint": (int,), "text": (str,), "bytea": (bytes,), "double precision": (float, int), "numeric": (int, float),
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Table:
    """One projection table as the server holds it."""

    __slots__ = ("columns", "ddl", "entry", "fits", "insert", "name", "pk", "projection", "select", "server_rows",
                 "server_select", "types")

    def __init__(self, name: str, projection: str, version: int,
                 columns: Sequence[tuple[str, str, bool, int]]) -> None:
        self.name, self.projection = name, projection
        self.columns = tuple(c[0] for c in columns)
        self.types = tuple(server_type(c[1]) for c in columns)
        self.fits = tuple(_FITS[t] for t in self.types)
        keyed = sorted((c[3], i) for i, c in enumerate(columns) if c[3])
        self.pk = tuple(i for _, i in keyed)
        body = [f"{_quote(c[0])} {t}{' NOT NULL' if c[2] or c[3] else ''}" for c, t in zip(columns, self.types)]
        body.append(f"PRIMARY KEY ({', '.join(_quote(self.columns[i]) for i in self.pk)})")
        self.ddl = f"CREATE TABLE {_quote(name)} (\n    " + ",\n    ".join(body) + "\n)"
        digest = hashlib.sha256(self.ddl.encode()).hexdigest()[:16]
        self.entry = f"{name}:{projection}@{version}:{digest}"
        cols = ", ".join(_quote(c) for c in self.columns)
        self.select = f"SELECT {cols} FROM main.{_quote(name)}"  # (of the replica)
        self.server_select = f"SELECT {cols} FROM {_quote(name)}"
        # the same, each row followed by whether a text value of it holds the escape (%s: U+FFFF)
        texts = [_quote(c) for c, t in zip(self.columns, self.types) if t == "text"]
        self.server_rows = (f"SELECT {cols}, strpos(concat({', '.join(texts)}), %s) > 0 FROM {_quote(name)}"
                            if texts else f"SELECT {cols}, false FROM {_quote(name)}")
        self.insert = f"INSERT INTO {_quote(name)} ({cols}) VALUES ({', '.join(['%s'] * len(self.columns))})"

    def fit(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A row (or a change's values: ``apsw.no_change`` kept) as the server
        holds it: text escaped (:func:`escape`). Refuses a value its column's
        server type cannot hold."""
        out = tuple(values)
        for i, value in enumerate(out):
            if value is None or value is apsw.no_change:
                continue
            if type(value) not in self.fits[i]:
                raise CommandRejected(
                    f"committing on PostgreSQL refused: projection {self.projection!r} wrote a "
                    f"{type(value).__name__} ({value!r:.40}) into column {self.columns[i]!r} of table "
                    f"{self.name!r}, which the server holds as {self.types[i]} (from its declared type); declare "
                    "the column's type to fit its values, or make the table STRICT"
                )
            if type(value) is str and ("\x00" in value or _ESCAPE in value):
                out = (*out[:i], escape(value), *out[i + 1:])
        return out

    def unfit(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A row the server holds as the replica holds it (:meth:`fit` undone)."""
        return tuple(unescape(v) if type(v) is str else v for v in values)

    def read(self, raw: Any, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of the server's copy, as the replica holds it, in pages
        of ``batch`` rows, through a server-side cursor of ``raw`` (a psycopg
        connection inside a transaction): a table is never held whole in memory."""
        with raw.cursor(name=f"eventkernel_seed_{self.name}") as cur:
            cur.itersize = batch
            cur.execute(self.server_rows, (_ESCAPE,))
            while page := cur.fetchmany(batch):
                yield [self.unfit(r[:-1]) if r[-1] else tuple(r[:-1]) for r in page]

    def key(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """The primary key of a row (or of a change's old values) as the server holds it."""
        return tuple(escape(values[i]) if type(values[i]) is str else values[i] for i in self.pk)

    def where(self) -> str:
        return " AND ".join(f"{_quote(self.columns[i])} = %s" for i in self.pk)


@lru_cache(maxsize=256)
def _columns(ddl: str) -> dict[str, tuple[tuple[str, str, bool, int], ...]]:
    """(name, declared type, not null, position in the primary key) of each
    column of each ordinary table a projection's DDL makes."""
    mem = memory_connection()
    try:
        mem.execute(ddl)
        kinds = {str(r[1]): str(r[2]) for r in mem.execute("PRAGMA main.table_list")}
        return {name: tuple((str(r[1]), str(r[2]), bool(r[3]), int(r[5]))
                            for r in mem.execute("SELECT * FROM pragma_table_info(?)", (name,)))
                for name, kind in kinds.items() if kind == "table" and not name.startswith("sqlite_")}
    finally:
        mem.close()


def tables(projector: Projector) -> dict[str, Table]:
    """Every projection table the server holds a copy of, by name. Raises
    InvalidArgument for a table whose name the server's journal uses."""
    found: dict[str, Table] = {}
    for m in projector.modules:
        made = _columns(projector.ddl(m))
        for name in projector.tables[m.NAME]:
            if name in projector.virtual or name not in made or not any(c[3] for c in made[name]):
                continue  # a virtual table (a full-text index), its shadows, a table without a primary key
            if name in RESERVED:
                raise InvalidArgument(
                    f"open refused: projection {m.NAME!r} makes a table {name!r}, a name the journal on "
                    f"PostgreSQL uses; rename the table"
                )
            found[name] = Table(name, m.NAME, m.VERSION, made[name])
    return found


class Changes:
    """The statements that bring the server's copies of ``tables`` from one
    state of the replica to another: grouped so that each is sent once with
    all its rows (``executemany``)."""

    def __init__(self, tables: dict[str, Table]) -> None:
        self.tables = tables
        self.statements: dict[str, list[tuple[Any, ...]]] = {}

    def add(self, changeset: bytes, skip: Iterable[str] = ()) -> None:
        """Add what a changeset of the replica records (tables in ``skip`` left out)."""
        skipped = set(skip)
        for change in apsw.Changeset.iter(changeset):
            name = change.name
            table = self.tables.get(name)
            if table is None or name in skipped:
                continue
            if change.op == "INSERT":
                new = change.new
                assert new is not None
                self.statements.setdefault(table.insert, []).append(table.fit(new))
            elif change.op == "DELETE":
                old = change.old
                assert old is not None
                self.statements.setdefault(f"DELETE FROM {_quote(name)} WHERE {table.where()}", []).append(
                    table.key(old))
            else:
                old, new = change.old, change.new
                assert old is not None and new is not None
                new = table.fit(new)
                changed = [i for i, v in enumerate(new) if v is not apsw.no_change]
                sets = ", ".join(f"{_quote(table.columns[i])} = %s" for i in changed)
                self.statements.setdefault(f"UPDATE {_quote(name)} SET {sets} WHERE {table.where()}", []).append(
                    (*(new[i] for i in changed), *table.key(old)))

    def send(self, raw: Any) -> None:
        """Send every statement on ``raw`` (a psycopg connection, in pipeline mode)."""
        for sql, rows in self.statements.items():
            if len(rows) == 1:
                raw.execute(sql, rows[0])
            else:
                with raw.cursor() as cur:
                    cur.executemany(sql, rows)


def copy_whole(raw: Any, conn: apsw.Connection, chosen: Sequence[tuple[Table, str | None]]) -> None:
    """Make the server's copy of each chosen table the replica's, row for row,
    in the server transaction open on ``raw`` (not in pipeline mode): with
    None the table is there and is emptied first; "create" makes it;
    "replace" drops it first. One round trip for the DDL of them all, then a
    COPY for each the replica holds rows of."""
    with raw.pipeline():
        for table, create in chosen:
            if create == "replace":
                raw.execute(f"DROP TABLE IF EXISTS {_quote(table.name)}")
            if create is not None:
                raw.execute(table.ddl)
                comment = f"projection {table.projection}, kept by eventkernel from the journal ({table.entry})"
                raw.execute(f"COMMENT ON TABLE {_quote(table.name)} IS '{comment.replace(chr(39), chr(39) * 2)}'")
            else:
                raw.execute(f"DELETE FROM {_quote(table.name)}")
    cols = {table.name: ", ".join(_quote(c) for c in table.columns) for table, _ in chosen}
    for table, _ in chosen:
        rows = conn.execute(table.select)
        first = next(rows, None)
        if first is None:
            continue
        with raw.cursor().copy(f"COPY {_quote(table.name)} ({cols[table.name]}) FROM STDIN") as copy:
            for row in itertools.chain((first,), rows):
                if any(row[i] is None for i in table.pk):
                    continue
                copy.write_row(table.fit(row))


def digest(entries: Sequence[str]) -> str:
    """What ``journal_head.tables`` names a set of tables by."""
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:32]


__all__ = ["RESERVED", "Changes", "Table", "copy_whole", "digest", "escape", "server_type", "tables", "unescape"]
