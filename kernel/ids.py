"""Identifiers: a kind prefix and a ULID-style body that sorts by creation time."""

from __future__ import annotations

import os

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, now_ms: int) -> str:
    """Return ``prefix_`` + 26 Crockford base-32 characters: 48 bits of time, 80 random."""
    value = ((now_ms & 0xFFFF_FFFF_FFFF) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
