"""SQL files shipped with the package, and the numbered journal migrations.

The ``schema/`` folder of the source tree is installed as the package data
``eventkernel.schema``; a source checkout that is not installed reads the folder
directly.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import apsw

from eventkernel.errors import JournalError

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@cache
def _root() -> Traversable:
    try:
        return resources.files("eventkernel.schema")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "schema"


def sql(relative: str) -> str:
    """The text of ``schema/<relative>``."""
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


def up_to_date(conn: apsw.Connection) -> bool:
    """Whether every known journal migration is applied (a read; no lock)."""
    if not conn.table_exists("main", "schema_migrations"):
        return False
    row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row is not None  # an aggregate always returns a row
    return int(row[0]) == len(journal_migrations())


def migrate(conn: apsw.Connection, now_ms: int) -> list[int]:
    """Apply the journal migrations this file lacks. Call inside a write
    transaction. Returns the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    known = journal_migrations()
    newest = max(applied, default=0)
    if newest > len(known):
        raise JournalError(
            f"this file's journal schema is at version {newest}, but this eventkernel knows "
            f"versions up to {len(known)}; upgrade eventkernel to open it"
        )
    done = []
    for version, name, text in known:
        if version in applied:
            continue
        conn.execute(text)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, now_ms),
        )
        done.append(version)
    return done
