"""MsgpackStream: back-to-back msgpack values, each one a frame.

The laws of the testing kit run first; the example tests after them pin the
exact bytes of each limit and error.
"""

from __future__ import annotations

import msgpack
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
    MsgpackStream,
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


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


FRAMINGS = [MsgpackStream(), MsgpackStream(max_frame_size=64), MsgpackStream(max_frame_size=None)]


# -- the kit's laws ------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_values_round_trip_however_the_stream_is_cut(framing: MsgpackStream) -> None:
    check_framing_roundtrip(framing, settings=at_most(50))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_any_input_decodes_or_raises_a_framing_error(framing: MsgpackStream) -> None:
    check_decode_total(framing, settings=at_most(60))


@pytest.mark.parametrize("limit", [1, 16, 300], ids="max_frame_size={}".format)
def test_oversize_values_are_rejected_before_they_are_buffered(limit: int) -> None:
    check_rejects_oversize(MsgpackStream(max_frame_size=limit), settings=at_most(100))


@pytest.mark.parametrize("limit", [1, 48], ids="max_frame_size={}".format)
def test_oversize_arrays_are_rejected_before_they_are_buffered(limit: int) -> None:
    # The default oversize value is a bin, whose header says its size; an array
    # of small items does not, so the limit must hold while it arrives.
    check_rejects_oversize(
        MsgpackStream(max_frame_size=limit),
        oversize_frame=lambda size: pack([1] * size),
        settings=at_most(50),
    )


@pytest.mark.parametrize("framing", [MsgpackStream(max_frame_size=24), MsgpackStream()], ids=repr)
def test_frames_and_errors_do_not_depend_on_chunking(framing: MsgpackStream) -> None:
    overflow = st.sampled_from([b"\xc9\xff\xff\xff\xff\x05", b"\xc1", b"\xdb\xff\xff\xff\xff"])
    valid = st.lists(st.one_of(frame_payloads(framing), overflow), max_size=4).map(b"".join)

    @at_most(200)
    @given(garbage(valid), st.data())
    def same_events(wire: bytes, data: st.DataObject) -> None:
        chunks = data.draw(chunkings(wire))
        assert events(framing, chunks) == events(framing, [wire])

    same_events()


# -- reading -------------------------------------------------------------------------


def test_frames_are_the_raw_bytes_of_each_value() -> None:
    wire = b"\x93\x01\x02\x03" + b"\xa5hello" + b"\xc0" + b"\x81\xa1k\xc3"
    assert MsgpackStream().decoder().feed(wire) == [
        b"\x93\x01\x02\x03",
        b"\xa5hello",
        b"\xc0",
        b"\x81\xa1k\xc3",
    ]


def test_nothing_is_added_on_the_wire() -> None:
    frame = pack({"method": "ping", "args": [1, 2]})
    assert MsgpackStream().encode(frame) == frame
    assert MsgpackStream().encode_many([frame, b"\x01"]) == frame + b"\x01"


def test_read_a_value_split_across_chunks() -> None:
    decoder = MsgpackStream().decoder()
    assert decoder.feed(b"\x93\x01") == []
    assert decoder.buffered == 2
    assert decoder.feed(b"\x02\x03\xa2h") == [b"\x93\x01\x02\x03"]
    assert decoder.buffered == 2
    assert decoder.feed(b"i") == [b"\xa2hi"]
    assert decoder.buffered == 0


def test_read_one_byte_at_a_time() -> None:
    values = [[1, 2, 3], "hello", {"a": b"\x00\xff"}, 2**64 - 1, -1.5, None]
    wire = b"".join(pack(value) for value in values)
    frames = feed_all(MsgpackStream(), [wire[i : i + 1] for i in range(len(wire))])
    assert [msgpack.unpackb(frame) for frame in frames] == values


def test_read_bytearray_and_memoryview_chunks() -> None:
    decoder = MsgpackStream().decoder()
    assert decoder.feed(bytearray(b"\x01\x92")) == [b"\x01"]
    assert decoder.feed(memoryview(b"\x02\x03")) == [b"\x92\x02\x03"]


def test_megabyte_of_thousands_of_values_decodes_in_one_feed() -> None:
    values = [{"seq": i, "data": b"x" * (i % 300)} for i in range(8000)]
    frames = [pack(value) for value in values]
    wire = b"".join(frames)
    assert len(wire) > 1024 * 1024
    decoder = MsgpackStream().decoder()
    assert decoder.feed(wire) == frames
    assert decoder.buffered == 0


def test_deep_but_allowed_nesting_is_one_frame() -> None:
    value = b"\x91" * 100 + b"\x90"
    assert MsgpackStream().decoder().feed(value) == [value]


def test_bytes_that_look_like_a_huge_ext_header_inside_a_bin_are_data() -> None:
    frame = pack(b"\xc9\xff\xff\xff\xff")
    assert MsgpackStream().decoder().feed(frame + b"\x01") == [frame, b"\x01"]


# -- limits and errors ---------------------------------------------------------------


