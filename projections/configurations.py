"""Projection ``configurations``: the current value of every configuration
key, its history (one row per version), and the id of the key the file's
secrets are encrypted under."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel import codec
from eventkernel.codec import Event
from eventkernel.events.config import ConfigDeleted, ConfigKeyRotated, ConfigReencrypted, ConfigSet
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Target, columns, dump
from eventkernel.secrets import MASK, key_id_of

NAME = "configurations"
VERSION = 1
HANDLES = frozenset(c.__event_type__ for c in (ConfigSet, ConfigDeleted, ConfigReencrypted, ConfigKeyRotated))
_MASKED = codec.dump_json(MASK)


class ConfigEntry(msgspec.Struct, frozen=True):
    """A configuration key as stored: ``value`` is ``"***"`` for a secret
    (``k.config.get`` decrypts it, given the key)."""

    key: str
    value: Any
    value_type: str
    description: str | None
    is_secret: bool
    version: int
    created_at: int
    updated_at: int
    position: int


class ConfigVersion(msgspec.Struct, frozen=True):
    """One version of a key: ``operation`` set, delete or reencrypt."""

    key: str
    version: int
    operation: str
    value: Any
    value_type: str | None
    description: str | None
    is_secret: bool
    changed_at: int
    position: int


_ENTRY = columns(ConfigEntry)
_VERSION = columns(ConfigVersion)


def _entry(row: tuple[Any, ...]) -> ConfigEntry:
    key, value, value_type, description, secret, *rest = row
    return ConfigEntry(key, _typed(codec.decode_json(value), value_type), value_type, description, bool(secret), *rest)


def _typed(value: Any, value_type: str | None) -> Any:
    """A float key's integral value reads back as a float."""
    return float(value) if value_type == "float" and type(value) is int else value


def _history(conn: Target, recorded: Recorded, key: str, op: str, value: str | None, value_type: str | None,
             description: str | None, secret: bool, ciphertext: str | None) -> None:
    conn.execute(
        "INSERT INTO configuration_history (key, version, operation, value, value_type, description, is_secret, "
        "ciphertext, changed_at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key, recorded.version, op, value, value_type, description, int(secret), ciphertext,
         recorded.recorded_at, recorded.position),
    )


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, ConfigSet):
        value = _MASKED if event.secret else dump(event.value) or "null"
        kid = None if event.ciphertext is None else key_id_of(event.ciphertext)
        conn.execute(
            "INSERT INTO configurations (key, value, value_type, description, is_secret, ciphertext, key_id, version, "
            "created_at, updated_at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, value_type = excluded.value_type, "
            "description = excluded.description, is_secret = excluded.is_secret, ciphertext = excluded.ciphertext, "
            "key_id = excluded.key_id, version = excluded.version, updated_at = excluded.updated_at, "
            "position = excluded.position",
            (event.key, value, event.value_type, event.description, int(event.secret), event.ciphertext, kid,
             recorded.version, at, at, pos),
        )
        _history(conn, recorded, event.key, "set", value, event.value_type, event.description, event.secret,
                 event.ciphertext)
        if kid is not None:  # the first secret names the file's key
            conn.execute("INSERT OR IGNORE INTO configuration_keyring (slot, key_id, since_at, position) "
                         "VALUES (1, ?, ?, ?)", (kid, at, pos))
    elif isinstance(event, ConfigDeleted):
        conn.execute("DELETE FROM configurations WHERE key = ?", (event.key,))
        _history(conn, recorded, event.key, "delete", None, None, None, False, None)
    elif isinstance(event, ConfigReencrypted):
        row = conn.execute("SELECT value_type, description FROM configurations WHERE key = ?",
                           (event.key,)).fetchone()
        conn.execute("UPDATE configurations SET ciphertext = ?, key_id = ?, version = ?, updated_at = ?, "
                     "position = ? WHERE key = ?",
                     (event.ciphertext, key_id_of(event.ciphertext), recorded.version, at, pos, event.key))
        _history(conn, recorded, event.key, "reencrypt", _MASKED, row and row[0], row and row[1], True,
                 event.ciphertext)
    elif isinstance(event, ConfigKeyRotated):
        conn.execute("INSERT OR REPLACE INTO configuration_keyring (slot, key_id, since_at, position) "
                     "VALUES (1, ?, ?, ?)", (event.to_key, at, pos))


# --- queries ----------------------------------------------------------------------


def get(conn: apsw.Connection, key: str) -> ConfigEntry | None:
    row = conn.execute(f"SELECT {_ENTRY} FROM configurations WHERE key = ?", (key,)).fetchone()
    return None if row is None else _entry(row)


def ciphertext(conn: apsw.Connection, key: str, as_of: int | None = None) -> str | None:
    if as_of is None:
        row = conn.execute("SELECT ciphertext FROM configurations WHERE key = ?", (key,)).fetchone()
    else:
        row = conn.execute("SELECT ciphertext FROM configuration_history WHERE key = ? AND position <= ? "
                           "ORDER BY version DESC LIMIT 1", (key, as_of)).fetchone()
    return None if row is None else row[0]


def as_of(conn: apsw.Connection, key: str, position: int) -> ConfigVersion | None:
    """The version of ``key`` current at ``position`` (None: none yet)."""
    row = conn.execute(f"SELECT {_VERSION} FROM configuration_history WHERE key = ? AND position <= ? "
                       "ORDER BY version DESC LIMIT 1", (key, position)).fetchone()
    return None if row is None else _version(row)


def _version(row: tuple[Any, ...]) -> ConfigVersion:
    key, version, op, value, value_type, description, secret, *rest = row
    decoded = None if value is None else _typed(codec.decode_json(value), value_type)
    return ConfigVersion(key, version, op, decoded, value_type, description, bool(secret), *rest)


def history(conn: apsw.Connection, key: str) -> builtins.list[ConfigVersion]:
    return [_version(r) for r in conn.execute(
        f"SELECT {_VERSION} FROM configuration_history WHERE key = ? ORDER BY version", (key,))]


def list(conn: apsw.Connection, prefix: str = "", upper: str | None = None, limit: int = -1) -> builtins.list[ConfigEntry]:
    if upper is None:
        rows = conn.execute(f"SELECT {_ENTRY} FROM configurations WHERE key >= ? ORDER BY key LIMIT ?",
                            (prefix, limit))
    else:
        rows = conn.execute(f"SELECT {_ENTRY} FROM configurations WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                            (prefix, upper, limit))
    return [_entry(r) for r in rows]


def secrets(conn: apsw.Connection) -> builtins.list[tuple[str, str]]:
    """(key, ciphertext) of every current secret."""
    return [(k, c) for k, c in conn.execute(
        "SELECT key, ciphertext FROM configurations WHERE is_secret = 1 ORDER BY key")]


def file_key(conn: apsw.Connection) -> str | None:
    """The id of the key the file's secrets are encrypted under (None: no secret yet)."""
    row = conn.execute("SELECT key_id FROM configuration_keyring WHERE slot = 1").fetchone()
    return None if row is None else row[0]
