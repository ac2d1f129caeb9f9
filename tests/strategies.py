"""Hypothesis strategies, in one place."""

from __future__ import annotations

from hypothesis import strategies as st

# JSON values that survive a round trip exactly (what the kernel accepts).
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False
) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

# Values JSON would change or cannot carry: the kernel must refuse them.
unjsonable = st.one_of(
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.binary(min_size=1, max_size=4),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
    st.just("\ud800"),
    st.sets(st.integers(), min_size=1, max_size=2),
)

workers = st.sampled_from(["w1", "w2", "w3"])
lease_ms = st.integers(1, 5_000)