def test_malformed_byte_is_an_invalid_frame() -> None:
    decoder = MsgpackStream().decoder()
    with pytest.raises(InvalidFrame) as caught:
        decoder.feed(b"\x01\x02\xc1")  # 0xc1 is the one byte msgpack never uses
    assert caught.value.offset == 2
    assert caught.value.decoded == [b"\x01", b"\x02"]


def test_malformed_byte_inside_a_value_names_where_the_value_starts() -> None:
    decoder = MsgpackStream().decoder()
    assert decoder.feed(b"\x01\x93\x01") == [b"\x01"]
    with pytest.raises(InvalidFrame) as caught:
        decoder.feed(b"\xc1")
    assert caught.value.offset == 1


def test_nesting_deeper_than_1024_levels_is_an_invalid_frame() -> None:
    decoder = MsgpackStream().decoder()
    with pytest.raises(InvalidFrame, match="1024"):
        decoder.feed(b"\x91" * 1100 + b"\x90")


@pytest.mark.parametrize(
    "header",
    [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x05"],
    ids=["str32", "bin32", "ext32"],
)
def test_str_bin_ext_header_announcing_4_gib_is_rejected_from_its_header(header: bytes) -> None:
    decoder = MsgpackStream().decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(header)
    assert caught.value.size >= 2**32 - 1
    assert caught.value.limit == 8 * 1024 * 1024
    assert caught.value.offset == 0
    assert decoder.buffered == 0


def test_huge_header_split_across_chunks_is_rejected_once_its_length_arrives() -> None:
    decoder = MsgpackStream(max_frame_size=1000).decoder()
    assert decoder.feed(b"\xc6\x00\x00") == []
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"\x10\x00")  # 4096 bytes announced
    assert caught.value.size == 5 + 4096


def test_huge_ext_inside_an_array_is_an_invalid_frame() -> None:
    # msgpack's own skip() takes this for a complete value; the framer must not.
    decoder = MsgpackStream().decoder()
    with pytest.raises(InvalidFrame) as caught:
        decoder.feed(b"\x01\x92\xc9\xff\xff\xff\xff\x05\x01")
    assert caught.value.offset == 1
    assert caught.value.decoded == [b"\x01"]


def test_array_of_many_small_items_is_rejected_once_past_the_limit() -> None:
    limit = 1024
    decoder = MsgpackStream(max_frame_size=limit).decoder()
    decoder.feed(b"\xdd\xff\xff\xff\xff")  # an array announcing 2**32 - 1 items
    with pytest.raises(FrameTooLarge) as caught:  # noqa: PT012 - the loop is the scenario
        for _ in range(2 * limit):
            decoder.feed(b"\x01")
            assert decoder.buffered <= limit
    assert caught.value.limit == limit
    assert caught.value.offset == 0


def test_failed_decoder_refuses_further_input() -> None:
    decoder = MsgpackStream().decoder()
    with pytest.raises(InvalidFrame):
        decoder.feed(b"\xc1")
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"\x01")


def test_end_inside_a_value_raises_incomplete_frame() -> None:
    decoder = MsgpackStream().decoder()
    assert decoder.feed(b"\x01\xc4\x10abc") == [b"\x01"]
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert caught.value.buffered == 5
    assert caught.value.expected == 18  # a bin 8 header (2 bytes) and 16 bytes
    assert caught.value.offset == 1


def test_end_between_values_is_quiet() -> None:
    decoder = MsgpackStream().decoder()
    assert decoder.feed(b"\x01") == [b"\x01"]
    decoder.end()


def test_encode_rejects_bytes_that_are_not_one_value() -> None:
    with pytest.raises(InvalidFrame):
        MsgpackStream().encode(b"\xc1")
    with pytest.raises(InvalidFrame):
        MsgpackStream().encode(b"\x01\x02")  # two values
    with pytest.raises(InvalidFrame):
        MsgpackStream().encode(b"\x92\x01")  # a part of one


def test_encode_rejects_oversize_frame() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        MsgpackStream(max_frame_size=4).encode(pack("hello"))
    assert (caught.value.size, caught.value.limit) == (6, 4)


def test_built_by_name_with_options() -> None:
    assert make_framing("msgpack-stream", max_frame_size=1024) == MsgpackStream(max_frame_size=1024)


def test_bad_limit_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_frame_size") as caught:
        MsgpackStream(max_frame_size=-5)
    assert caught.value.option == "max_frame_size"


@pytest.mark.parametrize(
    "wire",
    [
        b"\x81\x90\x00",  # {[]: 0}: a map keyed by an array (no Python dict can hold it)
        b"\x81\x80\x00",  # {{}: 0}
        b"\xd4\xfe\x00",  # fixext 1 of a reserved type
    ],
)
def test_every_frame_the_decoder_delivers_can_be_encoded_again(wire: bytes) -> None:
    framing = MsgpackStream()
    [frame] = framing.decoder().feed(wire)
    assert framing.encode(frame) == wire


@pytest.mark.parametrize("frame", [b"", b"\x92\x01", b"\x01\x02", b"\xc1"])
def test_encode_refuses_anything_but_exactly_one_value(frame: bytes) -> None:
    with pytest.raises(InvalidFrame, match="one msgpack value"):
        MsgpackStream().encode(frame)
