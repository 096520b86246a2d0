"""Datagram: one datagram is one frame, with nothing added on the wire."""

from __future__ import annotations

import pytest
from helpers_core import at_most

from framework import ConfigError, Datagram, FrameTooLarge, Limits, Pipeline, make_framing
from framework.core.limits import MAX_UDP_PAYLOAD
from framework.testing import check_decode_total, check_framing_roundtrip, check_rejects_oversize

FRAMINGS = [Datagram(), Datagram(max_frame_size=100), Datagram(max_frame_size=1)]


# -- the kit's laws ------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_datagrams_round_trip(framing: Datagram) -> None:
    check_framing_roundtrip(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_any_datagram_decodes_or_raises_a_framing_error(framing: Datagram) -> None:
    check_decode_total(framing, settings=at_most(100))


@pytest.mark.parametrize("framing", FRAMINGS, ids=repr)
def test_oversize_datagrams_are_rejected(framing: Datagram) -> None:
    check_rejects_oversize(framing, settings=at_most(50))


# -- examples ------------------------------------------------------------------------


def test_each_feed_is_one_frame() -> None:
    decoder = Datagram().decoder()
    assert decoder.feed(b"one datagram\n with a newline") == [b"one datagram\n with a newline"]
    assert decoder.feed(b"\x00\x00\x00\x05") == [b"\x00\x00\x00\x05"]
    assert decoder.feed(b"") == [b""]
    assert decoder.buffered == 0
    decoder.end()


def test_feed_accepts_bytearray_and_memoryview_and_returns_bytes() -> None:
    decoder = Datagram().decoder()
    assert decoder.feed(bytearray(b"ab")) == [b"ab"]
    frames = decoder.feed(memoryview(b"cd"))
    assert frames == [b"cd"]
    assert type(frames[0]) is bytes


def test_nothing_is_added_on_the_wire() -> None:
    assert Datagram().encode(b"payload") == b"payload"
    assert Datagram().encode_many([b"a", b"b"]) == b"ab"


def test_default_limit_is_the_largest_udp_payload() -> None:
    framing = Datagram()
    assert framing.max_frame_size == MAX_UDP_PAYLOAD == 65_535 - 8 - 20
    assert Limits().max_datagram_size == MAX_UDP_PAYLOAD  # the runtime's limit agrees
    assert framing.decoder().feed(b"x" * 65_507) == [b"x" * 65_507]


def test_oversize_datagram_is_rejected_on_decode() -> None:
    decoder = Datagram(max_frame_size=10).decoder()
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"x" * 11)
    assert (caught.value.size, caught.value.limit) == (11, 10)
    # One bad datagram does not break the next: there is no stream to resync.
    assert decoder.feed(b"ok") == [b"ok"]


def test_oversize_datagram_is_rejected_on_encode() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        Datagram(max_frame_size=10).encode(b"x" * 11)
    assert (caught.value.size, caught.value.limit) == (11, 10)


def test_a_datagram_framing_cannot_cut_a_stream() -> None:
    assert Datagram.streaming is False
    pipeline = Pipeline(framing=Datagram(), codecs="bytes")
    with pytest.raises(ConfigError, match="datagram") as caught:
        pipeline.decoder()
    assert caught.value.option == "framing"
    # The same pipeline still serves datagrams.
    assert pipeline.decode_datagram(b"abc") == [b"abc"]


def test_built_by_name_with_options() -> None:
    assert make_framing("datagram", max_frame_size=512) == Datagram(max_frame_size=512)


def test_bad_limit_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_frame_size") as caught:
        Datagram(max_frame_size=0)
    assert caught.value.option == "max_frame_size"


def test_auth_is_applied_by_the_runtime_not_by_the_pipeline() -> None:
    # The framing carries the stage; the pipeline still encodes and decodes
    # the payload alone, so the runtime can open before decoding anything.
    from framework.core.security import OVERHEAD, HmacAuth

    auth = HmacAuth({1: b"k" * 32})
    framing = make_framing("datagram", auth=auth, max_frame_size=100)
    assert framing == Datagram(auth=auth, max_frame_size=100)
    assert framing.overhead == OVERHEAD
    assert "k" * 16 not in repr(framing)
    pipeline = Pipeline(codecs="utf-8", datagram=framing)
    assert pipeline.encode_datagram("hi") == b"hi"
    assert pipeline.decode_datagram(b"hi") == ["hi"]
    # max_frame_size bounds the sealed datagram: a payload that fits alone
    # may not fit with the 34 bytes of header and tag.
    sealed = auth.session().seal(pipeline.encode_datagram("x" * 70))
    with pytest.raises(FrameTooLarge):
        framing.check_size(len(sealed))
