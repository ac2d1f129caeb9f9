"""Events of configurations (streams ``config:<key>`` and ``config_keyring:file``).

Version n of a configuration key is version n of its stream. A secret value
never enters an event in clear: ``value`` is None and ``ciphertext`` holds
it, encrypted (see :mod:`eventkernel.secrets`)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class ConfigSet(KernelEvent, tag="config.set"):
    """``key`` now holds ``value`` (or, for a secret, ``ciphertext``), of
    ``value_type``; ``description`` as of this version."""

    key: str
    value: Any
    value_type: str
    description: str | None = None
    secret: bool = False
    ciphertext: str | None = None


class ConfigDeleted(KernelEvent, tag="config.deleted"):
    """``key`` no longer exists (its versions stay in the history)."""

    key: str


class ConfigReencrypted(KernelEvent, tag="config.reencrypted"):
    """The secret value of ``key`` is unchanged, now encrypted under another key."""

    key: str
    ciphertext: str


class ConfigKeyRotated(KernelEvent, tag="config.key_rotated"):
    """The file's secrets are now encrypted under key ``to_key`` (an id, never
    the key), no longer ``from_key`` (None: the file had none); ``keys`` are
    the configuration keys re-encrypted, each by a ``config.reencrypted``
    event of the same transaction."""

    from_key: str | None
    to_key: str
    keys: list[str]
