"""Identifiers: a kind prefix and a ULID-style body that sorts by creation time."""

from __future__ import annotations

import os

# Crockford's base-32 alphabet: its characters sort in value order. Ids are
# encoded ten bits (two characters) at a time through this table, which is
# several times faster than base64.b32encode (pure Python in 3.11).
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


# The first eight characters hold the top 40 bits of the time alone: kept for
# the millisecond they stand for (a tuple, replaced whole: safe across threads).
_last_ms: tuple[int, str] = (-1, "")


def new_id(prefix: str, now_ms: int) -> str:
    """Return ``prefix_`` + 26 Crockford base-32 characters: 48 bits of time
    (ms since the epoch), then 80 random bits (and two zero bits of padding)."""
    global _last_ms
    t = now_ms & 0xFFFF_FFFF_FFFF
    p = _PAIRS
    ms, head = _last_ms
    if ms != t:
        head = f"{p[t >> 38]}{p[(t >> 28) & 1023]}{p[(t >> 18) & 1023]}{p[(t >> 8) & 1023]}"
        _last_ms = (t, head)
    n = ((t & 0xFF) << 82) | (int.from_bytes(os.urandom(10), "big") << 2)
    return (
        f"{prefix}_{head}{p[n >> 80]}{p[(n >> 70) & 1023]}{p[(n >> 60) & 1023]}{p[(n >> 50) & 1023]}"
        f"{p[(n >> 40) & 1023]}{p[(n >> 30) & 1023]}{p[(n >> 20) & 1023]}{p[(n >> 10) & 1023]}{p[n & 1023]}"
    )
