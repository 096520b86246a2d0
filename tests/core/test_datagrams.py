"""The datagram rules, driven by bytes and a number for the clock."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from framework import Datagram, HmacAuth, Limits, Pipeline
from framework.core.connection import BadInput, ConnectionStats, ReplyBatch, Role, StreamState
from framework.core.datagrams import (
    DatagramGate,
    DatagramStats,
    Drop,
    Dropped,
    PeerState,
    decode_datagram,
)
from framework.core.errors import DecodeError, ReplayedDatagram

KEY = b"k" * 32


def test_the_gate_drops_an_oversize_datagram_before_anything_else() -> None:
    gate = DatagramGate(max_size=4)
    assert gate.check(b"1234") == (None, b"1234")
    assert gate.check(b"12345") == Dropped(Drop.OVERSIZE)


def test_a_server_gate_opens_any_client_session_and_refuses_forgeries_and_replays() -> None:
    auth = HmacAuth(keys={1: KEY})
    client = auth.session()
    gate = DatagramGate.for_server(1000, auth.responder())
    sealed = client.seal(b"hello")
    session, payload = gate.check(sealed)  # type: ignore[misc]
    assert payload == b"hello"
    assert session is not None
    replayed = gate.check(sealed)
    assert isinstance(replayed, Dropped)
    assert replayed.reason is Drop.REPLAYED
    assert isinstance(replayed.error, ReplayedDatagram)
    forged = gate.check(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    assert isinstance(forged, Dropped)
    assert forged.reason is Drop.UNAUTHENTICATED


def test_a_client_gate_opens_only_its_own_session() -> None:
    auth = HmacAuth(keys={1: KEY})
    mine, other = auth.session(), auth.session()
    responder = auth.responder()
    reply_session, _ = responder.open(mine.seal(b"ping"))
    gate = DatagramGate.for_client(1000, mine)
    assert gate.check(reply_session.seal(b"pong")) == (mine, b"pong")
    other_reply, _ = responder.open(other.seal(b"ping"))
    refused = gate.check(other_reply.seal(b"pong"))
    assert isinstance(refused, Dropped)
    assert refused.reason is Drop.UNAUTHENTICATED


def test_a_peer_over_its_rate_then_with_too_much_running_is_dropped_in_that_order() -> None:
    peer = PeerState(Limits(max_frames_per_second=1.0, frame_burst=1), now=0.0)
    assert peer.admit(0.0, size=10, busy=False) is None
    assert peer.admit(0.0, size=10, busy=True) is Drop.RATE_LIMITED  # rate first
    assert peer.admit(1.0, size=10, busy=True) is Drop.NO_CAPACITY
    assert peer.stats.bytes_in == 30
    assert peer.last_activity == 1.0


def test_an_unverified_address_gets_at_most_the_amplification_factor() -> None:
    peer = PeerState(Limits(amplification_factor=3.0), now=0.0)
    peer.admit(0.0, size=10, busy=False)
    assert peer.may_send(30)
    assert not peer.may_send(31)
    peer.stats.bytes_out = 30
    assert not peer.may_send(1)
    peer.authenticated(HmacAuth(keys={1: KEY}).session())
    assert peer.may_send(10_000)


def test_without_an_amplification_factor_nothing_is_held_back() -> None:
    peer = PeerState(Limits(amplification_factor=None), now=0.0)
    assert peer.may_send(65_000)


def test_every_drop_reason_has_its_counter() -> None:
    stats = DatagramStats()
    for reason in Drop:
        stats.count(reason)
    counters = [a.name for a in attrs.fields(DatagramStats) if a.name.startswith("dropped_")]
    assert all(getattr(stats, name) == 1 for name in counters)
    assert len(counters) == len(Drop)


def test_a_datagram_the_send_queue_drops_is_taken_back_off_what_was_sent() -> None:
    stats, conn = DatagramStats(sent=3), ConnectionStats(frames_out=3, bytes_out=300)
    stats.not_sent(100, conn)
    stats.not_sent(100, None)  # its peer was forgotten meanwhile
    assert (stats.sent, stats.dropped_send_queue) == (1, 2)
    assert (conn.frames_out, conn.bytes_out) == (2, 200)


def test_a_datagram_that_does_not_decode_is_bad_input_that_is_never_fatal() -> None:
    pipeline = Pipeline(framing=Datagram(), codecs="utf-8")
    [bad] = decode_datagram(pipeline.decode_datagram, b"\xff")
    assert isinstance(bad, BadInput)
    assert isinstance(bad.error, DecodeError)
    assert not bad.fatal
    assert decode_datagram(pipeline.decode_datagram, b"fine") == ["fine"]


LINE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20)


@given(st.lists(LINE, max_size=20))
def test_stream_and_datagram_paths_dispatch_the_same_values_and_write_the_same_replies(
    lines: list[str],
) -> None:
    pipeline = Pipeline(framing="newline", codecs="utf-8")
    # The same input, as a stream and as one datagram per value.
    streamed = StreamState(pipeline, role=Role.SERVER, limits=Limits(), recover=True, now=0.0)
    stream_values = streamed.receive_data(pipeline.encode_many(lines), now=0.0)
    datagram_values = [
        value
        for line in lines
        for value in decode_datagram(pipeline.decode_datagram, pipeline.encode_datagram(line))
    ]
    assert stream_values == datagram_values == lines
    # The same replies: one write on the stream, one datagram each.
    replies = [line.upper() for line in stream_values]
    batch = ReplyBatch(pipeline)
    for reply in replies:
        batch.add(reply)
    wire, count, failed = batch.take()
    assert (count, failed) == (len(replies), [])
    unframed = wire.split(b"\n")[:-1] if replies else []
    assert unframed == [pipeline.encode_datagram(reply) for reply in replies]
