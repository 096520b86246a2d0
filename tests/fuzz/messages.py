# ruff: noqa: PT017 - invariant checks in a fuzz target, not pytest assertions
"""Fuzz target for the typed-message decoder (``MessageRegistry``).

The envelope comes from msgpack bytes, from JSON bytes, or is built field by
field from the input (``FuzzedDataProvider``), mostly well-typed so the
fuzzer reaches the success paths and the near misses. Checks: the decoder
returns an instance of the class the ``"type"`` key names, or raises
``InvalidMessage`` / ``UnknownMessageType`` (nothing else); the generated
fast path for flat classes and the general path agree; a decoded message
encodes back to an envelope that decodes to the same message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import msgpack

from framework.core.codecs import JsonCodec, MsgpackCodec
from framework.core.errors import (
    DecodeError,
    EncodeError,
    InvalidMessage,
    MessageError,
    UnknownMessageType,
)
from framework.core.messages import TYPE_KEY, MessageRegistry

from . import _model
from ._support import Input, Target, seed

__all__ = ["TARGETS", "check_message", "packed"]

REGISTRY = _model.registry()
MSGPACK = MsgpackCodec()
JSON = JsonCodec()
TYPE_NAMES = ("position", "route", "blob", "ping", "unknown", "")
FIELDS = ("x", "y", "z", "count", "name", "points", "tags", "color", "origin")
FIELDS += ("data", "flag", "level", "extra", "seq", "label", "bogus")
# A valid envelope per type name: built envelopes start from its fields.
TEMPLATES = {REGISTRY.type_name(type(s)): REGISTRY.encode(s) for s in reversed(_model.samples())}


def packed(registry: MessageRegistry, value: Any) -> bytes:
    """A message as msgpack bytes: equality that a NaN field does not break."""
    return MSGPACK.encode(registry.encode(value))


def _outcome(decode: Callable[[Any], Any], envelope: Any) -> tuple[str, Any]:
    try:
        return "ok", decode(envelope)
    except MessageError as exc:
        assert isinstance(exc, InvalidMessage | UnknownMessageType), f"{type(exc).__name__}: {exc}"
        if isinstance(exc, InvalidMessage):
            assert exc.field is None or type(exc.field) is str, f"field {exc.field!r}"
        return type(exc).__name__, None


def check_message(registry: MessageRegistry, envelope: Any) -> Any:
    """Decode ``envelope`` both ways and check the result; return the message or ``None``."""
    kind, value = _outcome(registry.decode, envelope)
    # The general path (cattrs) is the reference the generated fast path must match.
    general_kind, general = _outcome(registry._decode, envelope)
    assert kind == general_kind, f"fast path says {kind}, general path {general_kind}"
    if value is None:
        return None
    assert type(envelope) is dict
    assert type(value) is registry.class_for(envelope[TYPE_KEY]), "decoded into the wrong class"
    wire = packed(registry, value)
    assert packed(registry, general) == wire, "fast and general paths built different messages"
    again = registry.decode(MSGPACK.decode(wire))
    assert packed(registry, again) == wire, "a message does not survive encode and decode"
    return value


# -- building envelopes from the input ------------------------------------------------


def _scalar(inp: Input) -> Any:
    fdp = inp.fdp
    choice = inp.pick(range(10))
    if choice == 0:
        return fdp.ConsumeInt(8)
    if choice == 1:
        return fdp.ConsumeFloat()
    if choice == 2:
        return fdp.ConsumeUnicodeNoSurrogates(inp.byte() % 16)
    if choice == 3:
        return fdp.ConsumeBytes(inp.byte() % 16)
    if choice == 4:
        return fdp.ConsumeBool()
    if choice == 5:
        return None
    if choice == 6:
        return inp.pick(("red", "green", "blue", 1, 2, 3, True, 1.0))
    if choice == 7:
        return fdp.ConsumeIntInRange(-3, 3)
    if choice == 8:
        return float(fdp.ConsumeIntInRange(-3, 3))
    return inp.pick(TYPE_NAMES)


def _value(inp: Input, depth: int = 0) -> Any:
    shape = inp.pick(range(6)) if depth < 4 else 0
    if shape <= 2:
        return _scalar(inp)
    count = inp.pick(range(4))
    if shape == 3:
        return [_value(inp, depth + 1) for _ in range(count)]
    if shape == 4:  # a point, more or less
        point = {"x": _value(inp, depth + 1), "y": _value(inp, depth + 1)}
        if inp.fdp.ConsumeBool():
            point["label"] = _value(inp, depth + 1)
        return point
    keys = [inp.pick(FIELDS) if inp.fdp.ConsumeBool() else _scalar(inp) for _ in range(count)]
    return {key: _value(inp, depth + 1) for key in keys if isinstance(key, str | bytes | int)}


def _envelope(inp: Input) -> Any:
    if inp.pick(range(8)) == 0:
        return _value(inp)  # not even a map, sometimes
    name = inp.pick(TYPE_NAMES)
    envelope: dict[Any, Any] = {}
    if inp.pick(range(8)):
        envelope[TYPE_KEY] = name
    else:
        envelope[TYPE_KEY] = _scalar(inp)
    base = TEMPLATES.get(name, {})
    for key in FIELDS:
        if key in base and inp.pick(range(4)):
            envelope[key] = base[key]  # keep a good value most of the time
        elif inp.pick(range(8)) == 0:
            envelope[key] = _value(inp)
    return envelope


def run_messages(data: bytes) -> int:
    """Decode an envelope from msgpack, from JSON, or built from the input."""
    inp = Input(data)
    mode = inp.pick(("msgpack", "json", "built"))
    if mode == "built":
        try:
            # Only what msgpack can carry: a map key that is not a str or bytes
            # never reaches the registry from the wire.
            envelope = MSGPACK.decode(MSGPACK.encode(_envelope(inp)))
        except (DecodeError, EncodeError):
            return 0
    else:
        codec = MSGPACK if mode == "msgpack" else JSON
        try:
            envelope = codec.decode(inp.rest())
        except DecodeError:
            return 0
    return int(check_message(REGISTRY, envelope) is not None)


def seeds_messages() -> list[bytes]:
    """Each sample message as msgpack and (when JSON can carry it) as JSON."""
    out = []
    for sample in _model.samples():
        envelope = REGISTRY.encode(sample)
        out.append(seed(packed(REGISTRY, sample), [0]))
        with contextlib.suppress(TypeError):  # bytes: JSON has no binary type
            out.append(seed(json.dumps(envelope).encode(), [1]))
    # Near misses: a missing field, an extra field, a wrong type, an unknown type.
    for envelope in (
        {"type": "position", "x": 1.0, "y": 2.0, "z": 3.0},
        {"type": "position", "x": 1.0, "y": 2.0, "z": 3.0, "count": 1, "w": 0},
        {"type": "position", "x": "1", "y": 2.0, "z": 3.0, "count": 1},
        {"type": "route", "name": "r", "points": [{"x": 1, "y": "no"}]},
        {"type": "nope"},
        {"type": "ping", "seq": -1},
        [1, 2, 3],
    ):
        out.append(seed(msgpack.packb(envelope), [0]))
    out += [seed(bytes(range(i, i + 40)), [2]) for i in range(0, 200, 40)]
    return out


TARGETS = [
    Target(
        "messages",
        "MessageRegistry: flat fast path against the general path, nested/optional/list/"
        "enum fields, validators, round trip",
        run_messages,
        seeds_messages,
    ),
]
