# ruff: noqa: PT017, PT018 - invariant checks in a fuzz target, not pytest assertions
"""Fuzz targets for every codec: bytes, utf-8, msgpack, json.

Each decodes the payload (with limits chosen by the input) and checks: only
``DecodeError`` escapes; a decoded value respects the codec's limits; it
re-encodes, and the re-encoded bytes decode to a value that encodes to the
same bytes again (compared as bytes, so a NaN does not fool the check);
utf-8 agrees with Python's own strict decoder, offset included.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack

from framework.core.codecs import BytesCodec, Codec, JsonCodec, MsgpackCodec, Utf8Codec
from framework.core.errors import DecodeError, EncodeError

from ._support import BUFFER_KINDS, Input, Target, seed, shows_json_bug

__all__ = ["TARGETS"]

DEPTHS = (1, 2, 8, 32, None)
SIZE_LIMITS = (None, 3, 64)


def _stable(codec: Codec, value: Any) -> bytes:
    """Encode ``value``, decode that, and check that encoding is now a fixed point."""
    encoded = codec.encode(value)
    again = codec.encode(codec.decode(encoded))
    assert again == encoded, f"{codec!r}: {value!r} re-encodes unstably: {encoded!r} -> {again!r}"
    return encoded


def _walk(value: Any) -> Any:
    """Every value inside ``value`` with its depth, iteratively."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if type(item) is list:
            stack.extend((child, depth + 1) for child in item)
        elif type(item) is dict:
            for key, child in item.items():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))


# -- bytes and utf-8 -----------------------------------------------------------------


def run_bytes(data: bytes) -> int:
    """The identity codec takes any bytes-like value and gives the same bytes back."""
    inp = Input(data)
    kind = inp.pick(BUFFER_KINDS)
    payload = inp.rest()
    codec = BytesCodec()
    value = codec.decode(kind(payload))
    assert type(value) is bytes and value == payload
    assert codec.encode(value) == payload
    for wrong in (len(payload), payload.decode("latin-1"), [payload]):
        try:
            codec.decode(wrong)
        except DecodeError:
            continue
        raise AssertionError(f"the bytes codec decoded a {type(wrong).__name__}")
    return 1


def run_utf8(data: bytes) -> int:
    """Strict UTF-8: the same verdict and error offset as Python's decoder."""
    inp = Input(data)
    kind = inp.pick(BUFFER_KINDS)
    payload = inp.rest()
    codec = Utf8Codec()
    try:
        expected = payload.decode("utf-8")
    except UnicodeDecodeError as reference:
        try:
            codec.decode(kind(payload))
        except DecodeError as exc:
            assert exc.offset == reference.start, f"offset {exc.offset}, not {reference.start}"
            return 0
        raise AssertionError("invalid UTF-8 was decoded") from None
    text = codec.decode(kind(payload))
    assert text == expected
    assert codec.encode(text) == payload
    return 1


