"""Configurations: typed, versioned settings, some of them secret.

Every change of a key is a new version (``history``); ``get(as_of=)`` reads
the value a key held at a journal position. A key's type (string, integer,
float, boolean, json) is inferred from its first value or given as
``value_type``; later values must fit it (``value_type=`` changes it).

A secret is encrypted by the service before its command starts (see
:mod:`eventkernel.secrets`): the journal, the tables, exports, backups and
every message hold the ciphertext or ``***``, never the value. ``get``
decrypts it with the kernel's key; setting or reading a secret without the
key is refused. A key once secret stays secret (``secret=True`` on every
later set); ``rotate_key`` re-encrypts every current secret under a new key,
as one recorded command.
"""

from __future__ import annotations

import builtins
from typing import Any

import apsw

from eventkernel import codec, journal
from eventkernel.errors import InvalidArgument, NotFound, SecretKeyError
from eventkernel.events.config import ConfigDeleted, ConfigKeyRotated, ConfigReencrypted, ConfigSet
from eventkernel.journal import Recorded
from eventkernel.projections import configurations
from eventkernel.projections.configurations import ConfigEntry, ConfigVersion
from eventkernel.secrets import ENV, Key, Keyring, _parse, key_id_of
from eventkernel.services.base import Context
from eventkernel.services.runner import Args, Decision, Emit, Reads, Spec, emit, run
from eventkernel.validate import (
    check_bool,
    check_int,
    check_json_value,
    check_limit,
    check_optional_text,
    check_str,
    check_text,
    prefix_upper,
)

VALUE_TYPES = ("string", "integer", "float", "boolean", "json")
MAX_DESCRIPTION = 10_000
KEYRING_STREAM = "config_keyring:file"


def stream_of(key: str) -> str:
    return f"config:{key}"


def fits(value: Any) -> list[str]:
    """The value types ``value`` belongs to, the one inferred for a new key first."""
    t = type(value)
    if t is str:
        return ["string", "json"]
    if t is bool:
        return ["boolean", "json"]
    if t is int:
        return ["integer", "float", "json"]
    if t is float:
        return ["float", "json"]
    return ["json"]


def _shown(a: Args) -> str:
    return "a secret, not shown" if a["secret"] else f"{type(a['value']).__name__} {a['value']!r:.60}"


def decide_set(state: tuple[ConfigEntry | None, str | None], a: Args, now: int) -> Decision:
    """The key's type is the one given, else the key's own, else the value's;
    the value must fit it. A secret stays secret; secrets are encrypted under
    the file's key. Setting a public key to what it holds changes nothing."""
    existing, file_key = state
    key = a["key"]
    value_type = a["value_type"] or (existing.value_type if existing is not None else a["fits"][0])
    if value_type not in a["fits"]:
        raise InvalidArgument(
            f"config.set refused: {key!r} holds {value_type} values and the value given ({_shown(a)}) is not "
            "one; pass value_type= to change the key's type"
        )
    if existing is not None and existing.is_secret and not a["secret"]:
        raise InvalidArgument(
            f"config.set refused: {key!r} is secret, so it is set with secret=True (a secret is never stored in "
            "clear; to make it public, delete it and set it again)"
        )
    if a["secret"] and file_key is not None and file_key != a["key_id"]:
        raise SecretKeyError(
            f"config.set refused: the file's secrets are encrypted under key {file_key} and this kernel encrypts "
            f"with key {a['key_id']}; open the file with its key, or rotate it to this one (k.config.rotate_key)"
        )
    description = a["description"] if a["description"] is not None else (
        existing.description if existing is not None else None)
    if (existing is not None and not a["secret"] and not existing.is_secret and existing.value_type == value_type
            and existing.description == description and codec.dump_json(existing.value) == codec.dump_json(
                configurations._typed(a["value"], value_type))):
        return Decision(outcome="unchanged")
    return emit(stream_of(key), ConfigSet(key=key, value=a["value"], value_type=value_type, description=description,
                                          secret=a["secret"], ciphertext=a.get("_ciphertext")))


def decide_delete(existing: ConfigEntry | None, a: Args, now: int) -> Decision:
    if existing is None:
        raise NotFound(f"config.delete refused: no configuration key {a['key']!r}")
    return emit(stream_of(a["key"]), ConfigDeleted(key=a["key"]))


