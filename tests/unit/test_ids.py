import re

from kernel.ids import new_id


def test_ids_have_a_prefix_and_26_crockford_characters():
    assert re.fullmatch(r"wi_[0-9A-HJKMNP-TV-Z]{26}", new_id("wi", 1_700_000_000_000))


def test_ids_sort_by_creation_time():
    times = [0, 1, 999, 1_000, 1_700_000_000_000, 1_700_000_000_001, 2**48 - 1]
    ids = [new_id("x", t) for t in times]
    assert ids == sorted(ids)


def test_ids_are_unique():
    assert len({new_id("x", 5) for _ in range(10_000)}) == 10_000
