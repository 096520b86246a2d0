"""FrameDecoder: the loop every framer shares, and the built-ins' fast feed against it.

Each built-in decoder overrides ``feed``, ``end`` and ``buffered`` with a
faster equivalent; its ``next_frame`` run through the base class's loop is
the reference. For any bytes, cut into chunks anywhere, both deliver the
same frames, hold the same number of bytes after each chunk, and raise the
same errors (class, offset, frames before them) at the same chunk.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import (
    Delimited,
    FrameDecoder,
    FrameTooLarge,
    Framing,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    LengthPrefix,
    MsgpackStream,
)
from framework.testing import chunkings, frame_payloads, garbage


class Reference:
    """A built-in decoder driven through FrameDecoder's own feed, end and buffered."""

    def __init__(self, framing: Framing) -> None:
        self.decoder = framing.decoder()

    def feed(self, data: bytes) -> list[bytes]:
        return FrameDecoder.feed(self.decoder, data)

    def end(self) -> None:
        FrameDecoder.end(self.decoder)

    @property
    def buffered(self) -> int:
        return FrameDecoder.buffered.fget(self.decoder)  # type: ignore[attr-defined,no-any-return]


def outcome(decoder: Any, chunks: list[bytes]) -> list[Any]:
    """What a decoder does with ``chunks``: frames, errors and what it holds, chunk by chunk."""
    seen: list[Any] = []
    for chunk in chunks:
        try:
            seen.append(("frames", decoder.feed(chunk)))
        except FramingError as exc:
            seen.append(("error", type(exc), exc.offset, exc.decoded, exc.recoverable))
            if not exc.recoverable:
                return seen
        seen.append(("buffered", decoder.buffered))
    try:
        decoder.end()
    except IncompleteFrame as exc:
        seen.append(("end", exc.buffered))
    return seen


FRAMINGS = [
    LengthPrefix(),
    LengthPrefix(max_frame_size=12),
    LengthPrefix(prefix_size=1, length_adjustment=-1),
    LengthPrefix(prefix_size=2, byteorder="little", length_adjustment=3, max_frame_size=20),
    LengthPrefix(prefix_size=8, max_frame_size=None),
    Delimited(),
    Delimited(max_frame_size=6),
    Delimited(delimiter=b"\r\n", max_frame_size=8),
    Delimited(delimiter=b"\0\0", strip_cr=False, max_frame_size=5),
    Delimited(max_frame_size=4, on_oversize="skip"),
    Delimited(delimiter=b";", max_frame_size=3, on_oversize="skip"),
    Delimited(delimiter=b"\r\n", max_frame_size=4, on_oversize="skip"),
    Delimited(delimiter=b"abab", max_frame_size=5, on_oversize="skip"),
    Delimited(delimiter=b"\r\n\r\n", max_frame_size=1, on_oversize="skip"),
    MsgpackStream(),
    MsgpackStream(max_frame_size=10),
]


def wire(framing: Framing) -> st.SearchStrategy[bytes]:
    valid = st.lists(frame_payloads(framing), max_size=5).map(framing.encode_many)
    return garbage(valid)


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_feed_agrees_with_next_frame_through_the_base_loop(
    framing: Framing, data: st.DataObject
) -> None:
    raw = data.draw(wire(framing), label="wire")
    chunks = data.draw(chunkings(raw), label="chunks")
    assert outcome(framing.decoder(), chunks) == outcome(Reference(framing), chunks)


# -- the base class's own rules, on a decoder that implements next_frame only -------


class _Pairs(FrameDecoder):
    """Two-byte frames; ``!`` is a bad byte; ``.`` is padding to skip."""

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
        if buffer[start] == ord("!"):
            raise InvalidFrame("a bad byte")
        if buffer[start] == ord("."):
            return None, start + 1
        if len(buffer) - start < 2:
            return None
        return bytes(buffer[start : start + 2]), start + 2


def test_every_frame_a_chunk_completes_comes_from_one_feed() -> None:
    decoder = _Pairs()
    assert decoder.feed(b"a") == []
    assert decoder.buffered == 1
    assert decoder.feed(b"bcd.ef") == [b"ab", b"cd", b"ef"]
    assert decoder.buffered == 0


def test_an_error_carries_the_frames_before_it_and_its_stream_offset() -> None:
    decoder = _Pairs()
    assert decoder.feed(b"ab") == [b"ab"]
    with pytest.raises(InvalidFrame) as caught:
        decoder.feed(b"cd!ef")
    assert caught.value.decoded == [b"cd"]
    assert caught.value.offset == 4
    assert decoder.buffered == 0


def test_after_an_error_the_decoder_refuses_input() -> None:
    decoder = _Pairs()
    with pytest.raises(InvalidFrame):
        decoder.feed(b"!")
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"ab")


def test_end_inside_a_frame_is_incomplete_frame() -> None:
    decoder = _Pairs()
    decoder.feed(b"abc")
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert (caught.value.buffered, caught.value.offset) == (1, 2)


def test_a_recoverable_error_lets_the_stream_go_on() -> None:
    class Skipping(_Pairs):
        def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
            if buffer[start] == ord("?"):
                error = FrameTooLarge("skip me", size=3, limit=2)
                error.recoverable = True
                buffer[start] = ord(".")  # padding now: skipped on the next call
                raise error
            return super().next_frame(buffer, start)

    decoder = Skipping()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"ab?cd")
    assert caught.value.decoded == [b"ab"]
    assert decoder.feed(b"") == [b"cd"]


def test_a_decoder_without_next_frame_says_what_it_lacks() -> None:
    class Empty(FrameDecoder):
        pass

    with pytest.raises(NotImplementedError, match="next_frame"):
        Empty().feed(b"x")


def test_a_next_frame_that_consumes_nothing_is_a_bug_not_a_hang() -> None:
    class Stuck(FrameDecoder):
        def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
            return b"", start

    with pytest.raises(RuntimeError, match="consumed nothing"):
        Stuck().feed(b"x")


# Reads of many lines, some a little over the limit: the fast feed checks a
# whole read against max_frame_size with a few searches instead of a pass
# over every line's length (see Delimited's decoder).
LONG_READS = [
    Delimited(max_frame_size=6),
    Delimited(max_frame_size=9, on_oversize="skip"),
    Delimited(max_frame_size=1),
    Delimited(delimiter=b"\r\n", max_frame_size=8),
    Delimited(delimiter=b"ab", max_frame_size=7, on_oversize="skip"),
]


@pytest.mark.parametrize("framing", LONG_READS, ids=repr)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_read_of_many_lines_near_the_limit_agrees_with_the_reference(
    framing: Delimited, data: st.DataObject
) -> None:
    limit = framing.max_frame_size
    assert limit is not None
    line = st.lists(st.sampled_from([b"x", b"a", b"b", b"\r", b"\n"]), max_size=limit + 2)
    lines = data.draw(st.lists(line.map(b"".join), min_size=1, max_size=40), label="lines")
    raw = framing.delimiter.join(lines) + data.draw(st.sampled_from([b"", framing.delimiter]))
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    for chunks in ([raw], [raw[:cut], raw[cut:]]):
        assert outcome(framing.decoder(), chunks) == outcome(Reference(framing), chunks)
