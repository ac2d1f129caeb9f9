"""SQL files shipped with the package, and the numbered journal migrations.

The ``schema/`` folder of the source tree is installed as the package data
``eventkernel.schema``; a source checkout that is not installed reads the folder
directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import apsw

from eventkernel import fileformat, journal
from eventkernel.errors import JournalCorrupt, JournalError

ERASURE_LEVEL = 4
"""The format level from which payloads can be erased (the table ``erased``)."""
SNAPSHOT_LEVEL = 5
"""The format level from which the file keeps projection snapshots (``snapshots``)."""
COMPACTION_LEVEL = 6
"""The format level from which a prefix of the journal can move to an archive (``journal_base``)."""
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@cache
def _root() -> Traversable:
    try:
        return resources.files("eventkernel.schema")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "schema"


@cache
def sql(relative: str) -> str:
    """The text of ``schema/<relative>`` (package data: read once per process)."""
    node = _root()
    for part in relative.split("/"):  # one part at a time: namespace paths take one
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


@cache
def journal_migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, name, sql) of every journal migration, in order."""
    found = []
    for entry in _root().joinpath("journal").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise JournalError(f"journal migrations must be numbered 0001, 0002, … without gaps; found {versions}")
    return tuple(found)


def level(conn: apsw.Connection) -> int:
    """The file's format level: its journal migrations applied (a read)."""
    if int(conn.pragma("application_id")) == fileformat.APPLICATION_ID:
        return int(conn.pragma("user_version"))
    if not conn.table_exists("main", "schema_migrations"):
        return 0
    row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row is not None  # an aggregate always returns a row
    return int(row[0])


def newest() -> int:
    """The format level this version of eventkernel writes."""
    return len(journal_migrations())


def migrate(conn: apsw.Connection, now_ms: int) -> list[int]:
    """Apply the journal migrations this file lacks and stamp it as ours
    (application_id, user_version). Call inside a write transaction: the
    level is read again under the lock, as another process may have migrated
    the file meanwhile. Returns the versions applied."""
    current = level(conn)
    known = journal_migrations()
    if current > len(known):
        raise JournalError(
            f"this file's journal format is {current}, but this eventkernel knows formats up to {len(known)}; "
            "upgrade eventkernel to open it"
        )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT"
    )
    done = []
    for version, name, text in known[current:]:
        conn.execute(text)
        step = _PYTHON_STEPS.get(version)
        if step is not None:
            step(conn, now_ms)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", (version, name, now_ms)
        )
        done.append(version)
    if done or int(conn.pragma("application_id")) != fileformat.APPLICATION_ID:
        conn.pragma("application_id", fileformat.APPLICATION_ID)
        conn.pragma("user_version", len(known))
    return done


def _rechain(conn: apsw.Connection, now_ms: int) -> None:
    """Migration 3: re-chain every row over digests of its payload and
    metadata (journal.row_hash) instead of the payload (journal.row_hash_v1).

    The old chain is checked first: re-chaining a journal whose chain is
    already broken would hide the break. The head in both formats goes into
    ``chain_history``, so anchors taken before the migration stay checkable.
    The append-only trigger is lifted for this one recorded operation.
    """
    old = new = journal.GENESIS_HASH
    updates: list[tuple[bytes, int]] = []
    last = 0
    trigger = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = 'journal_no_update'").fetchone()
    conn.execute("DROP TRIGGER IF EXISTS journal_no_update")
    for row in journal.read_rows(conn, page=10_000):
        position, stored, columns = row[0], row[10], row[:10]
        if position != last + 1 or journal.row_hash_v1(old, *columns) != stored:
            raise JournalCorrupt(
                f"migrating the journal to format 3 refused: its hash chain breaks at position {last + 1}; "
                "re-chaining would hide the break. Run `eventkernel verify` on the file (read-only) to see it"
            )
        old = stored
        new = journal.row_hash(new, *columns)
        updates.append((new, position))
        last = position
        if len(updates) >= 10_000:
            conn.executemany("UPDATE journal SET hash = ? WHERE position = ?", updates)
            updates.clear()
    conn.executemany("UPDATE journal SET hash = ? WHERE position = ?", updates)
    if trigger is not None:
        conn.execute(str(trigger[0]))
    if last:
        conn.execute(
            "INSERT INTO chain_history (position, old_format, old_head_hash, new_format, new_head_hash, changed_at) "
            "VALUES (?, 1, ?, 2, ?, ?)",
            (last, old, new, now_ms),
        )


_PYTHON_STEPS: dict[int, Callable[[apsw.Connection, int], None]] = {3: _rechain}
