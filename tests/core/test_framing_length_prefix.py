"""LengthPrefix: a fixed-width unsigned length, then the payload.

The laws of the testing kit run first, over several option combinations; the
example tests after them pin the exact bytes of each limit and error.
"""

from __future__ import annotations

import struct

import pytest
from helpers_core import at_most, events, feed_all
from hypothesis import given
from hypothesis import strategies as st

from framework import (
    ConfigError,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    LengthPrefix,
    make_framing,
)
from framework.testing import (
    check_decode_total,
    check_framing_roundtrip,
    check_rejects_oversize,
    chunkings,
    frame_payloads,
    garbage,
)

MiB = 1024 * 1024

# Every prefix width in both byte orders, with and without the header counted
# in the length, plus a tight limit: the laws hold for all of them.
FRAMINGS = [
    LengthPrefix(),
    LengthPrefix(prefix_size=1),
    LengthPrefix(prefix_size=2, byteorder="little"),
    LengthPrefix(prefix_size=8),
    LengthPrefix(prefix_size=1, length_adjustment=-1),
    LengthPrefix(prefix_size=2, length_adjustment=-2),
    LengthPrefix(prefix_size=4, byteorder="little", length_adjustment=-4),
    LengthPrefix(prefix_size=8, byteorder="little", length_adjustment=-8),
    LengthPrefix(length_adjustment=3),
    LengthPrefix(max_frame_size=16),
]

# check_rejects_oversize builds frames a few times max_frame_size: small limits.
BOUNDED = [
    LengthPrefix(prefix_size=1, max_frame_size=100),
    LengthPrefix(prefix_size=1, length_adjustment=-1, max_frame_size=200),
    LengthPrefix(prefix_size=2, byteorder="little", max_frame_size=300),
    LengthPrefix(prefix_size=4, length_adjustment=-4, max_frame_size=64),
    LengthPrefix(prefix_size=8, byteorder="little", max_frame_size=1000),
    LengthPrefix(max_frame_size=1),
]


def header(value: int, size: int = 4, order: str = ">") -> bytes:
    return struct.pack(order + {1: "B", 2: "H", 4: "I", 8: "Q"}[size], value)


