"""The error hierarchy: one root, the builtins a caller would catch, structured fields."""

from __future__ import annotations

import inspect
import re

import pytest

import framework.core.errors
from framework.core.errors import (
    CodecError,
    ConfigError,
    ConnectionClosed,
    DecodeError,
    EncodeError,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    InvalidMessage,
    MessageError,
    TransportError,
    UnknownMessageType,
    WirekitError,
)

ERRORS = [getattr(framework.core.errors, name) for name in framework.core.errors.__all__]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: error.__name__)
def test_every_error_is_a_wirekit_error(error: type[Exception]) -> None:
    assert issubclass(error, WirekitError)


def test_the_module_exports_every_error_it_defines() -> None:
    defined = {
        name
        for name, value in vars(framework.core.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert defined == set(framework.core.errors.__all__)


def drawn_tree() -> dict[str, str | None]:
    """Each class the module docstring draws, and the class it is drawn under."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in (framework.core.errors.__doc__ or "").splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)", line)
        if match is None or not hasattr(framework.core.errors, match.group(2)):
            continue
        # Four characters per level of the drawing; a branch mark adds one.
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        del path[depth:]
        parents[match.group(2)] = path[-1] if path else None
        path.append(match.group(2))
    return parents


def test_the_module_docstring_draws_every_error_under_a_class_it_subclasses() -> None:
    parents = drawn_tree()
    assert set(parents) == set(framework.core.errors.__all__)
    for name, parent in parents.items():
        if parent is not None:
            assert issubclass(
                getattr(framework.core.errors, name), getattr(framework.core.errors, parent)
            )
    assert parents["ConnectionClosed"] == "TransportError"


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (ConfigError, ValueError),
        (FramingError, WirekitError),
        (FrameTooLarge, FramingError),
        (IncompleteFrame, FramingError),
        (InvalidFrame, FramingError),
        (CodecError, WirekitError),
        (DecodeError, CodecError),
        (EncodeError, CodecError),
        (MessageError, DecodeError),
        (UnknownMessageType, MessageError),
        (InvalidMessage, MessageError),
        (TransportError, WirekitError),
        (ConnectionClosed, TransportError),
    ],
    ids=lambda item: item.__name__,
)
def test_hierarchy(error: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(error, parent)


@pytest.mark.parametrize(
    ("error", "not_parent"),
    [
        (EncodeError, DecodeError),  # our bug, not the peer's bad bytes
        (DecodeError, EncodeError),
        (FramingError, CodecError),
        (CodecError, FramingError),
        (TransportError, ValueError),
        (FramingError, ValueError),
        (ConnectionClosed, FramingError),  # the end of a connection is not bad input
    ],
    ids=lambda item: item.__name__,
)
def test_branches_stay_apart(error: type[Exception], not_parent: type[Exception]) -> None:
    assert not issubclass(error, not_parent)


def test_str_is_the_message() -> None:
    error = FramingError("the stream broke", offset=3)
    assert str(error) == "the stream broke"
    assert error.message == "the stream broke"


def test_decoded_starts_empty_and_is_not_shared() -> None:
    first, second = DecodeError("a", codec="x"), DecodeError("b", codec="x")
    first.decoded.append(1)
    assert second.decoded == []
    assert FramingError("c").decoded == []


def test_only_errors_of_the_peers_bytes_carry_partial_results() -> None:
    # Whatever else goes wrong (configuration, encoding, transport) decoded nothing.
    for error in (
        ConfigError("bad"),
        EncodeError("bad", codec="x"),
        TransportError("gone"),
        WirekitError("root"),
    ):
        assert not hasattr(error, "decoded"), type(error).__name__


def test_config_error_names_the_option_and_value() -> None:
    error = ConfigError("max_depth must be positive", option="max_depth", value=-1)
    assert (error.option, error.value) == ("max_depth", -1)
    with pytest.raises(ValueError, match="max_depth"):
        raise error


def test_framing_errors_carry_their_offset_size_and_limit() -> None:
    assert FramingError("x").offset is None
    too_large = FrameTooLarge("x", size=100, limit=10, offset=4)
    assert (too_large.size, too_large.limit, too_large.offset) == (100, 10, 4)
    incomplete = IncompleteFrame("x", buffered=3, expected=9, offset=12)
    assert (incomplete.buffered, incomplete.expected, incomplete.offset) == (3, 9, 12)
    assert IncompleteFrame("x", buffered=1).expected is None
    assert InvalidFrame("x", offset=7).offset == 7


def test_codec_errors_carry_the_codec_and_offset() -> None:
    decode = DecodeError("x", codec="utf-8", offset=5)
    assert (decode.codec, decode.offset) == ("utf-8", 5)
    assert EncodeError("x", codec="json").offset is None


def test_message_errors_carry_the_type_field_and_value() -> None:
    envelope = {"type": "position", "x": "north"}
    invalid = InvalidMessage(
        "x",
        type_name="position",
        value=envelope,
        field="x",
        expected="float",
        actual="str",
    )
    assert invalid.codec == "messages"
    assert (invalid.type_name, invalid.value, invalid.field) == ("position", envelope, "x")
    assert (invalid.expected, invalid.actual) == ("float", "str")
    unknown = UnknownMessageType("x", type_name="teleport", value={"type": "teleport"})
    assert (unknown.type_name, unknown.value) == ("teleport", {"type": "teleport"})


def test_transport_error_names_the_peer() -> None:
    assert TransportError("reset", peer=("127.0.0.1", 9000)).peer == ("127.0.0.1", 9000)
    assert TransportError("reset").peer is None


def test_one_except_clause_catches_anything_bad_input_causes() -> None:
    raised = [
        FrameTooLarge("x", size=2, limit=1),
        IncompleteFrame("x", buffered=1),
        InvalidFrame("x"),
        DecodeError("x", codec="json"),
        InvalidMessage("x"),
        UnknownMessageType("x"),
    ]
    for error in raised:
        with pytest.raises(WirekitError):
            raise error
