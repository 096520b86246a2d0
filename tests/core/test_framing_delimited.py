"""Delimited: frames separated by a delimiter, a newline by default.

The laws of the testing kit run first, over several option combinations; the
example tests after them pin the exact bytes of each limit and error.
"""

from __future__ import annotations

import pytest
from helpers_core import at_most, events, feed_all
from hypothesis import given
from hypothesis import strategies as st

from framework import (
    ConfigError,
    Delimited,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
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

KiB = 1024

FRAMINGS = [
    Delimited(),
    Delimited(delimiter=b"\r\n"),
    Delimited(delimiter=b"\x00"),
    Delimited(strip_cr=False),
    Delimited(max_frame_size=8),
    Delimited(max_frame_size=8, on_oversize="skip"),
    # Delimiters that overlap themselves: a frame may not end with their start.
    Delimited(delimiter=b"\x00\x00"),
    Delimited(delimiter=b"\r\n\r\n", max_frame_size=32),
]

# check_rejects_oversize builds lines a few times max_frame_size: small limits.
BOUNDED = [
    Delimited(max_frame_size=1),
    Delimited(max_frame_size=100),
    Delimited(max_frame_size=100, on_oversize="skip"),
    Delimited(delimiter=b"\r\n", max_frame_size=50),
    Delimited(delimiter=b"\x00", max_frame_size=20, on_oversize="skip"),
    Delimited(delimiter=b"\x00\x00", max_frame_size=20),
]

# Error behaviour, including recovery after a long line, under any chunking.
EVENTS = [
    Delimited(max_frame_size=5),
    Delimited(max_frame_size=5, on_oversize="skip"),
    Delimited(delimiter=b"\r\n", max_frame_size=5),
    Delimited(delimiter=b"\r\n", max_frame_size=5, on_oversize="skip"),
    Delimited(delimiter=b"\x00\x00", max_frame_size=5, on_oversize="skip"),
]


# -- the kit's laws ------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_frames_round_trip_however_the_stream_is_cut(framing: Delimited) -> None:
    check_framing_roundtrip(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_any_input_decodes_or_raises_a_framing_error(framing: Delimited) -> None:
    check_decode_total(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", BOUNDED, ids=repr)
def test_oversize_lines_are_rejected_before_they_are_buffered(framing: Delimited) -> None:
    check_rejects_oversize(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", EVENTS, ids=repr)
def test_frames_and_errors_do_not_depend_on_chunking(framing: Delimited) -> None:
    valid = st.lists(
        st.one_of(frame_payloads(framing), st.binary(min_size=6, max_size=12)), max_size=5
    ).map(lambda frames: b"".join(f + framing.delimiter for f in frames))

    @at_most(300)
    @given(garbage(valid), st.data())
    def same_events(wire: bytes, data: st.DataObject) -> None:
        chunks = data.draw(chunkings(wire))
        assert events(framing, chunks) == events(framing, [wire])

    same_events()


# -- reading -------------------------------------------------------------------------


def test_newline_is_the_default_delimiter() -> None:
    assert Delimited().encode(b"hello") == b"hello\n"
    assert feed_all(Delimited(), [b"hello\nworld\n"]) == [b"hello", b"world"]


def test_trailing_cr_is_stripped() -> None:
    assert feed_all(Delimited(), [b"hello\r\nworld\n"]) == [b"hello", b"world"]


def test_only_the_cr_just_before_the_newline_is_stripped() -> None:
    assert feed_all(Delimited(), [b"\ra\rb\r\r\n"]) == [b"\ra\rb\r"]


def test_cr_is_kept_when_strip_cr_is_off() -> None:
    assert feed_all(Delimited(strip_cr=False), [b"hello\r\n"]) == [b"hello\r"]


def test_cr_is_kept_with_a_custom_delimiter() -> None:
    assert feed_all(Delimited(delimiter=b"\x00"), [b"a\r\x00"]) == [b"a\r"]


def test_empty_lines_are_empty_frames() -> None:
    assert feed_all(Delimited(), [b"\n\r\n\n"]) == [b"", b"", b""]


@pytest.mark.parametrize(
    ("delimiter", "wire"),
    [(b"\r\n", b"a\r\nb\nc\r\n"), (b"\x00", b"a\x00b\nc\x00"), (b"--", b"a--b-c--")],
    ids=repr,
)
def test_custom_delimiters(delimiter: bytes, wire: bytes) -> None:
    framing = Delimited(delimiter=delimiter)
    frames = feed_all(framing, [wire])
    assert len(frames) == 2
    assert framing.encode_many(frames) == wire


def test_delimiter_split_across_chunks() -> None:
    framing = Delimited(delimiter=b"\r\n")
    decoder = framing.decoder()
    assert decoder.feed(b"one\r") == []
    assert decoder.feed(b"\ntwo\r") == [b"one"]
    assert decoder.feed(b"\n") == [b"two"]
    assert decoder.buffered == 0


def test_delimiter_given_as_text_is_encoded() -> None:
    # Config files are text: "\r\n" there means the bytes b"\r\n".
    assert Delimited(delimiter="\r\n").delimiter == b"\r\n"  # type: ignore[arg-type]


def test_read_one_byte_at_a_time() -> None:
    wire = b"first\r\n\nthird line\n"
    chunks = [wire[i : i + 1] for i in range(len(wire))]
    assert feed_all(Delimited(), chunks) == [b"first", b"", b"third line"]


def test_read_bytearray_and_memoryview_chunks() -> None:
    decoder = Delimited().decoder()
    assert decoder.feed(bytearray(b"ab\nc")) == [b"ab"]
    assert decoder.feed(memoryview(b"d\n")) == [b"cd"]


def test_megabyte_of_thousands_of_lines_decodes_in_one_feed() -> None:
    framing = Delimited()
    frames = [b"line %d " % i + b"x" * (i % 200) for i in range(10_000)]
    wire = framing.encode_many(frames)
    assert len(wire) > 1024 * KiB
    decoder = framing.decoder()
    assert decoder.feed(wire) == frames
    assert decoder.buffered == 0


def test_line_of_exactly_max_frame_size_is_accepted() -> None:
    assert feed_all(Delimited(max_frame_size=4), [b"abcd\n"]) == [b"abcd"]


@pytest.mark.parametrize("delimiter", [b"\r\n", b"\x00\x00", b"<end>"], ids=repr)
def test_line_of_exactly_max_frame_size_is_accepted_a_byte_at_a_time(delimiter: bytes) -> None:
    # The first bytes of the delimiter arrive past the limit but end a valid line.
    framing = Delimited(delimiter=delimiter, max_frame_size=4)
    wire = b"abcd" + delimiter + b"efgh" + delimiter
    chunks = [wire[i : i + 1] for i in range(len(wire))]
    assert feed_all(framing, chunks) == [b"abcd", b"efgh"]


def test_max_frame_size_counts_the_cr_before_the_newline() -> None:
    # The limit counts the bytes before the delimiter, as they arrive.
    with pytest.raises(FrameTooLarge):
        Delimited(max_frame_size=4).decoder().feed(b"abcd\r\n")


# -- limits and errors ---------------------------------------------------------------


def test_newline_free_megabyte_rejected_once_past_max_frame_size() -> None:
    framing = Delimited()  # 64 KiB
    limit = framing.max_frame_size
    assert limit == 64 * KiB
    decoder = framing.decoder()
    chunk = b"a" * (4 * KiB)
    fed = 0
    with pytest.raises(FrameTooLarge) as caught:  # noqa: PT012 - the loop is the scenario
        for _ in range(256):  # a megabyte
            fed += len(chunk)
            decoder.feed(chunk)
            assert decoder.buffered <= limit
    assert fed == limit + 4 * KiB  # the first chunk that went past the limit
    assert caught.value.limit == limit
    assert caught.value.size > limit
    assert caught.value.offset == 0
    assert decoder.buffered == 0


def test_oversize_line_in_one_chunk_is_rejected_with_its_offset() -> None:
    decoder = Delimited(max_frame_size=4).decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"ok\nmuch too long\nnext\n")
    error = caught.value
    assert (error.size, error.limit, error.offset) == (13, 4, 3)
    assert error.decoded == [b"ok"]


def test_close_after_an_oversize_line_refuses_further_input() -> None:
    decoder = Delimited(max_frame_size=4).decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"too long\n")
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"ok\n")


def test_skip_keeps_going_and_delivers_the_lines_after_the_long_one() -> None:
    decoder = Delimited(max_frame_size=4, on_oversize="skip").decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"ok\nmuch too long\nnext\nmore\n")
    assert caught.value.decoded == [b"ok"]
    assert decoder.feed(b"") == [b"next", b"more"]
    assert decoder.feed(b"last\n") == [b"last"]