# -- the kit's laws ------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_frames_round_trip_however_the_stream_is_cut(framing: LengthPrefix) -> None:
    check_framing_roundtrip(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_any_input_decodes_or_raises_a_framing_error(framing: LengthPrefix) -> None:
    check_decode_total(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", BOUNDED, ids=repr)
def test_oversize_frames_are_rejected_before_they_are_buffered(framing: LengthPrefix) -> None:
    check_rejects_oversize(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", [LengthPrefix(max_frame_size=24), BOUNDED[0]], ids=repr)
def test_frames_and_errors_do_not_depend_on_chunking(framing: LengthPrefix) -> None:
    valid = st.lists(frame_payloads(framing), max_size=4).map(framing.encode_many)

    @at_most(200)
    @given(garbage(valid), st.data())
    def same_events(wire: bytes, data: st.DataObject) -> None:
        chunks = data.draw(chunkings(wire))
        assert events(framing, chunks) == events(framing, [wire])

    same_events()


# -- the wire format -----------------------------------------------------------------


def test_default_is_four_byte_big_endian_payload_length() -> None:
    assert LengthPrefix().encode(b"hello") == b"\x00\x00\x00\x05hello"


@pytest.mark.parametrize(
    ("options", "wire"),
    [
        ({"prefix_size": 1}, b"\x03abc"),
        ({"prefix_size": 2}, b"\x00\x03abc"),
        ({"prefix_size": 2, "byteorder": "little"}, b"\x03\x00abc"),
        ({"prefix_size": 4, "byteorder": "little"}, b"\x03\x00\x00\x00abc"),
        ({"prefix_size": 8}, b"\x00\x00\x00\x00\x00\x00\x00\x03abc"),
        ({"prefix_size": 2, "length_adjustment": -2}, b"\x00\x05abc"),
        ({"prefix_size": 4, "length_adjustment": -4}, b"\x00\x00\x00\x07abc"),
        ({"prefix_size": 1, "length_adjustment": 1}, b"\x02abc"),
    ],
    ids=repr,
)
def test_wire_bytes_for_each_option(options: dict[str, object], wire: bytes) -> None:
    framing = LengthPrefix(**options)  # type: ignore[arg-type]
    assert framing.encode(b"abc") == wire
    assert feed_all(framing, [wire]) == [b"abc"]


def test_empty_frame_is_a_bare_header() -> None:
    framing = LengthPrefix()
    assert framing.encode(b"") == b"\x00\x00\x00\x00"
    assert feed_all(framing, [b"\x00\x00\x00\x00" * 3]) == [b"", b"", b""]


def test_encode_many_equals_encode_frame_by_frame() -> None:
    framing = LengthPrefix(prefix_size=2, byteorder="little")
    frames = [b"a", b"", b"bcd"]
    assert framing.encode_many(frames) == b"".join(framing.encode(f) for f in frames)
    assert framing.encode_many([]) == b""


def test_built_by_name_with_options() -> None:
    framing = make_framing("length-prefix", prefix_size=2, byteorder="little")
    assert framing == LengthPrefix(prefix_size=2, byteorder="little")


# -- reading -------------------------------------------------------------------------


def test_read_incomplete_header_waits_for_more() -> None:
    decoder = LengthPrefix().decoder()
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.buffered == 2
    assert decoder.feed(b"\x00\x02hi") == [b"hi"]
    assert decoder.buffered == 0


def test_read_incomplete_payload_waits_for_more() -> None:
    decoder = LengthPrefix().decoder()
    assert decoder.feed(b"\x00\x00\x00\x05he") == []
    assert decoder.feed(b"ll") == []
    assert decoder.feed(b"o\x00\x00") == [b"hello"]
    assert decoder.buffered == 2


def test_read_several_frames_from_one_chunk() -> None:
    wire = b"\x00\x00\x00\x01a\x00\x00\x00\x02bc\x00\x00\x00\x00"
    assert LengthPrefix().decoder().feed(wire) == [b"a", b"bc", b""]


def test_read_one_byte_at_a_time() -> None:
    framing = LengthPrefix(prefix_size=2)
    frames = [b"first", b"", b"x" * 300]
    wire = framing.encode_many(frames)
    assert feed_all(framing, [wire[i : i + 1] for i in range(len(wire))]) == frames


def test_read_bytearray_and_memoryview_chunks() -> None:
    decoder = LengthPrefix().decoder()
    assert decoder.feed(bytearray(b"\x00\x00\x00\x02ab\x00")) == [b"ab"]
    assert decoder.feed(memoryview(b"\x00\x00\x01c")) == [b"c"]


def test_megabyte_of_thousands_of_frames_decodes_in_one_feed() -> None:
    framing = LengthPrefix()
    frames = [bytes([i % 256]) * (i % 300) for i in range(7000)]
    wire = framing.encode_many(frames)
    assert len(wire) > MiB
    decoder = framing.decoder()
    assert decoder.feed(wire) == frames
    assert decoder.buffered == 0


def test_large_frame_in_many_chunks_is_held_as_it_arrives() -> None:
    # A 1 MiB frame arriving in 64 KiB reads (what a socket hands over), the
    # next frame starting inside the chunk that completes it.
    framing = LengthPrefix()
    big = bytes(range(256)) * 4096
    wire = framing.encode_many([big, b"next", b"x" * 10])
    decoder = framing.decoder()
    got: list[bytes] = []
    for start in range(0, len(wire), 65536):
        got += decoder.feed(wire[start : start + 65536])
        if not got:
            assert decoder.buffered == min(start + 65536, len(wire))
    assert got == [big, b"next", b"x" * 10]
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=3000), max_size=5), st.data())
def test_frames_survive_any_cut_of_the_stream(frames: list[bytes], data: st.DataObject) -> None:
    framing = LengthPrefix(prefix_size=2)
    wire = framing.encode_many(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = framing.decoder()
    got: list[bytes] = []
    fed = 0
    for piece in pieces:
        got += decoder.feed(piece)
        fed += len(piece)
        assert decoder.buffered == fed - len(framing.encode_many(got))
    assert got == frames


def test_frame_of_exactly_max_frame_size_is_accepted() -> None:
    framing = LengthPrefix(max_frame_size=8)
    assert feed_all(framing, [header(8) + b"12345678"]) == [b"12345678"]


def test_decoders_of_one_framing_are_independent() -> None:
    framing = LengthPrefix()
    first, second = framing.decoder(), framing.decoder()
    assert first.feed(b"\x00\x00\x00\x03a") == []
    assert second.feed(b"\x00\x00\x00\x01z") == [b"z"]
    assert first.feed(b"bc") == [b"abc"]


def test_unbounded_when_max_frame_size_is_none() -> None:
    framing = LengthPrefix(max_frame_size=None)
    big = b"x" * (9 * MiB)
    assert framing.decoder().feed(framing.encode(big)) == [big]


# -- limits and errors ---------------------------------------------------------------


def test_oversize_header_rejected_before_payload() -> None:
    decoder = LengthPrefix().decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\xff\xff\xff\xff")  # 4 GiB announced; no payload sent at all
    error = caught.value
    assert error.size == 2**32 - 1
    assert error.limit == 8 * MiB
    assert error.offset == 0
    assert decoder.buffered == 0


def test_oversize_header_offset_counts_the_stream_before_it() -> None:
    decoder = LengthPrefix(max_frame_size=10).decoder()
    assert decoder.feed(b"\x00\x00\x00\x02ab") == [b"ab"]
    decoder.feed(b"\x00")
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\x00\x00\x0b")
    assert (caught.value.size, caught.value.limit, caught.value.offset) == (11, 10, 6)


def test_one_byte_over_the_limit_is_rejected_from_the_header() -> None:
    decoder = LengthPrefix(prefix_size=2, max_frame_size=8).decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\x00\x09")
    assert (caught.value.size, caught.value.limit) == (9, 8)


@pytest.mark.parametrize(
    ("wire", "hint"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "TLS"),
        (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "HTTP"),
        (b"POST /api HTTP/1.1\r\n", "HTTP"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH"),
    ],
    ids=["tls-client-hello", "http-get", "http-post", "ssh-banner"],
)
def test_foreign_protocol_is_named_in_the_error(wire: bytes, hint: str) -> None:
    with pytest.raises(FrameTooLarge, match=rf"looks like .*{hint}") as caught:
        LengthPrefix().decoder().feed(wire)
    assert caught.value.offset == 0


def test_plain_oversize_length_gets_no_foreign_protocol_hint() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        LengthPrefix().decoder().feed(b"\x7f\x00\x00\x00")
    assert "looks like" not in str(caught.value)


def test_negative_length_after_adjustment_is_an_invalid_frame() -> None:
    framing = LengthPrefix(length_adjustment=-4)  # the length counts its own header
    decoder = framing.decoder()
    with pytest.raises(InvalidFrame) as caught:
        decoder.feed(b"\x00\x00\x00\x05a" + b"\x00\x00\x00\x03")
    assert caught.value.offset == 5
    assert caught.value.decoded == [b"a"]


def test_error_decoded_holds_frames_completed_before_it_in_the_same_feed() -> None:
    decoder = LengthPrefix(max_frame_size=100).decoder()
    wire = b"\x00\x00\x00\x01a\x00\x00\x00\x02bc" + b"\x00\x00\x10\x00"
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(wire)
    assert caught.value.decoded == [b"a", b"bc"]
    assert caught.value.offset == 11


def test_failed_decoder_refuses_further_input() -> None:
    decoder = LengthPrefix(max_frame_size=4).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\x00\x00\x00\x05")
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"\x00\x00\x00\x01a")
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"")


