"""Rows ↔ frozen Structs, shared by the projections' query functions."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import apsw
import msgspec

from eventkernel import codec

S = TypeVar("S", bound=msgspec.Struct)

Target = apsw.Connection | apsw.Cursor
"""What ``apply`` writes through: a connection, or a cursor the projector
keeps for the purpose (reusing one cursor spares creating one per
statement, about an eighth of a rebuild's time)."""


def columns(cls: type[msgspec.Struct]) -> str:
    """The Struct's fields as a SELECT list (the table's column names)."""
    return ", ".join(cls.__struct_fields__)


def placeholders(cls: type[msgspec.Struct]) -> str:
    return ", ".join("?" * len(cls.__struct_fields__))


def loader(cls: type[S], json: Iterable[str] = (), flags: Iterable[str] = ()) -> Callable[[tuple[Any, ...]], S]:
    """A function turning a row (in ``columns(cls)`` order) into ``cls``,
    decoding the JSON columns and turning 0/1 columns into bools. Records
    are built positionally: ten times cheaper than by keyword."""
    names = cls.__struct_fields__
    json_idx = [names.index(n) for n in json]
    flag_idx = [names.index(n) for n in flags]
    if not json_idx and not flag_idx:
        return lambda row: cls(*row)

    def load(row: tuple[Any, ...]) -> S:
        values = list(row)
        for i in json_idx:
            values[i] = codec.decode_json(values[i])
        for i in flag_idx:
            if values[i] is not None:
                values[i] = bool(values[i])
        return cls(*values)

    return load


def dump(value: Any) -> str | None:
    """JSON text for a column; None stays NULL."""
    return None if value is None else codec.dump_json(value)


def raw_json(raw: msgspec.Raw) -> str | None:
    """A nested JSON value for a column, as the journal stores it (the bulk
    rebuild's shortcut): the kernel's encoder wrote it, so it is already what
    ``dump`` would write after decoding it; null stays NULL."""
    return None if raw == _NULL else str(raw, "utf-8")  # decoded from its buffer, not copied to bytes first


_NULL = msgspec.Raw(b"null")

class Writer(Protocol):
    """Where a rebuild's fold (a projection's ``Fold``) writes its rows:
    ``insert`` adds ``rows`` (sequences of values in ``columns`` order, a
    comma-separated list of the table's column names) to ``table``;
    ``delete`` removes the rows whose ``column`` is one of ``keys`` (rows a
    fold wrote before a later event changed or dropped them); ``held``: how
    many finished rows a fold holds before it writes them (``Fold.flush``)."""

    @property
    def held(self) -> int: ...

    def insert(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def delete(self, table: str, column: str, keys: Iterable[Any]) -> None: ...


class Inserter:
    """A :class:`Writer` that inserts through a connection, one
    ``executemany`` per call."""

    __slots__ = ("conn",)

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn

    @property
    def held(self) -> int:
        return HELD_ROWS

    def insert(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        marks = ", ".join("?" * (columns.count(",") + 1))
        self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def delete(self, table: str, column: str, keys: Iterable[Any]) -> None:
        self.conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", ((key,) for key in keys))


HELD_ROWS = 100_000
"""How many finished rows a rebuild's fold holds before it writes them
(``Fold.flush``) through its own connection: what bounds a long journal's
rebuild in memory (about 30 MiB of a kind's rows), while a journal of a few
hundred thousand events is written at the end, as fast as one
``executemany``. (A fold whose rows a second thread writes hands them over
sooner.)"""


def where_equal(**filters: Any) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` for the filters that are not None, and their
    values; ``("", [])`` when none is. Names are column names from our code."""
    given = [(name, value) for name, value in filters.items() if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{name} = ?" for name, _ in given), [value for _, value in given]


def where_all(*terms: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE c1 AND c2`` for the conditions (each with one ``?``) whose
    value is not None, and those values; ``("", [])`` when none is.
    Conditions are SQL from our code, never from input."""
    given = [(condition, value) for condition, value in terms if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


Order = tuple[tuple[str, bool], ...]
"""A list's order: (column, descending) pairs, the last one unique."""


def after(order: Order, values: tuple[Any, ...] | None) -> tuple[str, builtins.list[Any]]:
    """The condition (and its arguments) that keeps the rows after a cursor
    row whose ``order`` columns hold ``values``: keyset pagination, exact
    because the order ends with a unique column. ``("", [])`` with no cursor."""
    if values is None:
        return "", []
    if not any(desc for _, desc in order):
        columns = ", ".join(c for c, _ in order)
        return f"({columns}) > ({', '.join('?' * len(order))})", builtins.list(values)
    terms, args = [], []
    for i, (column, desc) in enumerate(order):
        same = [f"{c} = ?" for c, _ in order[:i]]
        terms.append("(" + " AND ".join([*same, f"{column} {'<' if desc else '>'} ?"]) + ")")
        args += [*values[:i], values[i]]
    return "(" + " OR ".join(terms) + ")", args


def order_by(order: Order) -> str:
    return ", ".join(f"{c}{' DESC' if desc else ''}" for c, desc in order)


def limit_of(limit: int | None) -> int:
    """SQLite's LIMIT for an optional limit (-1: none)."""
    return -1 if limit is None else limit