def decide_rotate(state: tuple[str | None, builtins.list[tuple[str, str]]], a: Args, now: int) -> Decision:
    file_key, reencrypted = state
    if file_key == a["to_key"]:
        raise InvalidArgument(f"config.rotate_key refused: the file's secrets are already under key {file_key}")
    emits = [Emit(stream_of(k), (ConfigReencrypted(key=k, ciphertext=c),)) for k, c in reencrypted]
    emits.append(Emit(KEYRING_STREAM, (ConfigKeyRotated(from_key=file_key, to_key=a["to_key"],
                                                        keys=[k for k, _ in reencrypted]),)))
    return Decision(emits=tuple(emits))


def _load_set(conn: apsw.Connection, a: Args, now: int) -> tuple[ConfigEntry | None, str | None]:
    return configurations.get(conn, a["key"]), configurations.file_key(conn) if a["secret"] else None


def _load_key(conn: apsw.Connection, a: Args, now: int) -> ConfigEntry | None:
    return configurations.get(conn, a["key"])


def _load_rotate(conn: apsw.Connection, a: Args, now: int) -> tuple[str | None, builtins.list[tuple[str, str]]]:
    """Re-encrypt every current secret under the new key (the old one must be in the keyring)."""
    where, keyring, new = "config.rotate_key", a["_keyring"], a["_new"]
    out = []
    for key, ciphertext in configurations.secrets(conn):
        if keyring is None:
            raise SecretKeyError(f"{where} refused: the file has secrets and this kernel has no key to decrypt "
                                 f"them; open it with the current key (secret_key= or ${ENV})")
        out.append((key, new.encrypt(key, keyring.decrypt(where, key, ciphertext))))
    return configurations.file_key(conn), out