def test_end_inside_a_payload_raises_incomplete_frame() -> None:
    decoder = LengthPrefix().decoder()
    decoder.feed(b"\x00\x00\x00\x02ab\x00\x00\x00\x05he")
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert caught.value.buffered == 6  # header and two payload bytes
    assert caught.value.expected == 9  # header and five payload bytes
    assert caught.value.offset == 6


def test_end_inside_a_header_raises_incomplete_frame_without_expected() -> None:
    decoder = LengthPrefix().decoder()
    decoder.feed(b"\x00\x00")
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert caught.value.buffered == 2
    assert caught.value.expected is None


def test_end_between_frames_is_quiet() -> None:
    decoder = LengthPrefix().decoder()
    assert decoder.feed(b"\x00\x00\x00\x01a") == [b"a"]
    decoder.end()
    assert decoder.buffered == 0


def test_encode_rejects_oversize_frame() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        LengthPrefix(max_frame_size=4).encode(b"12345")
    assert (caught.value.size, caught.value.limit) == (5, 4)


@pytest.mark.parametrize(
    ("framing", "size"),
    [
        (LengthPrefix(prefix_size=1), 256),
        (LengthPrefix(prefix_size=1, length_adjustment=-1), 255),
        (LengthPrefix(prefix_size=2), 65536),
    ],
    ids=repr,
)
def test_encode_rejects_frame_too_large_for_the_prefix(framing: LengthPrefix, size: int) -> None:
    largest = framing.encode(b"x" * (size - 1))
    assert feed_all(framing, [largest]) == [b"x" * (size - 1)]
    with pytest.raises(InvalidFrame, match="cannot be described"):
        framing.encode(b"x" * size)


def test_encode_rejects_frame_shorter_than_a_positive_adjustment() -> None:
    with pytest.raises(InvalidFrame):
        LengthPrefix(length_adjustment=3).encode(b"ab")


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"prefix_size": 3}, "prefix_size"),
        ({"byteorder": "middle"}, "byteorder"),
        ({"length_adjustment": 1.5}, "length_adjustment"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"max_frame_size": -1}, "max_frame_size"),
        ({"max_frame_size": True}, "max_frame_size"),
        ({"max_frame_size": "8MiB"}, "max_frame_size"),
    ],
    ids=repr,
)
def test_bad_options_are_config_errors_naming_the_option(
    options: dict[str, object], option: str
) -> None:
    with pytest.raises(ConfigError, match=option) as caught:
        LengthPrefix(**options)  # type: ignore[arg-type]
    assert caught.value.option == option


def test_a_tls_alert_read_as_a_length_header_is_named() -> None:
    # A TLS server answers a plaintext client with an alert record.
    with pytest.raises(FrameTooLarge, match="TLS alert"):
        LengthPrefix().decoder().feed(b"\x15\x03\x03\x00\x02\x02\x32")