def seeds_text() -> list[bytes]:
    """Text in several scripts, and the classic invalid sequences."""
    samples = [
        "hello",
        "héllo wörld",
        "日本語",
        "🙂 emoji",
        "",
    ]
    out = [seed(s.encode(), [i % 3]) for i, s in enumerate(samples)]
    for bad in (b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"):
        out.append(seed(bad, [0]))
    return out


# -- msgpack -------------------------------------------------------------------------


def _msgpack(inp: Input) -> MsgpackCodec:
    options: dict[str, Any] = {"max_depth": inp.pick(DEPTHS)}
    for key in ("max_str_len", "max_bin_len", "max_array_len", "max_map_len", "max_ext_len"):
        limit = inp.pick(SIZE_LIMITS)
        if limit is not None:
            options[key] = limit
    return MsgpackCodec(**options)


def _check_msgpack_limits(codec: MsgpackCodec, value: Any) -> None:
    limits = {
        str: codec.max_str_len,
        bytes: codec.max_bin_len,
        list: codec.max_array_len,
        dict: codec.max_map_len,
    }
    for item, depth in _walk(value):
        kind = type(item)
        if kind in (list, dict) and codec.max_depth is not None:
            assert depth <= codec.max_depth, f"depth {depth} over max_depth={codec.max_depth}"
        if kind is dict:
            assert all(type(k) in (str, bytes) for k in item), "a map key is not str or bytes"
        limit = limits.get(kind)
        if limit is not None:
            size = len(item.encode()) if kind is str else len(item)
            assert size <= limit, f"a {kind.__name__} of {size} over its limit {limit}"
        if kind is msgpack.ExtType and codec.max_ext_len is not None:
            assert len(item.data) <= codec.max_ext_len


def run_msgpack(data: bytes) -> int:
    """msgpack: bounded sizes and depth, map keys str/bytes, and a stable re-encode."""
    inp = Input(data)
    codec = _msgpack(inp)
    payload = inp.rest()
    try:
        value = codec.decode(payload)
    except DecodeError:
        return 0
    _check_msgpack_limits(codec, value)
    _stable(codec, value)
    return 1


def seeds_msgpack() -> list[bytes]:
    """Every msgpack type, and the bombs: huge announced sizes, deep nesting."""
    values: list[Any] = [
        {"type": "position", "x": 1.5, "y": -0.0, "z": float("nan"), "count": 7},
        [1, -1, 2**64 - 1, -(2**63), 1.25, None, True, False],
        {"s": "é" * 40, "b": b"\x00" * 70, "l": list(range(70))},
        msgpack.ExtType(7, b"ext"),
        msgpack.Timestamp(1, 2),
        [[[[[[[[[[1]]]]]]]]]],
    ]
    out = [seed(msgpack.packb(v, use_bin_type=True), [3, 0, 0, 0, 0, 0]) for v in values]
    out.append(seed(msgpack.packb(values[2], use_bin_type=True), [3, 2, 2, 2, 2, 2]))
    for bomb in (b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\x91" * 2000, b"\xc1"):
        out.append(seed(bomb, [4, 0, 0, 0, 0, 0]))
    return out


# -- json ----------------------------------------------------------------------------


def run_json(data: bytes) -> int:
    """JSON: strict UTF-8, no NaN or Infinity either way, bounded depth, a stable re-encode."""
    inp = Input(data)
    codec = JsonCodec(max_depth=inp.pick(DEPTHS))
    payload = inp.rest()
    try:
        value = codec.decode(payload)
    except DecodeError:
        return 0
    if shows_json_bug(value):
        return 0
    for item, depth in _walk(value):
        if type(item) in (list, dict) and codec.max_depth is not None:
            assert depth <= codec.max_depth, f"depth {depth} over max_depth={codec.max_depth}"
        if type(item) is float:
            assert math.isfinite(item), f"JSON decoded to the non-finite float {item!r}"
    try:
        _stable(codec, value)
    except EncodeError as exc:
        raise AssertionError(f"a decoded JSON value cannot be sent back: {exc}") from exc
    return 1


def seeds_json() -> list[bytes]:
    """Objects, arrays, numbers at the edges, escapes, and deep nesting."""
    docs: list[Any] = [
        {"type": "position", "x": 1.5, "y": 0, "name": "ünï"},
        [1, -1, 1.5e300, 12345678901234567890, True, False, None, "a\nb\u00e9"],
        "plain",
        [[[[[[[[[[{}]]]]]]]]]],
    ]
    out = [seed(json.dumps(d).encode(), [3]) for d in docs]
    for text in (b"1e400", b'"\\ud800"', b"[" * 100, b"NaN", b'{"a":1,}', b"\xef\xbb\xbf{}"):
        out.append(seed(text, [3]))
    return out


TARGETS = [
    Target("codec-bytes", "BytesCodec: any bytes-like value, nothing else", run_bytes, seeds_text),
    Target("codec-utf8", "Utf8Codec: agrees with Python's strict decoder", run_utf8, seeds_text),
    Target(
        "codec-msgpack",
        "MsgpackCodec: every size limit and max_depth, map keys, stable re-encode",
        run_msgpack,
        seeds_msgpack,
    ),
    Target(
        "codec-json",
        "JsonCodec: strict UTF-8, no NaN/Infinity, max_depth, stable re-encode",
        run_json,
        seeds_json,
    ),
]
