"""The game protocol: binary codec (through the kit), sequence tracker, relay, bots, demo."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from framework import DecodeError, EncodeError, Pipeline, make_codec
from framework.runtime import connect
from framework.testing import (
    check_codec_roundtrip,
    check_decode_total,
    register_values,
)
from protocols.game import GameBinaryCodec, Position, Relayed, SequenceTracker, create_app
from protocols.game.bot import run_bots
from protocols.game.demo import run_demo

float32s = st.floats(width=32, allow_nan=False)
uint32s = st.integers(0, 2**32 - 1)
position_maps = st.fixed_dictionaries(
    {"type": st.just("position"), "x": float32s, "y": float32s, "z": float32s, "count": uint32s}
)
relayed_maps = st.fixed_dictionaries(
    {
        "type": st.just("relayed"),
        "player": uint32s,
        "position": position_maps.map(lambda m: {k: v for k, v in m.items() if k != "type"}),
    }
)
register_values(GameBinaryCodec, lambda codec: st.one_of(position_maps, relayed_maps))


def test_binary_codec_obeys_the_laws() -> None:
    codec = GameBinaryCodec()
    check_codec_roundtrip(codec)
    check_decode_total(codec)


def test_position_is_16_bytes_in_network_byte_order() -> None:
    wire = GameBinaryCodec().encode({"type": "position", "x": 1.5, "y": -2.0, "z": 0.0, "count": 7})
    assert wire == struct.pack(">fffI", 1.5, -2.0, 0.0, 7)
    assert wire.hex() == "3fc00000c000000000000000" + "00000007"


def test_binary_codec_is_selected_by_name_and_carries_typed_messages() -> None:
    pipeline = Pipeline(
        framing="length-prefix", codecs=[make_codec("game-binary")], messages=[Position, Relayed]
    )
    wire = pipeline.encode(Relayed(3, Position(0.5, 1.0, 2.0, 9)))
    assert len(wire) == 4 + 20
    assert pipeline.decoder().feed(wire) == [Relayed(3, Position(0.5, 1.0, 2.0, 9))]


@pytest.mark.parametrize(
    "value",
    [
        {"type": "position", "x": 1e39, "y": 0.0, "z": 0.0, "count": 1},
        {"type": "position", "x": 0.0, "y": 0.0, "z": 0.0, "count": -1},
        {"type": "position", "x": 0.0, "y": 0.0, "z": 0.0, "count": 2**32},
        {"type": "position", "x": "0", "y": 0.0, "z": 0.0, "count": 1},
        {"type": "position", "x": 0.0},
        {"type": "chat"},
        [1, 2],
    ],
)
def test_binary_codec_refuses_what_the_layout_cannot_carry(value: object) -> None:
    with pytest.raises(EncodeError):
        GameBinaryCodec().encode(value)


@pytest.mark.parametrize("size", [0, 15, 17, 19, 21, 64])
def test_binary_codec_rejects_other_lengths(size: int) -> None:
    with pytest.raises(DecodeError, match=r"16 .* or 20"):
        GameBinaryCodec().decode(bytes(size))


# -- the sequence tracker -------------------------------------------------------------


def test_tracker_accepts_in_order_and_counts_gaps() -> None:
    tracker = SequenceTracker()
    assert [tracker.accept("p", n) for n in (1, 2, 5)] == [True, True, True]
    assert tracker.lost == 2
    assert not tracker.accept("p", 3)  # late: dropped, no longer lost
    assert (tracker.lost, tracker.out_of_order) == (1, 1)
    assert not tracker.accept("p", 3)
    assert tracker.duplicates == 1
    assert tracker.newest("p") == 5


def test_tracker_handles_wrap_around() -> None:
    tracker = SequenceTracker()
    assert [tracker.accept("p", n) for n in (2**32 - 2, 2**32 - 1, 0, 1)] == [True] * 4
    assert not tracker.accept("p", 2**32 - 1)
    assert tracker.lost == 0


def test_tracker_keeps_senders_apart() -> None:
    tracker = SequenceTracker()
    assert tracker.accept("a", 10)
    assert tracker.accept("b", 1)
    assert not tracker.accept("a", 9)


@given(st.lists(st.integers(0, 40), max_size=80), st.integers(0, 2**32 - 1))
def test_tracker_accepts_a_strictly_increasing_subsequence(counts: list[int], offset: int) -> None:
    tracker = SequenceTracker()
    accepted = [n for n in counts if tracker.accept("p", (n + offset) % 2**32)]
    assert all(a < b for a, b in itertools.pairwise(accepted))
    assert tracker.received == len(counts)
    assert tracker.received == tracker.accepted + tracker.duplicates + tracker.out_of_order
    if counts:
        delivered = set(counts)
        first = counts[0]
        newest = max(counts[: counts.index(max(counts)) + 1])
        never_seen = set(range(first, newest + 1)) - delivered
        assert tracker.lost == len(never_seen)


# -- the relay over real sockets ------------------------------------------------------


@pytest.mark.parametrize("url", ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"])
@pytest.mark.parametrize("codec", ["msgpack", "game-binary"])
def test_relay_forwards_to_every_other_player(url: str, codec: str) -> None:
    pipeline = Pipeline(codecs=[make_codec(codec)], messages=[Position, Relayed])

    async def scenario() -> None:
        server = await create_app(pipeline).start(url)
        a, b, c = [await connect(server.url, pipeline) for _ in range(3)]
        for conn in (a, b, c):  # over UDP a player joins with its first datagram
            await conn.send(Position(0.0, 0.0, 0.0, 0))
        await asyncio.sleep(0.1)
        for conn in (a, b, c):  # drop the join positions relayed to earlier players
            with contextlib.suppress(TimeoutError):
                while True:
                    await asyncio.wait_for(conn.receive(), 0.05)
        await a.send(Position(1.5, 2.5, 3.5, 1))
        for other in (b, c):
            update = await asyncio.wait_for(other.receive(), 2)
            assert isinstance(update, Relayed)
            assert update.position == Position(1.5, 2.5, 3.5, 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.receive(), 0.2)
        for conn in (a, b, c):
            conn.close()
        await server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("url", ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"])
def test_bots_measure_delivery(url: str) -> None:
    async def scenario() -> None:
        server = await create_app().start(url)
        report = await run_bots(server.url, players=3, rate=40, duration=0.5)
        await server.close()
        assert report.sent > 0
        assert report.received > 0
        assert report.tracker.duplicates == 0
        p50 = report.latency_ms(0.5)
        assert p50 is not None
        assert p50 > 0

    asyncio.run(scenario())


def test_demo_runs_and_prints_a_summary() -> None:
    out = io.StringIO()
    reports = asyncio.run(
        run_demo(duration=0.6, players=2, rate=20, console=Console(file=out, width=100))
    )
    assert {url.split("://")[0] for url in reports} == {"tcp", "udp"}
    text = out.getvalue()
    assert "after 0.6 s" in text
    assert "TCP" in text
    assert "UDP" in text


def test_the_relay_defaults_to_udp() -> None:
    from protocols.game import app

    assert app.default_url is not None
    assert app.default_url.startswith("udp://")
