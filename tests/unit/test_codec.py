from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventkernel
from eventkernel import codec
from eventkernel.errors import CodecError, InvalidArgument, UnknownEventType

from strategies import json_values, unjsonable


class Note(eventkernel.Event, tag="test_codec.note"):
    text: str
    extra: Any = None


class Renamed(eventkernel.Event, tag="test_codec.renamed", schema=2):
    title: str
    words: int = 0


codec.register_upcaster("test_codec.renamed", 1, lambda d: {"title": d["name"], "words": len(d["name"].split())})


def test_data_holds_only_the_fields_not_the_type():
    assert codec.encode(Note(text="hi")) == '{"text":"hi","extra":null}'


def test_events_are_frozen_and_keyword_only():
    n = Note(text="x")
    with pytest.raises(AttributeError):
        n.text = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Note("x")  # type: ignore[misc]


@given(json_values)
def test_json_values_round_trip_exactly(value):
    data = codec.encode(Note(text="v", extra=value))
    assert codec.decode("test_codec.note", 1, data) == Note(text="v", extra=_listify(value))


def _listify(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return [_listify(x) for x in v]
    if isinstance(v, dict):
        return {k: _listify(x) for k, x in v.items()}
    return v


@given(unjsonable)
def test_values_json_would_change_are_refused(value):
    with pytest.raises(InvalidArgument, match=r"test_codec\.note\.extra"):
        codec.encode(Note(text="v", extra=value))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("nan"), "no NaN"),
        ({1: "a"}, "keys must be str"),
        (b"ab", "only JSON values"),
        (2**64, "64-bit"),
        ("a\udc80", "lone surrogate"),
    ],
)
def test_refusals_say_why(value, why):
    with pytest.raises(InvalidArgument, match=why):
        codec.encode(Note(text="v", extra=value))


def test_deep_nesting_is_refused():
    v: Any = []
    for _ in range(100):
        v = [v]
    with pytest.raises(InvalidArgument, match="nested deeper"):
        codec.encode(Note(text="v", extra=v))


def test_declared_field_types_are_checked():
    with pytest.raises(InvalidArgument, match=r"Expected `str`, got `int` - at `\$.text`"):
        codec.encode(Note(text=3))  # type: ignore[arg-type]


def test_unknown_type_on_read():
    with pytest.raises(UnknownEventType, match="no Event class is registered") as e:
        codec.decode("nobody.knows", 1, "{}")
    assert e.value.type_name == "nobody.knows"


def test_type_names_must_be_dotted_lowercase():
    with pytest.raises(TypeError, match="dotted lowercase"):

        class Bad(eventkernel.Event, tag="NoDots"):
            x: int


def test_a_type_name_cannot_be_taken_twice():
    with pytest.raises(TypeError, match="already taken"):

        class Other(eventkernel.Event, tag="test_codec.note"):
            x: int


def test_old_schema_is_upcast_on_read():
    assert codec.decode("test_codec.renamed", 1, '{"name": "two words"}') == Renamed(title="two words", words=2)
    assert codec.decode("test_codec.renamed", 2, '{"title": "t", "words": 5}') == Renamed(title="t", words=5)


def test_missing_upcaster_and_newer_schema_are_codec_errors():
    class Versioned(eventkernel.Event, tag="test_codec.versioned", schema=3):
        x: int

    codec.register_upcaster("test_codec.versioned", 2, lambda d: d)
    with pytest.raises(CodecError, match="no upcaster registered from schema 1 to 2"):
        codec.decode("test_codec.versioned", 1, '{"x": 1}')
    with pytest.raises(CodecError, match="knows schema 3 at most"):
        codec.decode("test_codec.versioned", 4, '{"x": 1}')


def test_corrupt_stored_data_is_a_codec_error():
    with pytest.raises(CodecError, match="cannot decode stored test_codec.note"):
        codec.decode("test_codec.note", 1, '{"text": 5}')


def test_canonical_json_sorts_keys():
    assert codec.canonical_json({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'


def test_recorded_is_a_frozen_struct():
    assert issubclass(eventkernel.Recorded, msgspec.Struct)
    assert eventkernel.Recorded.__struct_config__.frozen


@given(st.binary(max_size=80) | st.text(alphabet="0123456789a,[]{}\":-.", max_size=80).map(str.encode)
       | st.lists(st.sampled_from([b"[", b",", b":", b"-", b'"', b"a", b"1" * 10, b"9" * 19]), max_size=8).map(b"".join))
def test_plain_json_finds_numbers_of_19_digits_exactly_as_a_regular_expression_would(encoded):
    import re

    from eventkernel.validate import MAX_DEPTH, plain_json

    shallow = encoded.count(b"[") + encoded.count(b"{") <= MAX_DEPTH
    expected = shallow and re.search(rb"(?:^|[:,\[])-?\d{19}", encoded) is None
    assert plain_json(encoded) == expected


INTS = st.integers(-(2**70), 2**70) | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1])
DIGITS = st.text(alphabet="0123456789:,[-", min_size=15, max_size=40)


@given(st.recursive(INTS | DIGITS | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(DIGITS, inner, max_size=3),
                    max_leaves=8))
def test_plain_json_never_misses_an_integer_beyond_64_bits(value):
    from eventkernel.validate import INT64_MAX, INT64_MIN, plain_json

    def ints(v):
        if type(v) is int:
            yield v
        elif isinstance(v, list):
            for x in v:
                yield from ints(x)
        elif isinstance(v, dict):
            for x in v.values():
                yield from ints(x)

    encoded = msgspec.json.encode(value)
    if plain_json(encoded):
        assert all(INT64_MIN <= i <= INT64_MAX for i in ints(value))


def test_digits_inside_strings_keep_the_fast_path():
    from eventkernel.validate import plain_json

    # LangGraph's channel versions hold 32-digit counters; they are strings, not numbers
    assert plain_json(msgspec.json.encode({"v": "00000000000000000000000000000002.0.5", "id": "1" * 40}))
    assert not plain_json(msgspec.json.encode({"v": 10**19}))
    assert not plain_json(msgspec.json.encode([-(10**19)]))


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_value_nested_as_deep_as_an_argument_may_be_is_stored_by_every_command(k):
    deepest = _nested(64)
    item = k.work.enqueue("t", deepest)
    assert k.work.get(item).input == deepest
    assert k.memory.put("ns", "k", deepest).value == deepest
    assert k.checkpoints.record("t", "manual", deepest).snapshot == deepest
    s = k.sessions.create("app", "u", state={"x": _nested(63)})
    assert k.sessions.append_event(s.session_id, actor="u", content=deepest, state_delta={"y": _nested(63)})
    too_deep = _nested(65)
    with pytest.raises(eventkernel.InvalidArgument, match=r"^work.enqueue refused: input.* nested deeper than 64"):
        k.work.enqueue("t", too_deep)
    with pytest.raises(eventkernel.InvalidArgument, match=r"^memory.put refused: value.* nested deeper than 64"):
        k.memory.put("ns", "k", too_deep)