def test_skip_discards_a_long_line_that_arrives_in_pieces() -> None:
    decoder = Delimited(max_frame_size=4, on_oversize="skip").decoder()
    assert decoder.feed(b"ok\nabc") == [b"ok"]
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"defg")
    assert caught.value.offset == 3
    assert decoder.buffered == 0
    assert decoder.feed(b"hijklmnop") == []  # still the long line: dropped, not held
    assert decoder.buffered == 0
    assert decoder.feed(b"qr\nnext\n") == [b"next"]


def test_skip_finds_a_delimiter_split_across_discarded_chunks() -> None:
    decoder = Delimited(delimiter=b"\r\n", max_frame_size=4, on_oversize="skip").decoder()
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"abcdefgh")
    assert decoder.feed(b"ij\r") == []
    assert decoder.feed(b"\nnext\r\n") == [b"next"]


def test_skip_raises_once_per_long_line() -> None:
    decoder = Delimited(max_frame_size=2, on_oversize="skip").decoder()
    errors = 0
    frames: list[bytes] = []
    for chunk in [b"a\nlong", b"er\nb\nlong", b"est\n", b"c\n"]:
        try:
            frames += decoder.feed(chunk)
        except FrameTooLarge as exc:
            errors += 1
            frames += exc.decoded
    assert errors == 2
    assert frames == [b"a", b"b", b"c"]


