"""Events and their JSON encoding.

An event is a frozen, keyword-only :class:`msgspec.Struct` subclass of
:class:`Event` with a stable dotted type name given at class creation::

    class Note(Event, tag="app.note"):
        text: str

The type name is stored in the journal's ``type`` column and the fields, as a
JSON object, in ``data`` — never a Python path, so classes can move freely.
A type once written is never renamed or reused. When a change cannot follow
msgspec's evolution rules (new fields with defaults), bump ``schema=`` and
register an upcaster for the old version with :func:`register_upcaster`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, dataclass_transform

import msgspec

from eventkernel.errors import CodecError, InvalidArgument, UnknownEventType
from eventkernel.validate import MAX_DEPTH, check_json_value, plain_json, walk_json

# An event is one level above its fields: a value accepted as an argument
# (nested up to MAX_DEPTH) must fit once it is a field.
_EVENT_DEPTH = MAX_DEPTH + 1
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_registry: dict[str, type[Event]] = {}
_decoders: dict[str, msgspec.json.Decoder[Any]] = {}
# type name -> (current schema, its decode function): the common case of decode().
_current: dict[str, tuple[int, Any]] = {}
_upcasters: dict[tuple[str, int], Upcaster] = {}

_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class _EventMeta(msgspec.StructMeta):
    """Takes ``tag=`` and ``schema=`` for the journal, not for msgspec: the type
    lives in its own column, so the JSON in ``data`` holds only the fields."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any) -> Any:
        tag = kwargs.pop("tag", None)
        schema = kwargs.pop("schema", None)
        kwargs.setdefault("frozen", True)
        kwargs.setdefault("kw_only", True)
        cls: Any = super().__new__(mcls, name, bases, ns, **kwargs)
        if tag is None:
            if schema is not None:
                raise TypeError(f"{name}: schema= needs tag= as well")
            cls.__event_type__ = None
            return cls
        if not isinstance(tag, str) or not _TYPE_NAME.match(tag):
            raise TypeError(
                f"{name}: event type {tag!r} must be a dotted lowercase name such as 'app.note'"
            )
        if schema is None:
            schema = 1
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise TypeError(f"{name}: schema must be an int >= 1, got {schema!r}")
        existing = _registry.get(tag)
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"{name}: event type {tag!r} is already taken by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        cls.__event_type__ = tag
        cls.__event_schema__ = schema
        _registry[tag] = cls
        _decoders[tag] = msgspec.json.Decoder(cls)
        _current[tag] = (schema, _decoders[tag].decode)
        return cls


# For type checkers: subclasses are frozen and keyword-only, as the metaclass makes them.
@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(msgspec.field,))
class Event(msgspec.Struct, metaclass=_EventMeta, frozen=True, kw_only=True):
    """Base class of every event: a frozen, keyword-only msgspec Struct.

    Subclass with ``tag="domain.fact"`` (past tense) and optionally
    ``schema=N``.
    """

    __event_type__: ClassVar[str | None]
    __event_schema__: ClassVar[int] = 1


def type_name(event: Event) -> str:
    """The stored type name of an event instance."""
    name = type(event).__event_type__
    if name is None:
        raise InvalidArgument(
            f"append refused: {type(event).__name__} has no event type; "
            "declare it as class X(Event, tag='app.x')"
        )
    return name


def event_class(name: str) -> type[Event]:
    """The registered class for a stored type name; raises UnknownEventType."""
    try:
        return _registry[name]
    except KeyError:
        raise UnknownEventType(name) from None


def registered_types() -> dict[str, type[Event]]:
    """A copy of the type-name → class registry."""
    return dict(_registry)


def register_upcaster(type_name: str, from_schema: int, upcaster: Upcaster) -> None:
    """Register a pure ``dict -> dict`` that turns ``type_name`` data stored at
    ``from_schema`` into the shape of ``from_schema + 1``. Applied on read."""
    _upcasters[(type_name, from_schema)] = upcaster


def encode(event: Event, *, where: str = "append") -> str:
    """Encode an event's fields as JSON text, refusing values JSON cannot carry
    exactly and values that do not match the declared field types."""
    if not isinstance(event, Event):
        raise InvalidArgument(
            f"{where} refused: expected an Event instance, got {type(event).__name__} {event!r:.80}"
        )
    name = type_name(event)
    # Decided in C in the common case: encode, decode with the declared field
    # types, compare. Anything else is walked to name the offending value.
    try:
        data = _encoder.encode(event)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        walk_json(where, name, event, max_depth=_EVENT_DEPTH)
        raise InvalidArgument(f"{where} refused: event {name} cannot be encoded as JSON: {e}") from None
    try:
        decoded = _decoders[name].decode(data)
    except msgspec.ValidationError as e:
        walk_json(where, name, event, max_depth=_EVENT_DEPTH)
        raise InvalidArgument(f"{where} refused: event {name} does not match its declared fields: {e}") from None
    if not (plain_json(data, _EVENT_DEPTH) and decoded == event):
        walk_json(where, name, event, max_depth=_EVENT_DEPTH)
    return data.decode()


class Erased(msgspec.Struct, frozen=True):
    """The event of a journal row whose payload was erased (``k.erase``):
    its type, stream and times remain, its fields are gone."""


ERASED = Erased()


def decode(type_name: str, schema: int, data: str | bytes) -> Event:
    """Decode stored data into its Event class, upcasting older schemas; an
    erased payload (JSON null, which no event is) gives ``ERASED``."""
    fast = _current.get(type_name)
    if fast is not None and fast[0] == schema:
        try:
            return fast[1](data)  # type: ignore[no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            if data == "null" or data == b"null":
                return ERASED  # type: ignore[return-value]
            raise CodecError(f"cannot decode stored {type_name} (schema {schema}): {e}") from e
    if data == "null" or data == b"null":
        return ERASED  # type: ignore[return-value]
    cls = event_class(type_name)
    try:
        if schema == cls.__event_schema__:
            return _decoders[type_name].decode(data)  # type: ignore[no-any-return]
        if schema > cls.__event_schema__:
            raise CodecError(
                f"cannot decode {type_name} schema {schema}: this process knows schema "
                f"{cls.__event_schema__} at most (is the code older than the journal?)"
            )
        raw = _any_decoder.decode(data)
        for version in range(schema, cls.__event_schema__):
            upcaster = _upcasters.get((type_name, version))
            if upcaster is None:
                raise CodecError(
                    f"cannot decode {type_name} schema {schema}: no upcaster registered "
                    f"from schema {version} to {version + 1}"
                )
            raw = upcaster(raw)
        return msgspec.convert(raw, cls)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise CodecError(f"cannot decode stored {type_name} (schema {schema}): {e}") from e


def encode_json(value: Any, *, where: str, name: str) -> str:
    """Validate and encode a free-form JSON value (input, output, meta, …)."""
    check_json_value(where, name, value)
    return _encoder.encode(value).decode()


def dump_json(value: Any) -> str:
    """Encode a value already validated (e.g. a field of a stored event)."""
    return _encoder.encode(value).decode()


def canonical_json(value: Any) -> bytes:
    """JSON with object keys sorted: the same value always gives the same bytes."""
    return _sorted_encoder.encode(value)


def decode_json(text: str | bytes | None) -> Any:
    """Decode JSON text stored by the kernel; None stays None."""
    if text is None:
        return None
    return _any_decoder.decode(text)
