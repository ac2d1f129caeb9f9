"""Checks applied to every argument before anything is written.

Values must survive JSON exactly: what a caller stores is what every later
reader — this kernel, ``json_extract`` in the sqlite3 shell, an analytics
script — gets back. So values JSON would silently change are refused rather
than coerced.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from eventkernel.errors import InvalidArgument

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 64
# Every id (task ids, keys, workers, namespaces, command ids …) is at most
# this long, so that a stream named after one ('<kind>:<id>') always fits.
MAX_ID_LEN = 256
# Times are ms since the epoch, from 1970 to the end of year 9999 (what
# ISO 8601 and datetime can show).
MAX_TIME_MS = 253_402_300_799_999


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
# 19+ digits in a row may be an integer beyond 64 bits (or a long digit string;
# the slow path tells them apart). Found by mapping every ASCII digit to '9'
# and everything else to ' ', then a substring search: both run in C, five
# times faster than the regular expression \d{19} on a typical payload.
_DIGITS_AS_NINES = bytes((0x39 if 0x30 <= i <= 0x39 else 0x20) for i in range(256))
_LONG_RUN = b"9" * 19


def plain_json(encoded: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """True when encoded JSON (compact, as msgspec writes it) surely holds no
    out-of-range integer and no nesting deeper than ``max_depth`` (each level
    needs a bracket)."""
    if encoded.count(b"[") + encoded.count(b"{") > max_depth:
        return False
    digits = encoded.translate(_DIGITS_AS_NINES)
    start = digits.find(_LONG_RUN)
    # A run of 19+ digits is a number when it starts the text or follows
    # ':', ',' or '[' (with a '-' between): what the regular expression
    # (?:^|[:,\[])-?[0-9]{19} finds, found with C-speed searches only (digits
    # inside strings, as in ids and version counters, make such runs often).
    while start != -1:
        before = start - 1
        if before >= 0 and encoded[before] == 0x2D:  # '-'
            before -= 1
        if before < 0 or encoded[before] in b":,[":
            return False
        end = digits.find(b" ", start)
        if end == -1:
            return True
        start = digits.find(_LONG_RUN, end)
    return True


def _refuse(where: str, path: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{where} refused: {path} {why}")


def check_str(where: str, path: str, s: str) -> None:
    """Refuse a str UTF-8 cannot carry (a lone surrogate): any other str is JSON text."""
    if s.isascii():  # the common case, without encoding a copy
        return
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _refuse(
            where, path, f"contains a lone surrogate at index {e.start}, which UTF-8 cannot carry"
        ) from None


def check_json_value(where: str, path: str, value: Any) -> None:
    """Raise InvalidArgument unless ``value`` round-trips through JSON unchanged.

    Accepted: None, bool, int within 64 bits, finite float, str (valid UTF-8),
    list/tuple of those, dict with str keys, msgspec Structs of those. The
    common case is decided in C (encode, decode, compare); only a value that
    does not come back equal is walked in Python, to name what is wrong.
    """
    try:
        encoded = _encoder.encode(value)
        if plain_json(encoded) and _decoder.decode(encoded) == value:
            return
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        pass
    walk_json(where, path, value)


def walk_json(where: str, path: str, value: Any, _depth: int = 0, *, max_depth: int = MAX_DEPTH) -> None:
    """The slow, exact check behind :func:`check_json_value`, naming the path."""
    if _depth > max_depth:
        raise _refuse(where, path, f"is nested deeper than {max_depth} levels")
    if value is None or value is True or value is False:
        return
    t = type(value)
    if t is str:
        check_str(where, path, value)
    elif t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _refuse(where, path, f"is {value}, outside the signed 64-bit range JSON readers keep exactly")
    elif t is float:
        if not math.isfinite(value):
            raise _refuse(where, path, f"is {value!r}; JSON has no NaN or infinity")
    elif t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise _refuse(where, path, f"has the key {k!r} ({type(k).__name__}); JSON object keys must be str")
            check_str(where, f"{path} key {k!r}", k)
            walk_json(where, f"{path}[{k!r}]", v, _depth + 1, max_depth=max_depth)
    elif t is list or t is tuple:
        for i, v in enumerate(value):
            walk_json(where, f"{path}[{i}]", v, _depth + 1, max_depth=max_depth)
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            walk_json(where, f"{path}.{name}", getattr(value, name), _depth + 1, max_depth=max_depth)
    else:
        raise _refuse(
            where, path, f"is a {t.__name__} ({value!r:.60}); only JSON values are stored "
            "(None, bool, int, float, str, list, dict with str keys)"
        )


def check_text(where: str, name: str, value: Any, *, max_len: int = MAX_ID_LEN) -> str:
    """A required, non-empty string without NUL. By default it is an id (a
    task id, a key, a worker, a namespace …): one rule, at most MAX_ID_LEN
    characters, for every id of every domain; free text passes ``max_len``."""
    if type(value) is not str:
        raise _refuse(where, name, f"must be a str, got {type(value).__name__} {value!r:.60}")
    if not value:
        raise _refuse(where, name, "must not be empty")
    if len(value) > max_len:
        limit = f"at most {max_len}, as for every id" if max_len == MAX_ID_LEN else f"at most {max_len}"
        raise _refuse(where, name, f"is {len(value)} characters long; {limit}")
    if "\x00" in value:
        raise _refuse(where, name, f"contains a NUL character: {value!r:.60}")
    check_str(where, name, value)
    return value


def check_optional_text(where: str, name: str, value: Any, *, max_len: int = MAX_ID_LEN) -> str | None:
    if value is None:
        return None
    return check_text(where, name, value, max_len=max_len)


def check_int(where: str, name: str, value: Any, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An int (not bool) within [minimum, maximum]."""
    if type(value) is not int:
        raise _refuse(where, name, f"must be an int, got {type(value).__name__} {value!r:.60}")
    if not minimum <= value <= maximum:
        if value < minimum and maximum == INT64_MAX:
            raise _refuse(where, name, f"must be >= {minimum}, got {value}")
        raise _refuse(where, name, f"must be between {minimum} and {maximum}, got {value}")
    return value


def check_limit(where: str, limit: Any) -> int | None:
    """At most this many rows: None (all) or an int >= 0."""
    return None if limit is None else check_int(where, "limit", limit, minimum=0)


def prefix_upper(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix``, in
    SQLite's BINARY order (UTF-8 bytes, which is code-point order); None when
    there is none (a prefix made only of U+10FFFF). Surrogates, which UTF-8
    cannot carry, are skipped."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop())
        if code == 0x10FFFF:
            continue  # carry: U+10FFFF has no successor
        code += 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        return "".join(chars) + chr(code)
    return None


def check_bool(where: str, name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _refuse(where, name, f"must be a bool, got {type(value).__name__} {value!r:.60}")
    return value


def check_json_dict(where: str, name: str, value: Any) -> dict[str, Any] | None:
    """None, or a JSON-safe dict with str keys."""
    if value is None:
        return None
    if type(value) is not dict:
        raise _refuse(where, name, f"must be a dict, got {type(value).__name__} {value!r:.60}")
    check_json_value(where, name, value)
    return value
