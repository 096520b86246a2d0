"""Typed messages: attrs classes registered under a type name, in a map envelope."""

from __future__ import annotations

import datetime
import enum
from typing import Any, Optional

import attrs
import pytest
from helpers_core import at_most

from framework import (
    TYPE_KEY,
    ConfigError,
    DecodeError,
    Delimited,
    EncodeError,
    InvalidMessage,
    LengthPrefix,
    MessageError,
    MessageRegistry,
    Pipeline,
    UnknownMessageType,
    message,
    message_type_name,
)
from framework.testing import check_decode_total, check_message_roundtrip


@message("position")
@attrs.frozen
class Position:
    """The reference game packet."""

    x: float
    y: float
    z: float
    count: int


@attrs.frozen
class Point:
    x: float
    y: float


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@message("path")
@attrs.frozen
class Path:
    points: list[Point]
    tags: dict[str, int]
    color: Color
    priority: Priority
    origin: Point | None = None
    label: Optional[str] = None  # noqa: UP045 - the typing.Optional spelling works too


@message("chat")
@attrs.frozen
class Chat:
    text: str
    to: list[str]
    urgent: bool = False
    extra: Any = None


@message("blob")
@attrs.frozen
class Blob:
    """Binary fields: msgpack carries them, JSON cannot."""

    data: bytes
    chunks: list[bytes]


@message("tree")
@attrs.frozen
class Tree:
    value: int
    children: list[Tree] = attrs.Factory(list)


@message("order")
@attrs.frozen
class Order:
    quantity: int = attrs.field(validator=attrs.validators.gt(0))


JSON_CLASSES = [Position, Path, Chat, Tree]
ALL_CLASSES = [*JSON_CLASSES, Blob]


def msgpack_pipeline(classes: list[type] = ALL_CLASSES) -> Pipeline:
    return Pipeline(framing=LengthPrefix(), codecs="msgpack", messages=classes)


def json_pipeline(classes: list[type] = JSON_CLASSES) -> Pipeline:
    return Pipeline(framing=Delimited(), codecs="json", messages=classes)


REGISTRY = MessageRegistry([*ALL_CLASSES, Order])

# A valid "path" message as a peer would send it.
PATH = {
    "type": "path",
    "points": [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0}],
    "tags": {"a": 1},
    "color": "red",
    "priority": 2,
}


