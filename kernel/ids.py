"""Identifiers: a kind prefix and a ULID-style body that sorts by creation time."""

from __future__ import annotations

import os

# Crockford's base-32 alphabet: its characters sort in value order. Ids are
# encoded ten bits (two characters) at a time through this table, which is
# several times faster than base64.b32encode (pure Python in 3.11).
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def new_id(prefix: str, now_ms: int) -> str:
    """Return ``prefix_`` + 26 Crockford base-32 characters: 48 bits of time
    (ms since the epoch), then 80 random bits (and two zero bits of padding)."""
    n = (((now_ms & 0xFFFF_FFFF_FFFF) << 80) | int.from_bytes(os.urandom(10), "big")) << 2
    p = _PAIRS
    return (
        f"{prefix}_{p[n >> 120]}{p[(n >> 110) & 1023]}{p[(n >> 100) & 1023]}{p[(n >> 90) & 1023]}"
        f"{p[(n >> 80) & 1023]}{p[(n >> 70) & 1023]}{p[(n >> 60) & 1023]}{p[(n >> 50) & 1023]}"
        f"{p[(n >> 40) & 1023]}{p[(n >> 30) & 1023]}{p[(n >> 20) & 1023]}{p[(n >> 10) & 1023]}{p[n & 1023]}"
    )
