"""msgspec's paths for flat messages agree with the msgpack ones, byte for byte.

With msgspec installed, a frame that starts as wirekit writes an envelope
of a flat frozen class is decoded by msgspec in one step (see
``framework.core._flat.wire_decoder``). It may only be faster: for any frame,
valid or not, a pipeline decodes it to the same value, with the same field
types, or refuses it with the same error, as a pipeline built without
msgspec. The frames below start with a registered prefix (so the msgspec
path is tried) and then hold any entries: missing, repeated, unknown or
non-string keys, values of every msgpack type, trailing bytes.

On the way out, msgspec writes a flat class's envelopes: for any instance,
whatever its fields hold (attrs does not check their types), a pipeline
writes the same bytes as one built without msgspec, or raises the same
error, in every encoding path (one frame, a batch, a connection's encoder).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import framework.core._flat as flat
from framework import Pipeline, message
from framework.core.errors import WirekitError
from framework.core.framing import LengthPrefix

pytest.importorskip("msgspec")


@message("pos")
@attrs.frozen
class Pos:
    x: float
    y: float
    z: float
    count: int


@message("tagged")
@attrs.frozen
class Tagged:
    name: str
    blob: bytes
    on: bool
    n: int


@message("one")
@attrs.frozen
class One:
    v: float


@message("twin")
@attrs.frozen
class Twin:  # Pos's fields under another name: only the envelope's type tells them apart
    x: float
    y: float
    z: float
    count: int


CLASSES = [Pos, Tagged, One, Twin]
FIELDS = {cls: [f.name for f in attrs.fields(cls)] for cls in CLASSES}
NAMES = {Pos: "pos", Tagged: "tagged", One: "one", Twin: "twin"}


@contextlib.contextmanager
def without_msgspec() -> Iterator[None]:
    saved = flat.msgspec
    flat.msgspec = None
    try:
        yield
    finally:
        flat.msgspec = saved


FAST = Pipeline(framing="length-prefix", codecs="msgpack", messages=CLASSES)
with without_msgspec():
    REFERENCE = Pipeline(framing="length-prefix", codecs="msgpack", messages=CLASSES)


def test_flat_frozen_classes_get_a_wire_decoder_and_the_reference_none() -> None:
    assert len(FAST.messages.flat_paths().wire_decoders) == len(CLASSES)  # type: ignore[union-attr]
    assert REFERENCE.messages.flat_paths().wire_decoders == {}  # type: ignore[union-attr]


def outcome(pipeline: Pipeline, frame: bytes) -> tuple[str, Any]:
    try:
        value = pipeline.decode_frame(frame)
    except WirekitError as exc:
        return "error", (type(exc).__name__, str(exc))
    if attrs.has(type(value)):
        # repr: NaN equals itself there, and 1 and 1.0 differ.
        return "value", (type(value), [repr(getattr(value, n)) for n in FIELDS[type(value)]])
    return "value", (type(value), repr(value))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32),
    st.text(max_size=8),
    st.binary(max_size=8),
    # What a lax decoder would coerce: numbers as text, whole floats, 0 and 1.
    st.sampled_from(["1", "-2", "1.5", "nan", "true", "false", "", 1.0, -0.0, 0, 1, b"1"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)


def packed(value: Any, single: bool) -> bytes:
    if single and type(value) is float:
        with contextlib.suppress(OverflowError):  # past float 32's range: float 64
            return b"\xca" + struct.pack(">f", value)  # float 32, as some peers send
    return msgpack.packb(value, use_bin_type=True)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    cls = draw(st.sampled_from(CLASSES))
    names = FIELDS[cls]
    keys = st.one_of(
        st.sampled_from(names),
        st.sampled_from(names).map(str.encode),  # a bin key, not a str
        st.text(max_size=4),
        st.just("type"),
    )
    # Mostly the right fields, sometimes changed: values of any type, a key
    # dropped, repeated or replaced; the count in the header follows.
    entries = [(name, draw(values) if draw(st.booleans()) else draw(scalars)) for name in names]
    entries = draw(st.permutations(entries))
    if draw(st.integers(0, 3)) == 0:
        entries = draw(st.lists(st.tuples(keys, values), max_size=len(names) + 1))
    single = draw(st.booleans())
    body = b"".join(packed(k, False) + packed(v, single) for k, v in entries)
    count = len(entries) + 1
    header = bytes([0x80 | count]) if count < 16 else b"\xde" + struct.pack(">H", count)
    head = header + packed("type", False) + packed(NAMES[cls], False)
    return head + body + draw(st.sampled_from([b"", b"\x00", b"\xc1"]))


@settings(max_examples=400, deadline=None)
@given(frame=frames())
def test_a_frame_decodes_alike_with_and_without_msgspec(frame: bytes) -> None:
    expected = outcome(REFERENCE, frame)
    assert outcome(FAST, frame) == expected
    # A framer may hand over a view or a mutable buffer: the same answer.
    assert outcome(FAST, memoryview(frame)) == expected  # type: ignore[arg-type]
    assert outcome(FAST, bytearray(frame)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", [b"", b"\x85", b"\x85\xa4type", b"\x85\xa4type\xa3po"])
def test_a_frame_too_short_for_a_prefix_is_refused_alike(frame: bytes) -> None:
    assert outcome(FAST, frame) == outcome(REFERENCE, frame)


@pytest.mark.parametrize("cls", CLASSES)
def test_what_wirekit_encodes_takes_the_msgspec_path(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {Pos: (1.5, 0.0, -2.0, 7), Tagged: ("a", b"\x00", True, -3), One: (2.5,)}.get(
        cls, (1.0, 2.0, 3.0, 4)
    )
    original = cls(*values)
    frame = FAST.encode_frame(original)
    assert FAST.decode_frame(frame) == original
    # The path is the msgspec one: a registry whose wire decoders are gone
    # still decodes the frame, through msgpack, to the same value.
    prefixes = [p for p in FAST.messages.flat_paths().wire_decoders if frame.startswith(p)]  # type: ignore[union-attr]
    assert len(prefixes) == 1
    assert REFERENCE.decode_frame(frame) == original


@attrs.frozen
class WithDefault:
    x: float
    n: int = 0


@attrs.frozen
class Validated:
    n: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.define
class Mutable:
    x: float


@pytest.mark.parametrize("cls", [WithDefault, Validated, Mutable])
def test_classes_msgspec_would_treat_differently_keep_the_python_path(cls: type) -> None:
    # A default lets an unknown key stand in for a missing field; a
    # validator or a mutable class's __init__ must run: msgspec skips both.
    pipeline = Pipeline(framing="length-prefix", codecs="msgpack", messages=[message("c")(cls)])
    assert pipeline.messages.flat_paths().wire_decoders == {}  # type: ignore[union-attr]


def test_a_codec_with_size_limits_keeps_the_python_path() -> None:
    from framework.core.codecs import MsgpackCodec

    pipeline = Pipeline(
        framing="length-prefix", codecs=[MsgpackCodec(max_str_len=2)], messages=[Tagged]
    )
    frame = REFERENCE.encode_frame(Tagged("abc", b"", False, 1))
    with pytest.raises(WirekitError):
        pipeline.decode_frame(frame)


anything = st.one_of(
    values,
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: msgpack refuses
    st.datetimes(),  # msgspec writes these, msgpack refuses
    st.uuids(),
    st.sampled_from([float("nan"), -0.0, 2**63, 2**64, -(2**63) - 1, object()]),
)


def written(pipeline: Pipeline, values: list[Any]) -> tuple[str, Any]:
    results: list[Any] = []
    for encode in (
        pipeline.encode_frame,
        lambda value: pipeline.encode(value),
        lambda value: pipeline.encode_many([value, value]),
        lambda value: pipeline.encoder().encode_many([value]),
    ):
        for value in values:
            try:
                results.append(encode(value))
            except WirekitError as exc:
                results.append((type(exc).__name__, str(exc)))
    try:
        results.append(pipeline.encoder().encode_many(values))
    except WirekitError as exc:
        results.append((type(exc).__name__, str(exc)))
    return "written", results


@st.composite
def instances(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(CLASSES))
    # attrs checks no types: an instance may hold anything.
    fields = [draw(anything) if draw(st.booleans()) else draw(scalars) for _ in FIELDS[cls]]
    return cls(*fields)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(instances(), min_size=1, max_size=4))
def test_an_instance_is_written_alike_with_and_without_msgspec(batch: list[Any]) -> None:
    assert written(FAST, batch) == written(REFERENCE, batch)


def test_flat_classes_get_a_wire_encoder_and_the_reference_none() -> None:
    assert set(FAST.messages.flat_paths().wire_encoders) == set(CLASSES)  # type: ignore[union-attr]
    assert REFERENCE.messages.flat_paths().wire_encoders == {}  # type: ignore[union-attr]


# A read's frames and a read's replies go through msgspec as one batch when
# they are all of one class; a frame of another class, or a value msgspec
# would write differently, sends the whole batch the per-value way.

# Beside the default header: a header that counts itself with a small
# frame limit, and one whose value is the size less 20 (no frame below 20
# bytes can be written), so the batch path meets frames it must refuse.
FRAMINGS = [
    "msgpack-stream",
    LengthPrefix(length_adjustment=-4, max_frame_size=40),
    LengthPrefix(prefix_size=2, length_adjustment=20),
]
BATCH_PAIRS = [(FAST, REFERENCE)]
for framing in FRAMINGS:
    fast = Pipeline(framing=framing, codecs="msgpack", messages=CLASSES)
    with without_msgspec():
        BATCH_PAIRS.append((fast, Pipeline(framing=framing, codecs="msgpack", messages=CLASSES)))


def read(pipeline: Pipeline, frames: list[bytes]) -> list[Any]:
    """What a connection gets from one read holding ``frames``: values and errors, in order."""
    decoder = pipeline.decoder()
    data = b"".join(pipeline.framing.encode(frame) for frame in frames)
    seen: list[Any] = []

    def describe(value: Any) -> Any:
        return (type(value), [repr(getattr(value, n)) for n in FIELDS[type(value)]])

    while True:
        try:
            seen += [describe(value) for value in decoder.feed(data)]
        except WirekitError as exc:
            seen += [describe(value) for value in getattr(exc, "decoded", [])]
            seen.append((type(exc).__name__, str(exc)))
            data = b""  # the frames after the bad one are still held
            continue
        return seen


@st.composite
def reads(draw: st.DrawFn) -> list[bytes]:
    def good(cls: type) -> bytes:
        return REFERENCE.encode_frame(cls(**REFERENCE_VALUES[cls]))

    same_class = st.just(good(draw(st.sampled_from(CLASSES))))
    any_class = st.sampled_from(CLASSES).map(good)
    # Mostly well-formed frames of one class; now and then one of another
    # class (Twin has Pos's fields) or a crafted one, valid or not, anywhere.
    return draw(st.lists(st.one_of(same_class, same_class, any_class, frames()), max_size=6))


REFERENCE_VALUES = {
    Pos: {"x": 1.5, "y": -0.0, "z": 2.0, "count": 7},
    Tagged: {"name": "ab", "blob": b"\x00", "on": True, "n": -3},
    One: {"v": 0.25},
    Twin: {"x": 1.5, "y": -0.0, "z": 2.0, "count": 7},
}


@settings(max_examples=300, deadline=None)
@given(frames=reads())
def test_a_read_of_many_frames_decodes_alike_with_and_without_msgspec(
    frames: list[bytes],
) -> None:
    assert read(FAST, frames) == read(REFERENCE, frames)


@st.composite
def one_class_batches(draw: st.DrawFn) -> list[Any]:
    cls = draw(st.sampled_from(CLASSES))

    def instance(odd: bool) -> Any:
        fields = [draw(anything) if odd else draw(scalars) for _ in FIELDS[cls]]
        return cls(*fields)

    # Mostly values msgspec writes as msgpack does, sometimes one that it would not.
    return [instance(draw(st.integers(0, 7)) == 0) for _ in range(draw(st.integers(2, 6)))]


def replies(pipeline: Pipeline, values: list[Any]) -> Any:
    try:
        return pipeline.encoder().encode_many(values)
    except WirekitError as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(batch=one_class_batches())
def test_a_read_of_replies_of_one_class_is_written_alike_with_and_without_msgspec(
    batch: list[Any],
) -> None:
    for fast, reference in BATCH_PAIRS:
        assert replies(fast, batch) == replies(reference, batch)
