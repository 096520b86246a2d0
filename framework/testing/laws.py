"""Laws: property checks that any codec, framing or pipeline must obey.

Call them from your own tests; each runs a Hypothesis search and raises
``AssertionError`` with a minimal counterexample when the law is broken::

    def test_my_codec_round_trips():
        check_codec_roundtrip(MyCodec(), values=st.integers())

Each law takes ``settings=`` to tune the search (``max_examples`` and so on);
by default the active Hypothesis profile decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
import msgpack
from hypothesis import given
from hypothesis import settings as Settings  # noqa: N812 - a type, used as one
from hypothesis import strategies as st

from framework.core.codecs import Codec
from framework.core.errors import (
    ConfigError,
    DecodeError,
    FrameTooLarge,
    FramingError,
    InvalidFrame,
    WirekitError,
)
from framework.core.framing import Delimited, Framing, MsgpackStream
from framework.core.pipeline import Pipeline
from framework.testing.strategies import (
    chunkings,
    codec_values,
    frame_payloads,
    garbage,
    message_instances,
)

__all__ = [
    "BUFFER_SLACK",
    "check_codec_roundtrip",
    "check_decode_total",
    "check_framing_roundtrip",
    "check_message_roundtrip",
    "check_rejects_oversize",
]

#: Bytes a decoder may hold beyond ``max_frame_size``: room for the largest header.
BUFFER_SLACK = 16


def _run(law: Callable[..., None], settings: Settings | None) -> None:
    (settings(law) if settings is not None else law)()


def check_codec_roundtrip(
    codec: Codec, *, values: st.SearchStrategy[Any] | None = None, settings: Settings | None = None
) -> None:
    """``codec.decode(codec.encode(v)) == v`` for every value ``v`` it accepts."""
    strategy = values if values is not None else codec_values(codec)

    @given(strategy)
    def codec_roundtrip(value: Any) -> None:
        encoded = codec.encode(value)
        decoded = codec.decode(encoded)
        assert decoded == value, f"{codec!r} turned {value!r} into {decoded!r}"
        assert codec.encode(decoded) == encoded, "re-encoding the decoded value gave new bytes"

    _run(codec_roundtrip, settings)


def check_framing_roundtrip(
    framing: Framing,
    *,
    frames: st.SearchStrategy[bytes] | None = None,
    settings: Settings | None = None,
) -> None:
    """N encoded frames, split into chunks anywhere, decode to the same N frames."""
    payloads = frames if frames is not None else frame_payloads(framing)

    if not framing.streaming:

        @given(payloads)
        def datagram_roundtrip(frame: bytes) -> None:
            assert framing.decoder().feed(framing.encode(frame)) == [frame]

        _run(datagram_roundtrip, settings)
        return

    @given(st.lists(payloads, max_size=12), st.data())
    def framing_roundtrip(sent: list[bytes], data: st.DataObject) -> None:
        wire = framing.encode_many(sent)
        assert wire == b"".join(framing.encode(frame) for frame in sent), (
            "encode_many differs from encode applied frame by frame"
        )
        decoder = framing.decoder()
        received: list[bytes] = []
        for chunk in data.draw(chunkings(wire), label="chunks"):
            received += decoder.feed(chunk)
        decoder.end()
        assert received == sent
        assert decoder.buffered == 0

    _run(framing_roundtrip, settings)


def _valid_wire(target: Codec | Framing | Pipeline) -> st.SearchStrategy[bytes] | None:
    try:
        if isinstance(target, Framing):
            payloads = frame_payloads(target)
            return st.lists(payloads, max_size=4).map(target.encode_many)
        if isinstance(target, Codec):
            return codec_values(target).map(target.encode)
        if target.messages is not None and len(target.messages):
            return st.lists(st.one_of([message_instances(c) for c in target.messages])).map(
                target.encode_many
            )
        return st.lists(frame_payloads(target.framing), max_size=4).map(target.framing.encode_many)
    except ConfigError:
        # No strategy is known for this part: random bytes only.
        return None


def check_decode_total(
    target: Codec | Framing | Pipeline,
    *,
    inputs: st.SearchStrategy[bytes] | None = None,
    settings: Settings | None = None,
) -> None:
    """Any input either decodes or raises a wirekit error; buffers stay bounded.

    A codec may raise only :class:`DecodeError`. A framing or pipeline, fed the
    input in arbitrary chunks, may raise only wirekit errors, and never holds
    more than ``max_frame_size`` plus :data:`BUFFER_SLACK` bytes.
    """
    strategy = inputs if inputs is not None else garbage(_valid_wire(target))

    if isinstance(target, Codec):

        @given(strategy)
        def codec_total(data: bytes) -> None:
            with contextlib.suppress(DecodeError):
                target.decode(data)

        _run(codec_total, settings)
        return

    framing = target.framing if isinstance(target, Pipeline) else target
    limit = framing.max_frame_size

    @given(strategy, st.data())
    def stream_total(data: bytes, draw: st.DataObject) -> None:
        decoder: Any = target.decoder()
        for chunk in draw.draw(chunkings(data), label="chunks"):
            try:
                decoder.feed(chunk)
            except FramingError:
                return
            except DecodeError:
                pass  # one bad frame; the stream goes on
            if limit is not None:
                assert decoder.buffered <= limit + BUFFER_SLACK, (
                    f"decoder holds {decoder.buffered} bytes, over max_frame_size={limit}"
                )
        with contextlib.suppress(WirekitError):
            decoder.end()

    _run(stream_total, settings)


def _oversize_payload(framing: Framing, size: int) -> bytes:
    if isinstance(framing, MsgpackStream):
        return msgpack.packb(b"x" * size, use_bin_type=True)  # type: ignore[no-any-return]
    if isinstance(framing, Delimited):
        filler = b"x" if b"x" not in framing.delimiter else b"y"
        return filler * size
    return b"x" * size


def check_rejects_oversize(
    framing: Framing,
    *,
    oversize_frame: Callable[[int], bytes] | None = None,
    settings: Settings | None = None,
) -> None:
    """A frame over ``max_frame_size`` is rejected before it is buffered.

    The framing must be an attrs class with a ``max_frame_size`` field: the
    law builds the oversize wire bytes with a copy whose limit is lifted, then
    feeds them, split anywhere, to the original. ``oversize_frame(size)``
    returns a payload of about ``size`` bytes (defaults exist for wirekit's
    own framings). A framing that cannot describe any frame over its limit (a
    1-byte length prefix with ``max_frame_size`` of 255 or more) passes trivially.
    """
    limit = framing.max_frame_size
    if limit is None:
        raise ConfigError("check_rejects_oversize needs a framing with a max_frame_size")
    unbounded = attrs.evolve(framing, max_frame_size=None)  # type: ignore[misc]
    make = oversize_frame or (lambda size: _oversize_payload(framing, size))
    extra = st.integers(1, max(limit * 3, 64))

    def oversize_wire(size: int) -> bytes | None:
        # A framing may be unable to describe a frame that large (a 1-byte length
        # prefix stops at 255): fall back to smaller oversize frames, down to
        # limit + 1; if even that cannot be sent, no oversize frame can arrive.
        while True:
            try:
                return unbounded.encode(make(size))
            except InvalidFrame:
                if size == limit + 1:
                    return None
                size = limit + 1 + (size - limit - 1) // 2

    if oversize_wire(limit + 1) is None:
        return

    @given(extra, st.data())
    def rejects_oversize(over: int, data: st.DataObject) -> None:
        wire = oversize_wire(limit + over)
        assert wire is not None
        decoder = framing.decoder()
        # A datagram framing takes each feed as a whole datagram: do not split it.
        chunks = data.draw(chunkings(wire), label="chunks") if framing.streaming else [wire]
        for chunk in chunks:
            try:
                frames = decoder.feed(chunk)
            except FrameTooLarge as exc:
                assert exc.limit == limit  # noqa: PT017 - a law, not a pytest test
                return
            assert not frames, f"an oversize frame was delivered ({len(frames[0])} bytes)"
            assert decoder.buffered <= limit + BUFFER_SLACK, (
                f"decoder buffered {decoder.buffered} bytes of a frame over {limit}"
            )
        raise AssertionError(f"{len(wire)} bytes holding one oversize frame were never rejected")

    _run(rejects_oversize, settings)


def check_message_roundtrip(
    pipeline: Pipeline,
    *,
    classes: list[type] | None = None,
    settings: Settings | None = None,
) -> None:
    """Messages survive the whole pipeline: encode, frame, chunk, feed, decode."""
    registry = pipeline.messages
    if registry is None:
        raise ConfigError("check_message_roundtrip needs a pipeline with messages")
    chosen = classes if classes is not None else list(registry)
    instances = st.one_of([message_instances(cls) for cls in chosen])

    @given(st.lists(instances, max_size=8), st.data())
    def message_roundtrip(sent: list[Any], data: st.DataObject) -> None:
        wire = pipeline.encode_many(sent)
        decoder = pipeline.decoder()
        received: list[Any] = []
        for chunk in data.draw(chunkings(wire), label="chunks"):
            received += decoder.feed(chunk)
        received += decoder.end()
        assert received == sent
        for message in sent:
            assert pipeline.decode_datagram(pipeline.encode_datagram(message)) == [message]

    _run(message_roundtrip, settings)
