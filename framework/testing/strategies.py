"""Hypothesis strategies for wirekit's parts and for your own.

Every strategy that depends on a codec or a framing dispatches on its type;
teach it about your own classes with :func:`register_values` and
:func:`register_frames`.
"""

from __future__ import annotations

import enum
import itertools
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import msgpack
from hypothesis import strategies as st

from framework.core.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    Utf8Codec,
    exceeds_depth,
)
from framework.core.errors import ConfigError
from framework.core.framing import Datagram, Delimited, Framing, LengthPrefix, MsgpackStream
from framework.core.messages import MessageRegistry

__all__ = [
    "chunkings",
    "codec_values",
    "frame_payloads",
    "garbage",
    "json_values",
    "message_instances",
    "msgpack_values",
    "register_frames",
    "register_values",
    "utf8_text",
]

T = TypeVar("T")

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
# Examples stay small so a law runs hundreds of cases in well under a second;
# size limits get their own law (check_rejects_oversize).
_SMALL = 64


def utf8_text(*, max_size: int = _SMALL) -> st.SearchStrategy[str]:
    """Text that UTF-8 can encode (no lone surrogates)."""
    return st.text(alphabet=st.characters(codec="utf-8"), max_size=max_size)


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Every way of cutting ``data`` into consecutive chunks: whole, one byte at a
    time, or split at arbitrary points (empty chunks included)."""
    size = len(data)
    whole = st.just([data])
    bytewise = st.just([data[i : i + 1] for i in range(size)])
    cuts = st.lists(st.integers(0, size), max_size=min(size + 2, 40)).map(sorted)

    def split(points: list[int]) -> list[bytes]:
        bounds = [0, *points, size]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    return st.one_of(whole, bytewise, cuts.map(split))


def garbage(valid: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    """Hostile bytes: random, or valid encodings with bytes flipped, cut or inserted.

    Mutating valid input reaches deep into a decoder's states, where random
    bytes are rejected at the first header.
    """
    random_bytes = st.binary(max_size=256)
    if valid is None:
        return random_bytes

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
            if action == "insert" or not data:
                at = draw(st.integers(0, len(data)))
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif action == "flip":
                at = draw(st.integers(0, len(data) - 1))
                data[at] = draw(st.integers(0, 255))
            elif action == "cut":
                at = draw(st.integers(0, len(data) - 1))
                del data[at : at + draw(st.integers(1, 8))]
            else:
                del data[draw(st.integers(0, len(data))) :]
        return bytes(data)

    return st.one_of(random_bytes, mutate())


def _nested(base: st.SearchStrategy[Any], max_depth: int | None) -> st.SearchStrategy[Any]:
    """Scalars from ``base`` in lists and str-keyed maps, at most ``max_depth`` deep."""
    values = st.recursive(
        base,
        lambda inner: st.one_of(
            st.lists(inner, max_size=6), st.dictionaries(utf8_text(max_size=8), inner, max_size=6)
        ),
        max_leaves=16,
    )
    if max_depth is not None:
        values = values.filter(lambda v: not exceeds_depth(v, max_depth))
    return values


def msgpack_values(*, max_depth: int | None = None) -> st.SearchStrategy[Any]:
    """Values msgpack round-trips exactly: nil, bool, int64/uint64, float64, str,
    bin, arrays (lists) and maps with str keys."""
    base = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(_INT64_MIN, _UINT64_MAX),
        st.floats(allow_nan=False),
        utf8_text(),
        st.binary(max_size=_SMALL),
    )
    return _nested(base, max_depth)


def json_values(*, max_depth: int | None = None) -> st.SearchStrategy[Any]:
    """Values JSON round-trips exactly: null, bool, int, finite float, str, lists
    and objects with str keys."""
    base = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(_INT64_MIN, _UINT64_MAX),
        st.floats(allow_nan=False, allow_infinity=False),
        utf8_text(),
    )
    return _nested(base, max_depth)


def _field_strategy(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(_INT64_MIN, 2**63 - 1),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: utf8_text(),
        bytes: st.binary(max_size=_SMALL),
        bool: st.booleans(),
        type(None): st.none(),
        None: st.none(),
        typing.Any: json_values(),
    }
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if origin is list or tp is list:
        return st.lists(_field_strategy(args[0] if args else typing.Any), max_size=4)
    if origin is dict or tp is dict:
        value = args[1] if len(args) == 2 else typing.Any
        return st.dictionaries(utf8_text(max_size=8), _field_strategy(value), max_size=4)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([_field_strategy(arg) for arg in args])
    if attrs.has(tp):
        return message_instances(tp)
    raise ConfigError(f"no strategy for field type {tp!r}; pass your own with st.builds")


# One strategy per class, so a class that refers to itself (a tree) finds its
# own strategy instead of building a new one at every level.
_INSTANCES: dict[type, st.SearchStrategy[Any]] = {}


def message_instances(cls: type[T]) -> st.SearchStrategy[T]:
    """Instances of an attrs message class, derived from its field types."""
    strategy = _INSTANCES.get(cls)
    if strategy is None:
        target: Any = cls
        attrs.resolve_types(target)
        fields = {
            field.name: _deferred_field(field.type) for field in attrs.fields(target) if field.init
        }
        strategy = _INSTANCES[cls] = st.builds(cls, **fields)
    return strategy


def _deferred_field(tp: Any) -> st.SearchStrategy[Any]:
    # Deferred: the field's strategy may be the class's own (a tree).
    return st.deferred(lambda: _field_strategy(tp))


_VALUES: dict[type, Callable[[Any], st.SearchStrategy[Any]]] = {
    BytesCodec: lambda codec: st.binary(max_size=_SMALL * 4),
    Utf8Codec: lambda codec: utf8_text(max_size=_SMALL * 4),
    MsgpackCodec: lambda codec: msgpack_values(max_depth=codec.max_depth),
    JsonCodec: lambda codec: json_values(max_depth=codec.max_depth),
    MessageRegistry: lambda registry: st.one_of([message_instances(cls) for cls in registry]),
}


def register_values(codec_type: type, factory: Callable[[Any], st.SearchStrategy[Any]]) -> None:
    """Teach :func:`codec_values` the values a codec class accepts."""
    _VALUES[codec_type] = factory


def codec_values(codec: Codec) -> st.SearchStrategy[Any]:
    """Values that ``codec`` can encode and must decode back unchanged."""
    for kind in type(codec).__mro__:
        if kind in _VALUES:
            return _VALUES[kind](codec)
    raise ConfigError(
        f"no value strategy for {type(codec).__qualname__}: pass values=... to the law, "
        "or call framework.testing.register_values"
    )


def _delimited_payloads(framing: Delimited) -> st.SearchStrategy[bytes]:
    delimiter = framing.delimiter

    def clean(frame: bytes) -> bytes:
        frame = frame.replace(delimiter, b"")
        while delimiter in frame:  # removal can join two halves into a new delimiter
            frame = frame.replace(delimiter, b"")
        if framing.strip_cr and delimiter == b"\n":
            frame = frame.rstrip(b"\r")
        # A self-overlapping delimiter (b"\0\0") must not begin inside the frame's end.
        while frame and len(delimiter) > 1:
            tail = frame[1 - len(delimiter) :]
            if (tail + delimiter).find(delimiter) == len(tail):
                break
            frame = frame[:-1]
        return frame

    return st.binary(max_size=_SMALL).map(clean)


def _length_prefix_payloads(framing: LengthPrefix) -> st.SearchStrategy[bytes]:
    # The header holds len(frame) - length_adjustment: a positive adjustment
    # rules out short frames, a narrow prefix rules out long ones.
    adjustment = framing.length_adjustment
    low = max(0, adjustment)
    high = min(low + _SMALL * 2, framing.max_field_value + adjustment)
    return st.binary(min_size=low, max_size=high)


_FRAMES: dict[type, Callable[[Any], st.SearchStrategy[bytes]]] = {
    LengthPrefix: _length_prefix_payloads,
    Datagram: lambda framing: st.binary(max_size=_SMALL * 2),
    Delimited: _delimited_payloads,
    MsgpackStream: lambda framing: msgpack_values().map(
        lambda value: msgpack.packb(value, use_bin_type=True)
    ),
}


def register_frames(framing_type: type, factory: Callable[[Any], st.SearchStrategy[bytes]]) -> None:
    """Teach :func:`frame_payloads` which frames a framing class can carry."""
    _FRAMES[framing_type] = factory


def frame_payloads(framing: Framing) -> st.SearchStrategy[bytes]:
    """Frames that ``framing`` can carry, within its size limit."""
    limit = framing.max_frame_size
    for kind in type(framing).__mro__:
        if kind in _FRAMES:
            strategy = _FRAMES[kind](framing)
            if limit is not None:
                strategy = strategy.filter(lambda frame: len(frame) <= limit)
            return strategy
    raise ConfigError(
        f"no frame strategy for {type(framing).__qualname__}: pass frames=... to the law, "
        "or call framework.testing.register_frames"
    )