def invalid(envelope: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        REGISTRY.decode(envelope)
    return caught.value


# -- round trips through the kit -----------------------------------------------------


def test_position_round_trips_through_a_msgpack_pipeline() -> None:
    check_message_roundtrip(msgpack_pipeline([Position]))


def test_position_round_trips_through_a_json_pipeline() -> None:
    check_message_roundtrip(json_pipeline([Position]))


def test_several_classes_round_trip_through_a_msgpack_pipeline() -> None:
    check_message_roundtrip(msgpack_pipeline(), settings=at_most(60))


def test_several_classes_round_trip_through_a_json_pipeline() -> None:
    check_message_roundtrip(json_pipeline(), settings=at_most(60))


@pytest.mark.parametrize("pipeline", [msgpack_pipeline(), json_pipeline()], ids=["msgpack", "json"])
def test_message_pipelines_are_total(pipeline: Pipeline) -> None:
    check_decode_total(pipeline, settings=at_most(100))


# -- the envelope on the wire --------------------------------------------------------


def test_json_envelope_is_a_map_with_the_type_name_and_the_fields() -> None:
    wire = json_pipeline().encode(Position(1.5, 0.0, -2.0, 7))
    assert wire == b'{"type":"position","x":1.5,"y":0.0,"z":-2.0,"count":7}\n'


def test_msgpack_envelope_is_a_map_with_the_type_name_and_the_fields() -> None:
    frame = msgpack_pipeline().encode_frame(Position(1.5, 0.0, -2.0, 7))
    assert frame == (
        b"\x85\xa4type\xa8position"
        b"\xa1x\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"
        b"\xa1y\xcb\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\xa1z\xcb\xc0\x00\x00\x00\x00\x00\x00\x00"
        b"\xa5count\x07"
    )


def test_a_message_from_another_language_decodes() -> None:
    # Key order is free, and 0 and -2 are written as integers by many encoders.
    line = b'{"count": 7, "z": -2, "y": 0, "x": 1.5, "type": "position"}\n'
    assert json_pipeline().decoder().feed(line) == [Position(1.5, 0.0, -2.0, 7)]


def test_nested_classes_lists_dicts_optionals_and_enums_are_structured() -> None:
    value = REGISTRY.decode({**PATH, "origin": {"x": 0, "y": 1.5}, "label": "home"})
    assert value == Path(
        points=[Point(1.0, 2.0), Point(3.0, 4.0)],
        tags={"a": 1},
        color=Color.RED,
        priority=Priority.HIGH,
        origin=Point(0.0, 1.5),
        label="home",
    )
    assert REGISTRY.encode(value) == {
        **PATH,
        "origin": {"x": 0.0, "y": 1.5},
        "label": "home",
    }


def test_optional_fields_take_none_or_their_default() -> None:
    assert REGISTRY.decode({**PATH, "origin": None}).origin is None
    assert REGISTRY.decode(PATH).label is None


def test_any_field_passes_through_unchecked() -> None:
    value = REGISTRY.decode({"type": "chat", "text": "hi", "to": [], "extra": {"k": [1, None]}})
    assert value.extra == {"k": [1, None]}


def test_a_class_can_contain_itself() -> None:
    tree = {"type": "tree", "value": 1, "children": [{"value": 2, "children": []}]}
    assert REGISTRY.decode(tree) == Tree(1, [Tree(2)])


# -- invalid messages ----------------------------------------------------------------


def test_invalid_message_names_the_field_path_with_expected_and_actual() -> None:
    error = invalid({**PATH, "points": [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": "north"}]})
    assert error.field == "points[1].y"
    assert error.expected == "float"
    assert error.actual == "str"
    assert error.type_name == "path"
    assert "path.points[1].y" in str(error)


def test_invalid_dict_value_names_its_key() -> None:
    error = invalid({**PATH, "tags": {"a": 1, "b": "two"}})
    assert error.field == "tags['b']"
    assert (error.expected, error.actual) == ("int", "str")


def test_invalid_nested_optional_names_its_field() -> None:
    error = invalid({**PATH, "origin": {"x": "left", "y": 0.0}})
    assert error.field == "origin.x"


def test_a_list_field_must_be_an_array() -> None:
    error = invalid({**PATH, "points": {"x": 1.0}})
    assert error.field == "points"
    assert (error.expected, error.actual) == ("array", "dict")


def test_missing_field_is_named() -> None:
    error = invalid({"type": "position", "x": 1.0, "y": 2.0, "z": 3.0})
    assert error.field == "count"
    assert "missing" in str(error)


def test_missing_nested_field_is_named() -> None:
    error = invalid({**PATH, "points": [{"x": 1.0}]})
    assert error.field == "points[0].y"


def test_extra_field_is_named() -> None:
    error = invalid({"type": "position", "x": 1.0, "y": 2.0, "z": 3.0, "count": 1, "w": 0})
    assert error.field == "w"
    assert "unexpected" in str(error)


def test_extra_nested_field_is_named() -> None:
    error = invalid({**PATH, "points": [{"x": 1.0, "y": 2.0, "z": 3.0}]})
    assert error.field == "points[0].z"


def test_map_without_type_is_invalid() -> None:
    error = invalid({"x": 1.0, "y": 2.0, "z": 3.0, "count": 1})
    assert error.field == TYPE_KEY
    assert error.value == {"x": 1.0, "y": 2.0, "z": 3.0, "count": 1}


def test_non_string_type_is_invalid() -> None:
    error = invalid({"type": 7, "x": 1.0})
    assert error.field == TYPE_KEY
    assert (error.expected, error.actual) == ("str", "int")


@pytest.mark.parametrize("value", [[1, 2], 42, "position", None, b"\x85"], ids=repr)
def test_a_message_must_be_a_map(value: Any) -> None:
    error = invalid(value)
    assert error.expected == "map"
    assert error.value == value


def test_unknown_type_carries_its_name_and_the_value() -> None:
    envelope = {"type": "teleport", "to": "moon"}
    with pytest.raises(UnknownMessageType) as caught:
        REGISTRY.decode(envelope)
    assert caught.value.type_name == "teleport"
    assert caught.value.value == envelope


def test_int_is_accepted_for_a_float_field() -> None:
    value = REGISTRY.decode({"type": "position", "x": 1, "y": 2, "z": 3, "count": 4})
    assert value == Position(1.0, 2.0, 3.0, 4)
    assert type(value.x) is float


@pytest.mark.parametrize(
    ("field", "value", "expected", "actual"),
    [
        ("count", True, "int", "bool"),
        ("count", 1.0, "int", "float"),
        ("count", "1", "int", "str"),
        ("x", True, "float", "bool"),
        ("x", "1.5", "float", "str"),
        ("x", None, "float", "NoneType"),
    ],
    ids=repr,
)
def test_scalar_types_are_strict(field: str, value: Any, expected: str, actual: str) -> None:
    envelope = {"type": "position", "x": 1.0, "y": 2.0, "z": 3.0, "count": 4, field: value}
    error = invalid(envelope)
    assert (error.field, error.expected, error.actual) == (field, expected, actual)


@pytest.mark.parametrize("value", ["blue", "RED", 1], ids=repr)
def test_enum_fields_take_member_values(value: Any) -> None:
    error = invalid({**PATH, "color": value})
    assert error.field == "color"
    assert "'red'" in error.expected  # type: ignore[operator]


@pytest.mark.parametrize("value", [True, 1.0, 3, "1"], ids=repr)
def test_int_enum_fields_take_exactly_their_int_values(value: Any) -> None:
    assert invalid({**PATH, "priority": value}).field == "priority"


def test_bool_field_refuses_ints() -> None:
    error = invalid({"type": "chat", "text": "hi", "to": [], "urgent": 1})
    assert (error.field, error.expected, error.actual) == ("urgent", "bool", "int")


def test_bytes_field_refuses_str() -> None:
    error = invalid({"type": "blob", "data": "text", "chunks": []})
    assert (error.field, error.expected, error.actual) == ("data", "bytes", "str")


def test_a_refusing_validator_names_its_field() -> None:
    # attrs runs validators in __init__, for the whole class: the field is not
    # known as a path, but the validator's message names it.
    error = invalid({"type": "order", "quantity": 0})
    assert error.field is None
    assert "quantity" in str(error)
    assert error.type_name == "order"


def test_message_errors_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        REGISTRY.decode({"type": "nope"})
    assert issubclass(InvalidMessage, MessageError)


# -- encoding ------------------------------------------------------------------------


def test_encoding_an_unregistered_instance_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="Point"):
        REGISTRY.encode(Point(1.0, 2.0))
    with pytest.raises(EncodeError):
        msgpack_pipeline().encode({"type": "position"})


def test_bytes_fields_cannot_be_sent_as_json() -> None:
    with pytest.raises(EncodeError):
        Pipeline(codecs="json", messages=[Blob]).encode(Blob(b"\x00", []))


# -- registration --------------------------------------------------------------------


def test_registry_is_an_inspectable_table() -> None:
    registry = MessageRegistry([Position, Chat])
    assert len(registry) == 2
    assert set(registry) == {Position, Chat}
    assert "position" in registry
    assert Position in registry
    assert registry.type_name(Chat) == "chat"
    assert registry.class_for("position") is Position
    with pytest.raises(UnknownMessageType):
        registry.class_for("nope")


def test_message_type_name_reads_the_decorator() -> None:
    assert message_type_name(Position) == "position"
    with pytest.raises(ConfigError, match="Point"):
        message_type_name(Point)


def test_register_under_an_explicit_name() -> None:
    registry = MessageRegistry()
    registry.register(Point, "point")
    assert registry.decode({"type": "point", "x": 1.0, "y": 2.0}) == Point(1.0, 2.0)
    assert registry.encode(Point(1.0, 2.0)) == {"type": "point", "x": 1.0, "y": 2.0}


def test_registering_the_same_class_twice_is_harmless() -> None:
    registry = MessageRegistry([Position])
    registry.register(Position)
    assert len(registry) == 1


def test_registering_a_non_attrs_class_is_a_config_error() -> None:
    class Plain:
        x: float

    with pytest.raises(ConfigError, match="attrs"):
        message("plain")(Plain)
    with pytest.raises(ConfigError, match="attrs"):
        MessageRegistry().register(Plain, "plain")


def test_a_field_named_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'type'"):

        @message("typed")
        @attrs.frozen
        class Typed:
            type: str


def test_duplicate_type_name_is_a_config_error() -> None:
    @message("position")
    @attrs.frozen
    class OtherPosition:
        x: float

    with pytest.raises(ConfigError, match="already registered"):
        MessageRegistry([Position, OtherPosition])


def test_empty_type_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        message("")


@pytest.mark.parametrize(
    "field_type",
    [
        datetime.datetime,
        set[int],
        frozenset[str],
        tuple[int, int],
        tuple[float, ...],
        dict[int, str],
        list[set[int]],
        int | str,
        complex,
    ],
    ids=repr,
)
def test_unsupported_field_type_is_a_config_error_at_registration(field_type: Any) -> None:
    cls = attrs.make_class("Unsupported", {"value": attrs.field(type=field_type)})
    with pytest.raises(ConfigError, match="Unsupported"):
        MessageRegistry().register(cls, "unsupported")


def test_unsupported_field_type_in_a_nested_class_is_a_config_error() -> None:
    inner = attrs.make_class("Inner", {"tags": attrs.field(type=set[str])})
    outer = attrs.make_class("Outer", {"inner": attrs.field(type=list[inner])})  # type: ignore[valid-type]
    with pytest.raises(ConfigError, match=r"Outer\.inner"):
        MessageRegistry().register(outer, "outer")


@pytest.mark.parametrize(
    "fields",
    [
        {"x": 1.0, "y": 2.0, "z": 3.0, "count": 4},
        {"x": 1, "y": 2, "z": 3, "count": 4},
        {"x": 1.0, "y": 2.0, "z": 3.0, "count": 4.0},
        {"x": True, "y": 2.0, "z": 3.0, "count": 4},
        {"x": 1.0, "y": 2.0, "z": 3.0, "count": True},
        {"x": 1.0, "y": 2.0, "z": 3.0},
        {"x": 1.0, "y": 2.0, "z": 3.0, "count": 4, "w": 0},
        {"x": 1.0, "y": 2.0, "z": "3", "count": 4},
    ],
)
def test_flat_fast_path_agrees_with_the_general_path(fields: dict[str, object]) -> None:
    """Flat classes take a generated fast path; it must accept and refuse exactly as cattrs."""
    import attrs as _attrs

    from framework import InvalidMessage, MessageRegistry, message

    @message("flatpos")
    @_attrs.frozen
    class FlatPos:
        x: float
        y: float
        z: float
        count: int

    registry = MessageRegistry([FlatPos])
    envelope = {"type": "flatpos", **fields}
    try:
        fast: object = registry.decode(dict(envelope))
    except InvalidMessage as exc:
        fast = ("error", exc.field)
    try:
        general: object = registry._decode(dict(envelope))
    except InvalidMessage as exc:
        general = ("error", exc.field)
    assert fast == general


calls: list[str] = []


@attrs.frozen
class _Plain:
    x: float
    n: int = 0


@attrs.frozen(cache_hash=True)
class _CachedHash:
    x: float
    n: int


@attrs.frozen
class _Validated:
    x: float
    n: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class _PostInit:
    x: float
    n: int

    def __attrs_post_init__(self) -> None:
        calls.append(f"post-init {self.n}")


@attrs.frozen(kw_only=True)
class _KwOnly:
    x: float
    n: int


@attrs.define
class _Mutable:
    x: float
    n: int


class _Counting(type):
    """A metaclass that sees every instance its classes make."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__call__(*args, **kwargs)
        calls.append(f"made {instance.n}")
        return instance


@attrs.frozen
class _CountedBase(metaclass=_Counting):
    pass


@attrs.frozen
class _Counted(_CountedBase):
    x: float
    n: int


@pytest.mark.parametrize(
    "cls", [_Plain, _CachedHash, _Validated, _PostInit, _KwOnly, _Mutable, _Counted]
)
def test_flat_messages_decode_to_what_their_class_builds(cls: type) -> None:
    # The fast path may build a plain frozen instance without calling its
    # __init__; whatever calling the class would do besides setting fields
    # (validate, cache a hash, run a hook, a metaclass's __call__) must still
    # happen, through the class.
    registry = MessageRegistry()
    registry.register(cls, "flat")
    calls.clear()
    decoded = registry.decode({"type": "flat", "x": 1.5, "n": 7})
    built = cls(x=1.5, n=7)
    assert type(decoded) is cls
    assert decoded == built
    if cls is not _Mutable:
        assert hash(decoded) == hash(built)
    assert (decoded.x, decoded.n) == (1.5, 7)
    hooked = {_PostInit: ["post-init 7", "post-init 7"], _Counted: ["made 7", "made 7"]}
    assert calls == hooked.get(cls, [])
    if cls is _Validated:
        with pytest.raises(InvalidMessage):
            registry.decode({"type": "flat", "x": 1.5, "n": -1})
    if cls is not _Mutable:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            decoded.x = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("name", [[1], {"a": 1}, 3, None])
def test_a_type_key_that_is_not_a_string_is_an_invalid_message(name: Any) -> None:
    registry = MessageRegistry([Position])
    with pytest.raises(InvalidMessage) as caught:
        registry.decode({"type": name, "x": 1.0, "y": 2.0, "z": 3.0, "count": 1})
    assert caught.value.field == "type"