def test_end_with_a_partial_line_raises_incomplete_frame() -> None:
    decoder = Delimited().decoder()
    assert decoder.feed(b"whole\npart") == [b"whole"]
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert caught.value.buffered == 4
    assert caught.value.expected is None
    assert caught.value.offset == 6


def test_end_between_lines_is_quiet() -> None:
    decoder = Delimited().decoder()
    assert decoder.feed(b"whole\n") == [b"whole"]
    decoder.end()
    assert decoder.buffered == 0


def test_encode_rejects_a_frame_containing_the_delimiter() -> None:
    with pytest.raises(InvalidFrame, match="delimiter"):
        Delimited().encode(b"two\nlines")
    with pytest.raises(InvalidFrame, match="delimiter"):
        Delimited().encode_many([b"fine", b"two\nlines"])


def test_encode_rejects_a_trailing_cr_the_decoder_would_strip() -> None:
    with pytest.raises(InvalidFrame, match="\\\\r"):
        Delimited().encode(b"text\r")
    assert Delimited(strip_cr=False).encode(b"text\r") == b"text\r\n"


def test_encode_rejects_a_frame_ending_where_an_overlapping_delimiter_begins() -> None:
    framing = Delimited(delimiter=b"\x00\x00")
    with pytest.raises(InvalidFrame):
        framing.encode(b"a\x00")  # a\0 + \0\0 would read as a, then \0
    assert framing.encode(b"\x00a") == b"\x00a\x00\x00"


def test_encode_rejects_oversize_frame() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        Delimited(max_frame_size=4).encode(b"12345")
    assert (caught.value.size, caught.value.limit) == (5, 4)


def test_encode_many_equals_encode_frame_by_frame() -> None:
    framing = Delimited(delimiter=b"\r\n")
    frames = [b"a", b"", b"bcd"]
    assert framing.encode_many(frames) == b"".join(framing.encode(f) for f in frames)
    assert framing.encode_many([]) == b""


def _outcome(call: object, *args: object) -> object:
    try:
        return ("ok", call(*args))  # type: ignore[operator]
    except FramingError as exc:
        return ("error", type(exc), str(exc))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
@given(
    frames=st.lists(
        st.one_of(
            st.binary(max_size=10),
            # The bytes the checks are about, often: delimiters, '\r', and their parts.
            st.lists(st.sampled_from([b"x", b"\r", b"\n", b"\x00", b"\r\n"]), max_size=12).map(
                b"".join
            ),
        ),
        max_size=6,
    )
)
def test_encode_many_writes_and_refuses_as_encode_does_frame_by_frame(
    framing: Delimited, frames: list[bytes]
) -> None:
    # encode_many checks a batch on the joined bytes; the answer, and for a
    # bad batch the error (the first bad frame's), must be encode's.
    def one_by_one(frames: list[bytes]) -> bytes:
        return b"".join([framing.encode(frame) for frame in frames])

    assert _outcome(framing.encode_many, frames) == _outcome(one_by_one, frames)


@pytest.mark.parametrize("name", ["newline", "delimiter"])
def test_built_by_name_with_options(name: str) -> None:
    framing = make_framing(name, delimiter="\r\n", on_oversize="skip")
    assert framing == Delimited(delimiter=b"\r\n", on_oversize="skip")


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"delimiter": b""}, "delimiter"),
        ({"delimiter": 10}, "delimiter"),
        ({"on_oversize": "drop"}, "on_oversize"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"max_frame_size": 1.5}, "max_frame_size"),
    ],
    ids=repr,
)
def test_bad_options_are_config_errors_naming_the_option(
    options: dict[str, object], option: str
) -> None:
    with pytest.raises(ConfigError, match=option) as caught:
        Delimited(**options)  # type: ignore[arg-type]
    assert caught.value.option == option