def _entry(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> ConfigEntry:
    entry = configurations.get(reads.conn, a["key"])
    assert entry is not None
    return entry


def _deleted(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> int:
    return records[-1].position


def _rotated(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> builtins.list[str]:
    last = records[-1].event
    assert isinstance(last, ConfigKeyRotated)
    return last.keys


def _scope(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    return [stream_of(a["key"])]


SET: Spec[tuple[ConfigEntry | None, str | None], ConfigEntry] = Spec(
    "config.set", _load_set, decide_set, _entry, configurations, _scope)
DELETE: Spec[ConfigEntry | None, int] = Spec("config.delete", _load_key, decide_delete, _deleted, configurations, _scope)
ROTATE: Spec[tuple[str | None, builtins.list[tuple[str, str]]], builtins.list[str]] = Spec(
    "config.rotate_key", _load_rotate, decide_rotate, _rotated, configurations)


class Config:
    """``k.config``: typed, versioned configuration, secrets encrypted."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def set(
        self, key: str, value: Any, *, value_type: str | None = None, description: str | None = None,
        secret: bool = False, actor: str | None = None, command_id: str | None = None,
    ) -> ConfigEntry:
        """Set ``key`` to ``value`` (a new version; none when a public key
        already holds exactly this). ``value_type`` checks the value (and
        changes the key's type); None keeps the key's type, or infers one for
        a new key. ``description`` None keeps the key's. ``secret=True``
        encrypts the value with the kernel's secret key (refused without
        one); a secret key is always set with ``secret=True``. Returns the
        entry, a secret's value shown as ``***``."""
        where = SET.name
        check_text(where, "key", key)
        if value_type is not None and value_type not in VALUE_TYPES:
            raise InvalidArgument(f"{where} refused: value_type must be one of {', '.join(VALUE_TYPES)} or None, "
                                  f"got {value_type!r:.60}")
        check_optional_text(where, "description", description, max_len=MAX_DESCRIPTION)
        check_bool(where, "secret", secret)
        if secret:
            try:
                check_json_value(where, "value", value)
            except InvalidArgument:
                raise InvalidArgument(f"{where} refused: the secret value of {key!r} is not a JSON value "
                                      "(it is not shown)") from None
        else:
            check_json_value(where, "value", value)
        types = fits(value)
        if value_type is not None and value_type not in types:
            shown = "a secret, not shown" if secret else f"{type(value).__name__} {value!r:.60}"
            raise InvalidArgument(f"{where} refused: the value given for {key!r} ({shown}) is not of type "
                                  f"{value_type}")
        args: dict[str, Any] = {"key": key, "value_type": value_type, "fits": types, "description": description,
                                "secret": secret}
        if secret:
            keyring = self._ctx.keyring
            if keyring is None:
                raise SecretKeyError(
                    f"{where} refused: {key!r} is secret and this kernel has no secret key to encrypt it with; "
                    f"open it with secret_key= or ${ENV} (`eventkernel keygen` prints a new key)")
            clear = codec.dump_json([value_type, value]).encode()
            # The key the file's secrets are under, if this kernel holds it (after a rotation in a
            # transaction that was rolled back, that is still the old one); the command checks it again.
            current = keyring.by_id.get(self.key_id() or "", keyring.current)
            if command_id is not None:
                # A retry names the value as the first call did, under the key it used then (a rotation
                # since changed the current one), so that the same value is the same command.
                first = self._first_key(command_id)
                if first is not None and first in keyring.by_id:
                    current = keyring.by_id[first]
            args.update(value=None, mac=current.mac(clear), key_id=current.id,
                        _ciphertext=current.encrypt(key, codec.dump_json(value).encode()))
        else:
            args["value"] = value
        return run(self._ctx, SET, args, command_id=command_id, actor=actor)

    def get(self, key: str, default: Any = None, *, as_of: int | None = None) -> Any:
        """The value of ``key`` (``default`` when it has none), as of journal
        position ``as_of`` when given. A secret is decrypted with the
        kernel's key: SecretKeyError without the key it was encrypted under."""
        where = "config.get"
        check_text(where, "key", key)
        if as_of is not None:
            check_int(where, "as_of", as_of, minimum=0)
        value_type: str | None
        with self._ctx.db.read(where) as conn:
            if as_of is None:
                entry = configurations.get(conn, key)
                if entry is None:
                    return default
                secret, value_type, value = entry.is_secret, entry.value_type, entry.value
            else:
                version = configurations.as_of(conn, key, as_of)
                if version is None or version.operation == "delete":
                    return default
                secret, value_type, value = version.is_secret, version.value_type, version.value
            if not secret:
                return value
            ciphertext = configurations.ciphertext(conn, key, as_of)
        keyring = self._ctx.keyring
        if keyring is None or ciphertext is None:
            raise SecretKeyError(f"{where} refused: {key!r} is secret and this kernel has no secret key to decrypt "
                                 f"it; open it with secret_key= or ${ENV}")
        return configurations._typed(codec.decode_json(keyring.decrypt(where, key, ciphertext)), value_type)

    def entry(self, key: str) -> ConfigEntry | None:
        """The stored entry of ``key`` (a secret's value as ``***``), or None."""
        check_text("config.entry", "key", key)
        with self._ctx.db.statement("config.entry") as conn:
            return configurations.get(conn, key)

    def list(self, prefix: str = "", *, limit: int | None = None) -> builtins.list[ConfigEntry]:
        """Every key (starting with ``prefix``), by key; secrets' values as ``***``."""
        where = "config.list"
        if type(prefix) is not str:
            raise InvalidArgument(f"{where} refused: prefix must be a str, got {prefix!r:.60}")
        check_str(where, "prefix", prefix)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            return configurations.list(conn, prefix, prefix_upper(prefix) if prefix else None,
                                       -1 if limit is None else limit)

    def history(self, key: str) -> builtins.list[ConfigVersion]:
        """Every version of ``key``, oldest first (secrets' values as ``***``)."""
        check_text("config.history", "key", key)
        with self._ctx.db.read("config.history") as conn:
            return configurations.history(conn, key)

    def delete(self, key: str, *, actor: str | None = None, command_id: str | None = None) -> int:
        """Delete ``key`` (its history stays); the position of the event. NotFound without it."""
        check_text(DELETE.name, "key", key)
        return run(self._ctx, DELETE, {"key": key}, command_id=command_id, actor=actor)

    def rotate_key(self, new_key: str | bytes, *, actor: str | None = None,
                   command_id: str | None = None) -> builtins.list[str]:
        """Re-encrypt every current secret under ``new_key``, in one command
        recorded as ``config.key_rotated``, and encrypt with it from now on
        (the kernel keeps its older keys to read history). Needs the key the
        secrets are under now. Returns the keys re-encrypted. Earlier
        versions stay in the journal under the old key until erased."""
        where = ROTATE.name
        new = Key(_parse(where, new_key))
        keyring = self._ctx.keyring
        args = {"to_key": new.id, "_keyring": keyring, "_new": new}
        done = run(self._ctx, ROTATE, args, command_id=command_id, actor=actor)
        self._ctx.keyring = Keyring([new]) if keyring is None else keyring.rotated(new)
        return done

    def _first_key(self, command_id: str) -> str | None:
        """The key a secret set with ``command_id`` was encrypted under, if one was."""
        with self._ctx.db.read("config.set") as conn:
            previous = journal.find_command(conn, command_id)
        event = previous[0].event if previous else None
        return key_id_of(event.ciphertext) if isinstance(event, ConfigSet) and event.ciphertext else None

    def key_id(self) -> str | None:
        """The id of the key the file's secrets are encrypted under (None: no secret yet)."""
        with self._ctx.db.statement("config.key_id") as conn:
            return configurations.file_key(conn)
