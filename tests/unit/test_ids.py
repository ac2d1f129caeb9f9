import re

from eventkernel.ids import new_id


def test_ids_have_a_prefix_and_26_crockford_characters():
    assert re.fullmatch(r"wi_[0-9A-HJKMNP-TV-Z]{26}", new_id("wi", 1_700_000_000_000))


def test_ids_sort_by_creation_time():
    times = [0, 1, 999, 1_000, 1_700_000_000_000, 1_700_000_000_001, 2**48 - 1]
    ids = [new_id("x", t) for t in times]
    assert ids == sorted(ids)


def test_ids_are_unique():
    assert len({new_id("x", 5) for _ in range(10_000)}) == 10_000


def test_ids_encode_time_and_randomness_as_rfc4648_base32_in_crockford_digits(monkeypatch):
    # The reference encoding: the standard library's base-32 of the 16 bytes,
    # mapped digit for digit onto Crockford's alphabet.
    import base64
    import os

    random_part = bytes(range(200, 210))
    monkeypatch.setattr(os, "urandom", lambda n: random_part[:n])
    now = 1_234_567_890_123
    table = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    expected = base64.b32encode(now.to_bytes(6, "big") + random_part)[:26].translate(table).decode()
    assert new_id("wi", now) == f"wi_{expected}"
