"""Pipeline and Decoder: framing + codec stack, bytes in and values out, and back."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import msgpack
import pytest
from helpers_core import at_most
from hypothesis import given
from hypothesis import strategies as st

from framework import (
    BytesCodec,
    Codec,
    ConfigError,
    Datagram,
    DecodeError,
    Delimited,
    EncodeError,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    JsonCodec,
    LengthPrefix,
    MessageRegistry,
    MsgpackCodec,
    MsgpackStream,
    Pipeline,
    Utf8Codec,
    WirekitError,
    message,
)
from framework.testing import check_decode_total, msgpack_values

LP = LengthPrefix()


def framed(*payloads: bytes) -> bytes:
    """Length-prefixed frames holding ``payloads`` as they are."""
    return LP.encode_many(payloads)


def mp(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


BAD = b"\xc1"  # a frame the msgpack codec refuses


def msgpack_pipeline(**options: Any) -> Pipeline:
    return Pipeline(framing=LengthPrefix(), codecs="msgpack", **options)


@attrs.frozen
class Tag(Codec):
    """Appends its label on encode and removes it on decode, noting each call."""

    name: ClassVar[str] = "tag"
    label: bytes
    log: list[str] = attrs.field(factory=list, eq=False)

    def encode(self, value: Any) -> bytes:
        self.log.append(f"encode {self.label.decode()}")
        return bytes(value) + self.label

    def decode(self, data: Any) -> bytes:
        self.log.append(f"decode {self.label.decode()}")
        if not bytes(data).endswith(self.label):
            raise DecodeError(f"no {self.label!r} at the end", codec=self.name)
        return bytes(data)[: -len(self.label)]


@attrs.frozen
class Buggy(Codec):
    """A codec with a bug: it raises ValueError, not a wirekit error."""

    name: ClassVar[str] = "buggy"

    def encode(self, value: Any) -> bytes:
        if value == b"boom":
            raise ValueError("encode bug")
        return bytes(value)

    def decode(self, data: Any) -> bytes:
        if bytes(data) == b"boom":
            raise ValueError("decode bug")
        return bytes(data)


# -- construction --------------------------------------------------------------------


def test_parts_may_be_given_by_name() -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="msgpack")
    assert pipeline.framing == LengthPrefix()
    assert pipeline.codecs == (MsgpackCodec(),)
    stacked = Pipeline(framing="newline", codecs=["utf-8"])
    assert stacked.framing == Delimited()
    assert stacked.codecs == (Utf8Codec(),)


def test_defaults_are_length_prefix_and_bytes() -> None:
    pipeline = Pipeline()
    assert pipeline.framing == LengthPrefix()
    assert pipeline.codecs == (BytesCodec(),)
    assert pipeline.encode(b"hi") == b"\x00\x00\x00\x02hi"


def test_messages_may_be_given_as_classes() -> None:
    @attrs.frozen
    class Ping:
        seq: int

    registry = MessageRegistry()
    registry.register(Ping, "ping")
    assert Pipeline(codecs="json", messages=registry).decode_frame(b'{"type":"ping","seq":1}') == (
        Ping(1)
    )


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"framing": "carrier-pigeon"}, "framing"),
        ({"framing": 42}, "framing"),
        ({"codecs": ["msgpack", "cbor"]}, "codec"),
        ({"codecs": [MsgpackCodec(), 42]}, "codecs"),
        ({"datagram": "datagram"}, "datagram"),
    ],
    ids=repr,
)
def test_bad_parts_are_config_errors(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Pipeline(**options)
    assert caught.value.option == option


# -- ordering ------------------------------------------------------------------------


def test_decode_runs_the_stack_front_to_back_and_encode_back_to_front() -> None:
    log: list[str] = []
    near, far = Tag(b"<near>", log), Tag(b"<far>", log)  # near is next to the wire
    pipeline = Pipeline(framing=LengthPrefix(), codecs=[near, far])

    frame = pipeline.encode_frame(b"value")
    assert frame == b"value<far><near>"
    assert log == ["encode <far>", "encode <near>"]

    log.clear()
    assert pipeline.decoder().feed(LP.encode(frame)) == [b"value"]
    assert log == ["decode <near>", "decode <far>"]


def test_stacked_builtin_codecs_hand_values_along() -> None:
    @attrs.frozen
    class Upper(Codec):
        name: ClassVar[str] = "upper"

        def decode(self, data: Any) -> str:
            return str(data).upper()

        def encode(self, value: Any) -> str:
            return str(value).lower()

    pipeline = Pipeline(framing="newline", codecs=[Utf8Codec(), Upper()])
    assert pipeline.encode("HELLO") == b"hello\n"
    assert pipeline.decoder().feed(b"shout\n") == ["SHOUT"]


# -- the stream decoder --------------------------------------------------------------


def test_one_pipeline_serves_many_independent_decoders() -> None:
    pipeline = msgpack_pipeline()
    wire_a, wire_b = pipeline.encode_many(["a1", "a2"]), pipeline.encode_many([1, 2])
    first, second = pipeline.decoder(), pipeline.decoder()
    assert first.feed(wire_a[:5]) == []
    assert second.feed(wire_b[:7]) == [1]
    assert first.feed(wire_a[5:]) == ["a1", "a2"]
    assert second.feed(wire_b[7:]) == [2]
    assert (first.buffered, second.buffered) == (0, 0)


def test_every_value_a_chunk_completes_comes_from_one_feed() -> None:
    pipeline = msgpack_pipeline()
    values = [{"seq": i} for i in range(5000)]
    decoder = pipeline.decoder()
    assert decoder.feed(pipeline.encode_many(values)) == values


def test_decode_error_keeps_the_frames_after_it_for_the_next_feed() -> None:
    decoder = msgpack_pipeline().decoder()
    with pytest.raises(DecodeError) as caught:
        decoder.feed(framed(mp(1), BAD, mp(2), mp(3)))
    assert caught.value.decoded == [1]
    assert decoder.feed(b"") == [2, 3]
    assert decoder.feed(framed(mp(4))) == [4]


def test_several_bad_frames_raise_one_at_a_time() -> None:
    decoder = msgpack_pipeline().decoder()
    with pytest.raises(DecodeError) as first:
        decoder.feed(framed(BAD, mp(1), BAD, mp(2)))
    assert first.value.decoded == []
    with pytest.raises(DecodeError) as second:
        decoder.feed(b"")
    assert second.value.decoded == [1]
    assert decoder.feed(b"") == [2]


def test_frames_fed_while_a_bad_frame_is_pending_are_kept_in_order() -> None:
    decoder = msgpack_pipeline().decoder()
    with pytest.raises(DecodeError):
        decoder.feed(framed(BAD, mp(1)))
    assert decoder.feed(framed(mp(2))) == [1, 2]


def test_framing_error_ends_the_stream_after_the_values_before_it() -> None:
    decoder = Pipeline(framing=LengthPrefix(max_frame_size=16), codecs="msgpack").decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(framed(mp(1), mp(2)) + b"\x00\x00\x01\x00")
    assert caught.value.decoded == [1, 2]
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(framed(mp(3)))
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"")


def test_bad_frame_before_a_framing_error_is_reported_first() -> None:
    decoder = Pipeline(framing=LengthPrefix(max_frame_size=16), codecs="msgpack").decoder()
    with pytest.raises(DecodeError) as bad_frame:
        decoder.feed(framed(mp(1), BAD, mp(2)) + b"\xff\xff\xff\xff")
    assert bad_frame.value.decoded == [1]
    with pytest.raises(FrameTooLarge) as broken:
        decoder.feed(b"")
    assert broken.value.decoded == [2]


def test_end_raises_a_framing_error_not_yet_reported() -> None:
    decoder = Pipeline(framing=LengthPrefix(max_frame_size=16), codecs="msgpack").decoder()
    with pytest.raises(DecodeError):
        decoder.feed(framed(BAD) + b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        decoder.end()


def test_end_returns_values_held_after_a_bad_frame() -> None:
    decoder = msgpack_pipeline().decoder()
    with pytest.raises(DecodeError):
        decoder.feed(framed(BAD, mp("kept")))
    assert decoder.end() == ["kept"]


def test_end_inside_a_frame_raises_incomplete_frame() -> None:
    decoder = msgpack_pipeline().decoder()
    assert decoder.feed(framed(mp(1)) + b"\x00\x00\x00\x09abc") == [1]
    assert decoder.buffered == 7
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert (caught.value.buffered, caught.value.expected) == (7, 13)


def test_end_inside_a_frame_still_carries_values_held_after_a_bad_frame() -> None:
    decoder = msgpack_pipeline().decoder()
    with pytest.raises(DecodeError):
        decoder.feed(framed(BAD, mp("kept")) + b"\x00\x00")
    with pytest.raises(IncompleteFrame) as caught:
        decoder.end()
    assert caught.value.decoded == ["kept"]


def test_end_of_a_clean_stream_returns_nothing() -> None:
    decoder = msgpack_pipeline().decoder()
    assert decoder.feed(framed(mp(1))) == [1]
    assert decoder.end() == []


@pytest.mark.parametrize(
    "pipeline",
    [
        msgpack_pipeline(),
        Pipeline(framing=Delimited(max_frame_size=64), codecs="json"),
        Pipeline(framing=MsgpackStream(max_frame_size=64), codecs="msgpack"),
        Pipeline(framing="newline", codecs=["utf-8"]),
    ],
    ids=["length-prefix+msgpack", "newline+json", "msgpack-stream+msgpack", "newline+utf-8"],
)
def test_any_input_decodes_or_raises_a_wirekit_error(pipeline: Pipeline) -> None:
    check_decode_total(pipeline, settings=at_most(100))


# -- codec bugs ----------------------------------------------------------------------


def test_a_custom_codec_raising_value_error_on_decode_is_a_decode_error() -> None:
    pipeline = Pipeline(codecs=[Buggy()])
    with pytest.raises(DecodeError, match="decode bug") as caught:
        pipeline.decode_frame(b"boom")
    assert caught.value.codec == "buggy"
    assert isinstance(caught.value.__cause__, ValueError)
    decoder = pipeline.decoder()
    with pytest.raises(DecodeError):
        decoder.feed(framed(b"boom", b"fine"))
    assert decoder.feed(b"") == [b"fine"]


def test_a_custom_codec_raising_value_error_on_encode_is_an_encode_error() -> None:
    pipeline = Pipeline(codecs=[Buggy()])
    with pytest.raises(EncodeError, match="encode bug") as caught:
        pipeline.encode(b"boom")
    assert caught.value.codec == "buggy"
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_stack_that_does_not_end_in_bytes_is_an_encode_error() -> None:
    @attrs.frozen
    class Passthrough(Codec):
        name: ClassVar[str] = "passthrough"

        def decode(self, data: Any) -> Any:
            return data

        def encode(self, value: Any) -> Any:
            return value

    with pytest.raises(EncodeError, match="not bytes"):
        Pipeline(codecs=[Passthrough()]).encode(12)


# -- encoding ------------------------------------------------------------------------


def test_encode_is_the_framed_payload() -> None:
    pipeline = Pipeline(framing="newline", codecs="json")
    assert pipeline.encode_frame({"a": 1}) == b'{"a":1}'
    assert pipeline.encode({"a": 1}) == b'{"a":1}\n'


@pytest.mark.parametrize(
    "pipeline",
    [
        msgpack_pipeline(),
        Pipeline(framing=MsgpackStream(), codecs="msgpack"),
        Pipeline(framing=LengthPrefix(prefix_size=2, byteorder="little"), codecs="msgpack"),
    ],
    ids=["length-prefix", "msgpack-stream", "length-prefix-2-little"],
)
def test_encode_many_equals_concatenated_encode(pipeline: Pipeline) -> None:
    @at_most(100)
    @given(st.lists(msgpack_values(max_depth=8), max_size=6))
    def batched_is_concatenated(values: list[Any]) -> None:
        assert pipeline.encode_many(values) == b"".join(pipeline.encode(v) for v in values)

    batched_is_concatenated()


def test_encode_many_of_nothing_is_empty() -> None:
    assert Pipeline(framing="newline", codecs="utf-8").encode_many([]) == b""


def test_encode_error_from_a_codec_propagates() -> None:
    with pytest.raises(EncodeError):
        msgpack_pipeline().encode(object())
    with pytest.raises(EncodeError):
        Pipeline(framing="newline", codecs="json").encode_many([1, float("nan")])


def test_framing_refuses_a_payload_it_cannot_carry() -> None:
    with pytest.raises(InvalidFrame):
        Pipeline(framing="newline", codecs="utf-8").encode("two\nlines")


def test_a_bad_utf8_line_among_good_ones_costs_only_itself() -> None:
    # Text lines of one read decode in one pass; a bad one is still found,
    # with its offset, and the lines on either side of it are kept.
    decoder = Pipeline(framing="newline", codecs="utf-8").decoder()
    with pytest.raises(DecodeError) as caught:
        decoder.feed(b"one\ntwo\nbad \xff\nafter\n")
    assert caught.value.decoded == ["one", "two"]
    assert caught.value.offset == 4
    assert decoder.feed(b"") == ["after"]
    assert decoder.feed(b"caf\xc3\xa9\n") == ["caf\u00e9"]


# -- datagrams -----------------------------------------------------------------------


def test_one_datagram_is_one_value_and_the_stream_framing_is_not_applied() -> None:
    pipeline = Pipeline(framing="newline", codecs="utf-8")
    assert pipeline.encode_datagram("hello") == b"hello"
    assert pipeline.decode_datagram(b"two\nlines") == ["two\nlines"]


def test_datagram_round_trip_with_a_msgpack_pipeline() -> None:
    pipeline = msgpack_pipeline()
    datagram = pipeline.encode_datagram({"seq": 1})
    assert datagram == mp({"seq": 1})
    assert pipeline.decode_datagram(datagram) == [{"seq": 1}]
    assert pipeline.decode_datagram(bytearray(datagram)) == [{"seq": 1}]


def test_bad_datagram_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        msgpack_pipeline().decode_datagram(BAD)


def test_several_values_without_packing_are_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="packed"):
        msgpack_pipeline().encode_datagram(1, 2)


def test_oversize_datagram_is_rejected_both_ways() -> None:
    pipeline = msgpack_pipeline(datagram=Datagram(max_frame_size=16))
    with pytest.raises(FrameTooLarge) as sent:
        pipeline.encode_datagram(b"x" * 20)
    assert (sent.value.size, sent.value.limit) == (22, 16)
    with pytest.raises(FrameTooLarge) as received:
        pipeline.decode_datagram(mp(b"x" * 20))
    assert received.value.limit == 16


def test_packed_datagram_carries_several_frames_cut_by_the_stream_framing() -> None:
    pipeline = msgpack_pipeline(datagram=Datagram(packed=True))
    datagram = pipeline.encode_datagram(1, "two", [3])
    assert datagram == pipeline.encode_many([1, "two", [3]])
    assert pipeline.decode_datagram(datagram) == [1, "two", [3]]


def test_frame_cut_short_by_a_packed_datagram_is_incomplete() -> None:
    pipeline = msgpack_pipeline(datagram=Datagram(packed=True))
    datagram = pipeline.encode_datagram(1, 2)
    with pytest.raises(IncompleteFrame) as caught:
        pipeline.decode_datagram(datagram[:-1])
    assert caught.value.decoded == [1]


def test_packing_needs_a_stream_framing() -> None:
    with pytest.raises(ConfigError, match="stream") as caught:
        Pipeline(framing=Datagram(packed=True), codecs="msgpack")
    assert caught.value.option == "datagram"
    with pytest.raises(ConfigError):
        Pipeline(framing=Datagram(), codecs="msgpack", datagram=Datagram(packed=True))


DATAGRAM_PIPELINES = [
    Pipeline(framing="length-prefix", codecs="bytes"),
    Pipeline(framing="length-prefix", codecs="bytes", datagram=Datagram(max_frame_size=12)),
    Pipeline(framing="length-prefix", codecs="msgpack", datagram=Datagram(max_frame_size=24)),
    Pipeline(framing="newline", codecs="utf-8"),
    Pipeline(framing="length-prefix", codecs="msgpack", datagram=Datagram(packed=True)),
    Pipeline(framing=Datagram(max_frame_size=16), codecs=[JsonCodec()]),
]


@pytest.mark.parametrize("pipeline", DATAGRAM_PIPELINES, ids=repr)
@given(data=st.one_of(st.binary(max_size=40), st.binary(max_size=20).map(mp)))
def test_datagram_decoder_decodes_as_decode_datagram(pipeline: Pipeline, data: bytes) -> None:
    # The UDP server's per-datagram path: same values, same errors, for
    # bytes and for bytes-like input.
    decode = pipeline.datagram_decoder()
    for given_data in (data, bytearray(data)):
        assert _outcome(decode, given_data) == _outcome(pipeline.decode_datagram, given_data)


@pytest.mark.parametrize("pipeline", DATAGRAM_PIPELINES, ids=repr)
@given(value=st.one_of(st.binary(max_size=30), st.text(max_size=20), st.just(object())))
def test_datagram_encoder_encodes_as_encode_datagram(pipeline: Pipeline, value: Any) -> None:
    encode = pipeline.datagram_encoder()
    assert _outcome(encode, value) == _outcome(pipeline.encode_datagram, value)


def test_datagram_framing_as_the_framing_serves_datagrams_only() -> None:
    pipeline = Pipeline(framing=Datagram(max_frame_size=8), codecs=[JsonCodec()])
    assert pipeline.datagram_framing == Datagram(max_frame_size=8)
    assert pipeline.decode_datagram(b"[1,2]") == [[1, 2]]
    with pytest.raises(FrameTooLarge):
        pipeline.decode_datagram(b"[1,2,3,4,5]")
    with pytest.raises(ConfigError):
        pipeline.decoder()


def test_a_skipped_long_line_is_reported_once_and_the_stream_goes_on() -> None:
    from framework import Delimited, FrameTooLarge

    pipeline = Pipeline(framing=Delimited(max_frame_size=4, on_oversize="skip"), codecs="utf-8")
    decoder = pipeline.decoder()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"ok\ntoo long\nfine\nne")
    assert info.value.recoverable
    assert info.value.decoded == ["ok"]
    assert decoder.feed(b"") == ["fine"]
    assert decoder.feed(b"xt\n") == ["next"]


def test_an_unrecoverable_framing_error_ends_the_stream() -> None:
    from framework import FramingError

    decoder = Pipeline(framing="length-prefix").decoder()
    with pytest.raises(FramingError) as info:
        decoder.feed(b"\xff\xff\xff\xff")
    assert not info.value.recoverable
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"")


# -- the per-connection encoder and the fused msgpack → message decoder ---------------


@message("spot")
@attrs.frozen
class Spot:
    x: float
    n: int
    name: str = ""


@message("trail")
@attrs.frozen
class Trail:
    points: list[int]


def _outcome(call: Any, *args: Any) -> Any:
    """The result of ``call``, or the class and message of the wirekit error it raised."""
    try:
        return ("ok", call(*args))
    except WirekitError as exc:
        return ("error", type(exc), str(exc))


ENCODER_PIPELINES = [
    Pipeline(framing=LengthPrefix(), codecs="bytes"),
    Pipeline(framing=LengthPrefix(max_frame_size=40), codecs="bytes"),
    Pipeline(framing=LengthPrefix(prefix_size=1, length_adjustment=-1), codecs="bytes"),
    Pipeline(framing=LengthPrefix(), codecs="msgpack"),
    Pipeline(framing=LengthPrefix(max_frame_size=40), codecs="msgpack", messages=[Spot, Trail]),
    Pipeline(framing=MsgpackStream(max_frame_size=40), codecs="msgpack"),
    Pipeline(framing=MsgpackStream(), codecs="msgpack", messages=[Spot, Trail]),
    Pipeline(framing="newline", codecs="msgpack", messages=[Spot]),
    Pipeline(framing="newline", codecs="utf-8"),
]


class _Text(str):
    """A str subclass: the utf-8 codec refuses it, whatever path encodes it."""


encodable = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=30),
    st.text(max_size=5).map(_Text),
    st.sampled_from(["line\n", "cr\r", "\ud800"]),
    st.builds(Spot, st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1), st.text()),
    st.builds(Trail, st.lists(st.integers(0, 1000), max_size=20)),
    st.lists(st.integers(), max_size=5),
    st.just(object()),
)


@pytest.mark.parametrize("pipeline", ENCODER_PIPELINES, ids=repr)
@given(values=st.lists(encodable, max_size=6))
def test_encoder_writes_what_pipeline_encode_many_writes(
    pipeline: Pipeline, values: list[Any]
) -> None:
    # Same bytes as the unspecialised path, or the very same error. Twice in
    # a row: a reused packer starts clean after a failure.
    encoder = pipeline.encoder()
    for _ in range(2):
        assert _outcome(encoder.encode_many, values) == _outcome(pipeline.encode_many, values)
        for value in values:
            assert _outcome(encoder.encode_many, [value]) == _outcome(pipeline.encode_many, [value])


def test_encoder_drops_a_packer_grown_by_a_large_value_and_still_encodes() -> None:
    pipeline = Pipeline(framing=LengthPrefix(), codecs="msgpack")
    encoder = pipeline.encoder()
    big = b"x" * 200_000
    for value in ([1, 2], big, {"a": "b"}, big, "small"):
        assert encoder.encode_many([value]) == pipeline.encode_many([value])


def test_msgpack_stream_frames_from_the_packer_are_not_parsed_again_but_limited() -> None:
    framing = MsgpackStream(max_frame_size=8)
    assert framing.encode_packed([mp(1), mp("abc")]) == mp(1) + mp("abc")
    with pytest.raises(FrameTooLarge):
        framing.encode_packed([mp("a" * 20)])
    # A frame the packer did not write still goes through encode's parse.
    with pytest.raises(InvalidFrame):
        Pipeline(framing=MsgpackStream(), codecs=Tag(b"\x00\x00")).encode_many([b"\x01"])


envelopes = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["spot", "trail", "nope"])},
        optional={
            "x": st.one_of(st.floats(allow_nan=False), st.integers(-5, 5), st.text(max_size=2)),
            "n": st.one_of(st.integers(-5, 5), st.booleans(), st.floats(allow_nan=False)),
            "name": st.one_of(st.text(max_size=3), st.binary(max_size=3)),
            "points": st.one_of(st.lists(st.integers(0, 9), max_size=3), st.integers(-5, 5)),
            "extra": st.recursive(st.integers(-5, 5), lambda inner: st.lists(inner, max_size=2)),
        },
    ),
    msgpack_values(),
)


@given(envelopes)
def test_fused_msgpack_message_decoding_agrees_with_the_two_stages(value: Any) -> None:
    codec = MsgpackCodec(max_depth=3)
    pipeline = Pipeline(framing=LengthPrefix(), codecs=codec, messages=[Spot, Trail])
    frame = mp(value)
    assert _outcome(pipeline.decode_frame, frame) == _outcome(
        lambda data: pipeline.messages.decode(codec.decode(data)),
        frame,  # type: ignore[union-attr]
    )


def test_fused_decoding_reports_bad_msgpack_like_the_codec() -> None:
    pipeline = Pipeline(framing=LengthPrefix(), codecs="msgpack", messages=[Spot])
    with pytest.raises(DecodeError, match="invalid msgpack"):
        pipeline.decode_frame(BAD)
    with pytest.raises(DecodeError, match="after the msgpack value"):
        pipeline.decode_frame(mp({"type": "spot", "x": 1.0, "n": 1}) + b"\x00")
