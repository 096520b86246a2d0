"""Every speed-up of the pipeline agrees with the reference path, byte for byte.

Each entry of ``framework.core._fast`` is checked on its own: a pipeline
allowed only that speed-up (and taking it) against the same pipeline
allowed none. For any input, decoding gives the same values (compared by
``repr``: a NaN, and 1 against 1.0, count) and raises the same error class
with the same values before it; encoding gives the same bytes, or the same
error class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import (
    Delimited,
    LengthPrefix,
    MsgpackCodec,
    MsgpackStream,
    Pipeline,
    WirekitError,
    message,
)
from framework.core import _fast
from framework.testing import chunkings, frame_payloads, garbage, message_instances, utf8_text

pytest.importorskip("msgspec")


@message("pos")
@attrs.frozen
class Pos:
    x: float
    y: float
    count: int


@message("named")
@attrs.frozen
class Named:
    name: str
    n: int = 0


@message("trail")
@attrs.frozen
class Trail:
    points: list[int]


CLASSES = [Pos, Named, Trail]


class _Text(str):
    """A str subclass: the utf-8 codec refuses it, whatever path encodes it."""


def built(make: Callable[[], Pipeline], name: str) -> tuple[Pipeline, Pipeline]:
    """``make()`` allowed only the speed-up ``name``, and allowed none."""
    with _fast.only(name):
        fast = make()
    with _fast.only():
        reference = make()
    return fast, reference


# -- decoding ------------------------------------------------------------------------

DECODE_CASES: list[tuple[str, Callable[[], Pipeline]]] = [
    ("passthrough", lambda: Pipeline()),
    ("passthrough", lambda: Pipeline(framing=LengthPrefix(max_frame_size=20))),
    ("passthrough", lambda: Pipeline(framing=Delimited(max_frame_size=8, on_oversize="skip"))),
    (
        "msgpack-messages+msgspec",
        lambda: Pipeline(framing="length-prefix", codecs="msgpack", messages=CLASSES),
    ),
    (
        "msgpack-messages",
        lambda: Pipeline(framing="length-prefix", codecs="msgpack", messages=CLASSES),
    ),
    (
        "msgpack-messages",
        lambda: Pipeline(
            framing="msgpack-stream", codecs=MsgpackCodec(max_depth=2), messages=CLASSES
        ),
    ),
    ("utf-8-batch", lambda: Pipeline(framing="newline", codecs="utf-8")),
    ("utf-8-batch", lambda: Pipeline(framing=LengthPrefix(prefix_size=1), codecs="utf-8")),
]


def messages_wire(pipeline: Pipeline) -> st.SearchStrategy[bytes]:
    if pipeline.messages is not None:
        values: st.SearchStrategy[Any] = st.one_of([message_instances(c) for c in CLASSES])
    elif pipeline.codecs[0].name == "utf-8":
        values = utf8_text(max_size=10).map(lambda text: text.replace("\n", "").rstrip("\r"))
    else:
        values = frame_payloads(pipeline.framing)
    return garbage(st.lists(values, max_size=6).map(pipeline.encode_many))


def decode_outcome(pipeline: Pipeline, chunks: list[bytes]) -> str:
    decoder = pipeline.decoder()
    seen: list[Any] = []
    for chunk in [*chunks, b""]:
        try:
            seen.append(decoder.feed(chunk))
        except WirekitError as exc:
            seen.append((type(exc), exc.decoded))
    try:
        seen.append(decoder.end())
    except WirekitError as exc:
        seen.append((type(exc), exc.decoded))
    return repr(seen)


@pytest.mark.parametrize(
    ("name", "make"), DECODE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DECODE_CASES)]
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_each_decoding_speed_up_agrees_with_the_reference(
    name: str, make: Callable[[], Pipeline], data: st.DataObject
) -> None:
    fast, reference = built(make, name)
    assert repr(fast.decoder()) == f"<Decoder path={name}>"
    assert reference.decoder().path == "reference"
    wire = data.draw(messages_wire(reference), label="wire")
    chunks = data.draw(chunkings(wire), label="chunks")
    assert decode_outcome(fast, chunks) == decode_outcome(reference, chunks)
    assert reference.decoder().value_class is None
    decoder = fast.decoder()
    if decoder.value_class is not None:
        # The path's promise, which lets a dispatch loop skip asking each value.
        for chunk in [*chunks, b""]:
            try:
                values = decoder.feed(chunk)
            except WirekitError:
                continue
            assert all(type(value) is decoder.value_class for value in values)
    for frame in chunks:
        assert repr(_outcome(fast.decode_frame, frame)) == repr(
            _outcome(reference.decode_frame, frame)
        )


# -- encoding ------------------------------------------------------------------------

ENCODE_CASES: list[tuple[str, Callable[[], Pipeline]]] = [
    ("utf-8-batch", lambda: Pipeline(framing="newline", codecs="utf-8")),
    ("utf-8-batch", lambda: Pipeline(framing=LengthPrefix(max_frame_size=20), codecs="utf-8")),
    # Lines joined and encoded in one pass: each check of the framing must still hold.
    ("utf-8-batch", lambda: Pipeline(framing=Delimited(max_frame_size=12), codecs="utf-8")),
    ("utf-8-batch", lambda: Pipeline(framing=Delimited(strip_cr=False), codecs="utf-8")),
    ("utf-8-batch", lambda: Pipeline(framing=Delimited(delimiter=b"\0"), codecs="utf-8")),
    ("utf-8-batch", lambda: Pipeline(framing=Delimited(delimiter=b"\r\n"), codecs="utf-8")),
    ("raw-length-prefixed", lambda: Pipeline()),
    ("raw-length-prefixed", lambda: Pipeline(framing=LengthPrefix(max_frame_size=30))),
    (
        "raw-length-prefixed",
        lambda: Pipeline(framing=LengthPrefix(prefix_size=1, length_adjustment=-1)),
    ),
    (
        "msgpack-length-prefixed+msgspec",
        lambda: Pipeline(
            framing=LengthPrefix(max_frame_size=40), codecs="msgpack", messages=CLASSES
        ),
    ),
    (
        "msgpack-length-prefixed",
        lambda: Pipeline(
            framing=LengthPrefix(max_frame_size=40), codecs="msgpack", messages=CLASSES
        ),
    ),
    (
        "msgpack-length-prefixed",
        lambda: Pipeline(framing=LengthPrefix(length_adjustment=4), codecs="msgpack"),
    ),
    (
        "msgpack-stream+msgspec",
        lambda: Pipeline(
            framing=MsgpackStream(max_frame_size=40), codecs="msgpack", messages=CLASSES
        ),
    ),
    (
        "msgpack-stream",
        lambda: Pipeline(framing=MsgpackStream(max_frame_size=40), codecs="msgpack"),
    ),
    (
        "msgpack-framed+msgspec",
        lambda: Pipeline(framing="newline", codecs="msgpack", messages=CLASSES),
    ),
    ("msgpack-framed", lambda: Pipeline(framing="newline", codecs="msgpack", messages=CLASSES)),
]

floats = st.floats(allow_nan=False) | st.integers(-3, 3) | st.sampled_from([math.inf, "x", None])
encodable = st.one_of(
    st.binary(max_size=50),
    st.binary(max_size=5).map(bytearray),
    st.text(max_size=30),
    st.text(max_size=5).map(_Text),
    st.sampled_from(["line\n", "cr\r", "\ud800"]),
    # attrs does not check field types: an instance may hold anything.
    st.builds(Pos, floats, floats, st.integers(-(2**65), 2**65) | floats),
    st.builds(Named, st.text(max_size=40) | st.binary(max_size=3), st.integers(-5, 5)),
    st.builds(Trail, st.lists(st.integers(0, 1000), max_size=20)),
    st.lists(st.integers(), max_size=5),
    st.just(object()),
)


def _outcome(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except WirekitError as exc:
        return ("error", type(exc))


@pytest.mark.parametrize(
    ("name", "make"), ENCODE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ENCODE_CASES)]
)
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(encodable, max_size=6)
    | st.lists(st.builds(Pos, floats, floats, st.integers(-3, 3)), min_size=2, max_size=6)
    | st.lists(
        st.text(max_size=8) | st.sampled_from(["a\n", "b\r", "\0", "\r", "\ud800", "é" * 7]),
        min_size=1,
        max_size=6,
    )
)
def test_each_encoding_speed_up_agrees_with_the_reference(
    name: str, make: Callable[[], Pipeline], values: list[Any]
) -> None:
    fast, reference = built(make, name)
    with _fast.only(name):
        encoder = fast.encoder()
    with _fast.only():
        plain = reference.encoder()
    assert repr(encoder) == f"<Encoder path={name}>"
    assert plain.path == "reference"
    # Twice: a packer kept between calls starts clean after a failure.
    for _ in range(2):
        assert _outcome(encoder.encode_many, values) == _outcome(plain.encode_many, values)
        for value in values:
            assert _outcome(encoder.encode_many, [value]) == _outcome(plain.encode_many, [value])
    assert plain.text_join is None
    join = encoder.text_join
    if join is not None and values and all(type(value) is str for value in values):
        # For values known to be exactly str: the same bytes, or no answer.
        data = join(values)
        if data is not None:
            assert ("ok", data) == _outcome(plain.encode_many, values)


# A batch of lines longer than the limit: the joined text's checks against
# max_frame_size (a few searches, not a pass over every line's length).
@pytest.mark.parametrize("limit", [1, 4, 9, 30])
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.text(alphabet="xé→\r\n", max_size=12) | st.sampled_from(["", "x" * 9, "é" * 5]),
        min_size=1,
        max_size=40,
    )
)
def test_a_long_batch_of_lines_is_encoded_as_the_reference(limit: int, values: list[str]) -> None:
    fast, reference = built(
        lambda: Pipeline(framing=Delimited(max_frame_size=limit), codecs="utf-8"), "utf-8-batch"
    )
    with _fast.only("utf-8-batch"):
        encoder = fast.encoder()
    want = _outcome(reference.encode_many, values)
    assert _outcome(encoder.encode_many, values) == want
    assert encoder.text_join is not None
    data = encoder.text_join(values)
    assert data is None or ("ok", data) == want


@given(value=st.binary(max_size=60))
def test_a_plain_length_prefix_header_frames_raw_bytes_as_the_reference(value: bytes) -> None:
    for framing in (LengthPrefix(), LengthPrefix(prefix_size=2, max_frame_size=30)):
        encoder = Pipeline(framing=framing).encoder()
        assert encoder.header is not None
        if len(value) <= encoder.header_limit:
            assert encoder.header(len(value)) + value == Pipeline(framing=framing).encode(value)
        else:
            assert _outcome(Pipeline(framing=framing).encode, value)[0] == "error"


def test_no_header_for_a_stack_that_is_not_raw_bytes_under_a_plain_prefix() -> None:
    for pipeline in (
        Pipeline(framing=LengthPrefix(length_adjustment=-4)),
        Pipeline(codecs="utf-8"),
        Pipeline(framing="newline"),
    ):
        assert pipeline.encoder().header is None


# -- selection by what a part offers -------------------------------------------------


@attrs.frozen(kw_only=True)
class Tagged(LengthPrefix):
    """A subclass that keeps LengthPrefix's wire format: it keeps the speed-ups."""


