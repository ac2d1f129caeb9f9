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

# --- hostile input --------------------------------------------------------------

_deep_list: list = []
_cursor = _deep_list
for _ in range(200):
    _cursor.append([])
    _cursor = _cursor[0]
_deep_dict: dict = {}
_cursor_d = _deep_dict
for _ in range(200):
    _cursor_d["k"] = {}
    _cursor_d = _cursor_d["k"]

sql_fragments = st.sampled_from([
    "'; DROP TABLE journal; --", "x' OR '1'='1", "%", "_", "\\", "*", "journal", "sqlite_schema",
    "/* */", "--", '"', "ek_1", "cmd:x:0", "work_item:", ":", "a:b", "../../etc/passwd", "NULL", "1; ATTACH 'x' AS y",
])
hostile_text = st.one_of(
    st.just(""),
    st.text(max_size=30),
    sql_fragments,
    st.just("\x00"),
    st.just("a\x00b"),
    st.just("\ud800"),
    st.just("tail\udfff"),
    st.just("x" * 100_000),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
)


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


hostile_values = st.one_of(
    hostile_text,
    unjsonable,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    json_values,
    st.just(_deep_list),
    st.just(_deep_dict),
    st.just([1] * 50_000),
    st.builds(_Opaque),
    st.binary(max_size=8),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.lists(hostile_text, max_size=3),
    st.dictionaries(hostile_text, json_scalars, max_size=3),
)
