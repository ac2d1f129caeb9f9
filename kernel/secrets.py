"""Secret configuration values, encrypted before they reach the journal.

A secret key is 32 random bytes, written as URL-safe base64 (``eventkernel
keygen`` prints one). A secret value is encrypted with AES-256-GCM under a
fresh random 96-bit nonce, the configuration key's name bound in as
associated data (a ciphertext moved to another name does not decrypt), and
stored as ``ek1:<key id>:<base64 of nonce + ciphertext>``. The key id is an
HMAC of the key, so a file names the key its secrets need without holding
anything that helps to recover it.

A :class:`Keyring` holds the key the kernel encrypts with (the first) and
older ones it may still decrypt with (after a rotation). AES-GCM comes from
the ``cryptography`` package (``pip install 'eventkernel[secrets]'``),
imported only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

from eventkernel.errors import SecretKeyError

ENV = "EVENTKERNEL_SECRET_KEY"
MASK = "***"
_PREFIX = "ek1"
_KEY_BYTES = 32
_NONCE_BYTES = 12


def generate_key() -> str:
    """A new secret key: 32 random bytes as URL-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()


def _aead(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the test extra installs it
        raise SecretKeyError(
            "secret values need the 'cryptography' package: pip install 'eventkernel[secrets]'"
        ) from None
    return AESGCM(key)


def _parse(where: str, key: Any) -> bytes:
    """A key given as its base64 text or as 32 raw bytes. The message never repeats it."""
    if isinstance(key, bytes | bytearray) and len(key) == _KEY_BYTES:
        return bytes(key)
    if isinstance(key, str):
        try:
            raw = base64.urlsafe_b64decode(key.strip().encode("ascii"))
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raw = b""
        if len(raw) == _KEY_BYTES:
            return raw
    raise SecretKeyError(
        f"{where} refused: a secret key must be 32 bytes, given as URL-safe base64 "
        f"(`eventkernel keygen` prints one) or as bytes; got a {type(key).__name__} that is not one (not shown)"
    )


def _id(raw: bytes) -> str:
    return hmac.new(raw, b"eventkernel secret key id", hashlib.sha256).hexdigest()[:16]


def key_id(key: str | bytes) -> str:
    """The id of a key: what the file records of it, never enough to recover it."""
    return _id(_parse("key_id", key))


class Key:
    """One secret key: its id and its cipher."""

    __slots__ = ("_aead", "_mac", "id")

    def __init__(self, raw: bytes) -> None:
        self.id = _id(raw)
        self._mac = hmac.new(raw, b"eventkernel command digest", hashlib.sha256).digest()
        self._aead = _aead(raw)

    def __repr__(self) -> str:
        return f"<secret key {self.id}>"

    def mac(self, data: bytes) -> str:
        """A keyed digest of ``data``: names a secret value in a command's
        identity (for ``command_id``) without letting anyone test guesses."""
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()[:32]

    def encrypt(self, name: str, clear: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, clear, _associated(name))
        return f"{_PREFIX}:{self.id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def _associated(name: str) -> bytes:
    return b"eventkernel config\x00" + name.encode("utf-8")


def key_id_of(envelope: str) -> str:
    """The id of the key a stored ciphertext needs."""
    parts = envelope.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == _PREFIX else "?"


class Keyring:
    """The key the kernel encrypts with, and older ones it still decrypts with."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys = tuple(keys)
        self.by_id = {k.id: k for k in self.keys}

    @property
    def current(self) -> Key:
        return self.keys[0]

    def __repr__(self) -> str:
        return f"<Keyring {', '.join(k.id for k in self.keys)}>"

    def rotated(self, new: Key) -> Keyring:
        """This keyring after a rotation to ``new`` (the old keys still decrypt history)."""
        return Keyring([new, *(k for k in self.keys if k.id != new.id)])

    def decrypt(self, where: str, name: str, envelope: str) -> bytes:
        kid = key_id_of(envelope)
        key = self.by_id.get(kid)
        if key is None:
            raise SecretKeyError(
                f"{where} refused: the value of {name!r} is encrypted under secret key {kid}, and this kernel "
                f"holds {', '.join(k.id for k in self.keys)}; open it with that key (secret_key= or ${ENV})"
            )
        try:
            blob = base64.urlsafe_b64decode(envelope.split(":")[2].encode("ascii"))
            return bytes(key._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated(name)))
        except Exception:
            raise SecretKeyError(
                f"{where} refused: the stored ciphertext of {name!r} does not decrypt under key {kid} "
                "(damaged, or moved from another key name)"
            ) from None


def keyring(where: str, given: Any, *, environ: dict[str, str] | None = None) -> Keyring | None:
    """The keyring of ``open(secret_key=…)``: a key, or a list of keys (the
    first encrypts, the others decrypt older values); None reads ${ENV}
    (comma-separated keys) and, without it, gives no keyring."""
    if given is None:
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not text:
            return None
        given = [part for part in text.split(",") if part.strip()]
    elif isinstance(given, str | bytes | bytearray):
        given = [given]
    if not isinstance(given, Sequence) or not given:
        raise SecretKeyError(f"{where} refused: secret_key must be a key or a non-empty list of keys (not shown)")
    return Keyring([Key(_parse(where, k)) for k in given])
