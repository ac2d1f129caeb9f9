"""Identifiers: a kind prefix and a ULID-style body that sorts by creation time."""

from __future__ import annotations

import base64
import os

# RFC 4648 base-32 digits mapped, value for value, to Crockford's alphabet,
# whose characters sort in value order.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_id(prefix: str, now_ms: int) -> str:
    """Return ``prefix_`` + 26 Crockford base-32 characters: 48 bits of time
    (ms since the epoch), then 80 random bits."""
    raw = (now_ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + os.urandom(10)
    body = base64.b32encode(raw)[:26].translate(_TO_CROCKFORD)
    return f"{prefix}_{body.decode()}"