@attrs.frozen(kw_only=True)
class Trailered(LengthPrefix):
    """A subclass that adds a byte after each frame: its encoding is its own."""

    def encode(self, frame: bytes) -> bytes:
        return super().encode(frame) + b"!"

    def encode_many(self, frames: Any) -> bytes:
        return b"".join(self.encode(frame) for frame in frames)


@attrs.frozen(kw_only=True)
class Loud(MsgpackCodec):
    """A codec subclass that changes encoding: fused paths must not bypass it."""

    def encode(self, value: Any) -> bytes:
        return super().encode(value) + b"\xc0"


def test_a_subclass_of_length_prefix_keeps_the_speed_ups() -> None:
    assert repr(Pipeline(framing=Tagged()).encoder()) == "<Encoder path=raw-length-prefixed>"
    assert Pipeline(framing=Tagged()).encoder().header is not None


def test_a_subclass_that_changes_the_wire_format_gets_the_reference() -> None:
    pipeline = Pipeline(framing=Trailered())
    encoder = pipeline.encoder()
    assert encoder.path == "reference"
    assert encoder.header is None
    assert encoder.encode_many([b"ab"]) == b"\x00\x00\x00\x02ab!"


def test_a_codec_subclass_that_changes_encode_is_not_bypassed() -> None:
    pipeline = Pipeline(codecs=Loud(), messages=[Named])
    assert pipeline.encoder().path == "reference"
    assert pipeline.decoder().path == "reference"
    assert pipeline.encoder().encode_many([Named("a")]).endswith(b"\xc0")


def test_only_refuses_a_name_that_is_no_speed_up() -> None:
    with pytest.raises(ValueError, match="unknown"), _fast.only("warp-drive"):
        pass
