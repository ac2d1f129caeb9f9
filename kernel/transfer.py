"""``eventkernel copy SRC DST``: a journal moved between SQLite files and
PostgreSQL, every row verbatim (positions, times, ids, hashes), its chain
checked on the way. A copy into SQLite rebuilds the projections there; a
copy into PostgreSQL keeps the journal alone (the domains' projections are
SQLite's). A destination already holding the start of the same journal is
continued, so a copy interrupted or repeated picks up where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from eventkernel import journal, postgres
from eventkernel.errors import InvalidArgument, JournalCorrupt
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel
from eventkernel.projector import Progress

BATCH = 5_000


class _Sqlite:
    def __init__(self, k: Kernel) -> None:
        self.k = k

    def head(self) -> tuple[int, bytes]:
        with self.k._db.statement("reading the head") as conn:
            return journal.head(conn)

    def rows(self, after: int) -> Iterator[list[tuple[Any, ...]]]:
        while True:
            with self.k._db.statement("copy: reading the journal") as conn:
                rows = list(journal.read_rows(conn, after=after, limit=BATCH, page=BATCH))
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def erased(self) -> dict[int, tuple[Any, ...]]:
        with self.k._db.statement("copy: reading the erased payloads") as conn:
            if not conn.table_exists("main", "erased"):
                return {}
            return {r[0]: tuple(r) for r in conn.execute(
                "SELECT position, data_digest, meta_digest, erasure FROM erased ORDER BY position")}

    def row_at(self, position: int) -> tuple[Any, ...] | None:
        with self.k._db.statement("copy: reading the journal") as conn:
            rows = list(journal.read_rows(conn, after=position - 1, limit=1, page=1))
        return rows[0] if rows else None

    def write(self, rows: list[tuple[Any, ...]], erased: list[tuple[Any, ...]]) -> None:
        with self.k._db.write("copy") as conn:
            # The rows are written, not folded (the projections are rebuilt once at the end): they stay
            # where they were, also if the copy stops half way.
            self.k._projector.hold(conn, rows[0][0] - 1)
            conn.executemany(journal.INSERT, rows)
            if erased:
                conn.executemany("INSERT INTO erased (position, data_digest, meta_digest, erasure) VALUES (?, ?, ?, ?)",
                                 erased)


class _Postgres:
    def __init__(self, j: postgres.PgJournal) -> None:
        self.j = j

    def head(self) -> tuple[int, bytes]:
        position, hash_hex = self.j.head_hash()
        return position, bytes.fromhex(hash_hex)

    def rows(self, after: int) -> Iterator[list[tuple[Any, ...]]]:
        batch: list[tuple[Any, ...]] = []
        for row in self.j.rows(after):
            batch.append(tuple(row))
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def erased(self) -> dict[int, tuple[Any, ...]]:
        return {r[0]: r for r in self.j.erased_rows()}

    def row_at(self, position: int) -> tuple[Any, ...] | None:
        for row in self.j.rows(position - 1, position):
            return tuple(row)
        return None

    def write(self, rows: list[tuple[Any, ...]], erased: list[tuple[Any, ...]]) -> None:
        self.j._import(rows, erased)


def _open(target: str, *, create: bool, schema: str, stack: ExitStack) -> _Sqlite | _Postgres:
    if postgres.is_url(target):
        return _Postgres(stack.enter_context(postgres.open_journal(target, schema=schema, create=create)))
    if not create and not os.path.exists(target):
        raise InvalidArgument(f"copy refused: the source {target!r} does not exist")
    k = stack.enter_context(open_kernel(target, create=create, read_only=not create))
    return _Sqlite(k)


def copy(src: str, dst: str, *, schema: str = postgres.DEFAULT_SCHEMA,
         progress: Progress | None = None) -> int:
    """Copy the journal at ``src`` to ``dst`` (each a file path or a
    ``postgresql://`` URL; ``schema`` names the PostgreSQL schema) and return
    the destination's head. Refused: a source whose chain does not verify, a
    compacted source (copy its archive first, then the file), and a
    destination holding events that are not the start of the source's."""
    with ExitStack() as stack:
        source = _open(src, create=False, schema=schema, stack=stack)
        if isinstance(source, _Sqlite):
            with source.k._db.statement("copy: reading the base") as conn:
                base = journal.base(conn)
        else:
            base = source.j.base()
        if base is not None:
            raise InvalidArgument(
                f"copy refused: {src!r} is compacted: its events up to {base[0]} are in the archive "
                f"{base[3]!r}; a copy starts at position 1"
            )
        target = _open(dst, create=True, schema=schema, stack=stack)
        total, _ = source.head()
        done, prev = target.head()
        if done:
            mine = source.row_at(done)
            if mine is None or bytes(mine[10]) != prev:
                raise InvalidArgument(
                    f"copy refused: {dst!r} already holds {done} events that are not the start of {src!r}'s journal"
                )
        erased = source.erased()
        check: Callable[[tuple[Any, ...]], None] = _chain_checker(src, done, prev, erased)
        for rows in source.rows(done):
            for row in rows:
                if row[5] == journal.ERASED_DATA and row[0] not in erased:
                    erased.update(source.erased())  # erased since the copy began: its records are there now
                check(row)
            # (a row read before an erasure made during the copy keeps its payload, as the source had it then)
            target.write(rows, [erased[r[0]] for r in rows if r[0] in erased and r[5] == journal.ERASED_DATA])
            done = rows[-1][0]
            if progress is not None:
                progress(done, total)
        if isinstance(target, _Sqlite):
            target.k.rebuild(progress=progress)
        return target.head()[0]


def _chain_checker(src: str, position: int, prev: bytes, erased: dict[int, tuple[Any, ...]]
                   ) -> Callable[[tuple[Any, ...]], None]:
    """A check of each row in turn: dense positions, the chain hash (an erased
    payload by its digests)."""
    last, last_hash = position, prev

    def check(row: tuple[Any, ...]) -> None:
        nonlocal last, last_hash
        position, h = row[0], row[10]
        if position != last + 1:
            raise JournalCorrupt(f"copy refused: {src!r} jumps from position {last} to {position}")
        if bytes(h) != journal.expected_hash(last_hash, row, erased.get(position)):
            raise JournalCorrupt(
                f"copy refused: the chain of {src!r} breaks at position {position}; run `eventkernel verify` on it"
            )
        last, last_hash = position, bytes(h)

    return check
