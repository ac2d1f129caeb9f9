import base64
import re
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from eventkernel.ids import new_id


def test_ids_have_a_prefix_and_26_crockford_characters():
    assert re.fullmatch(r"wi_[0-9A-HJKMNP-TV-Z]{26}", new_id("wi", 1_700_000_000_000))


def test_ids_sort_by_creation_time():
    times = [0, 1, 999, 1_000, 1_700_000_000_000, 1_700_000_000_001, 2**48 - 1]
    ids = [new_id("x", t) for t in times]
    assert ids == sorted(ids)


def test_ids_are_unique():
    assert len({new_id("x", 5) for _ in range(10_000)}) == 10_000


_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10)), min_size=1, max_size=8))
def test_ids_encode_time_and_randomness_as_rfc4648_base32_in_crockford_digits(calls):
    # The reference encoding: the standard library's base-32 of the 16 bytes,
    # mapped digit for digit onto Crockford's alphabet. Several calls in a
    # row, at the same and at other times: the time part kept from one call
    # to the next must follow the time.
    for now, random_part in calls:
        with mock.patch("os.urandom", lambda n, r=random_part: r[:n]):
            got = new_id("wi", now)
        expected = base64.b32encode(now.to_bytes(6, "big") + random_part)[:26].translate(_TO_CROCKFORD).decode()
        assert got == f"wi_{expected}"
