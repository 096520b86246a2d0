"""The game protocol: binary codec (through the kit), sequence tracker, relay, bots, demo."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import struct
import sys
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from framework import (
    ConfigError,
    ConnectionClosed,
    DecodeError,
    EncodeError,
    Limits,
    Pipeline,
    TransportError,
    make_codec,
)
from framework.cli import main
from framework.runtime import Connection, connect
from framework.testing import (
    check_codec_roundtrip,
    check_decode_total,
    register_values,
)
from protocols.game import (
    NO_COOKIE,
    Challenge,
    GameBinaryCodec,
    Join,
    JoinCookies,
    PlayerNumbers,
    Position,
    Relayed,
    SequenceTracker,
    Welcome,
    create_app,
    default_pipeline,
    join,
)
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
cookies = st.binary(min_size=24, max_size=24)
handshake_maps = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["join", "challenge"]), "cookie": cookies}),
    st.fixed_dictionaries({"type": st.just("welcome"), "player": uint32s}),
)
MESSAGES = [Position, Relayed, Join, Challenge, Welcome]
register_values(
    GameBinaryCodec, lambda codec: st.one_of(position_maps, relayed_maps, handshake_maps)
)


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


@pytest.mark.parametrize("size", [0, 4, 8, 15, 17, 19, 21, 28, 64])
def test_binary_codec_rejects_other_lengths(size: int) -> None:
    with pytest.raises(DecodeError, match=r"16 .* or 20"):
        GameBinaryCodec().decode(bytes(size))


def test_handshake_packets_have_a_tag_and_a_fixed_size() -> None:
    codec = GameBinaryCodec()
    cookie = bytes(range(24))
    assert codec.encode({"type": "join", "cookie": cookie}) == b"JOIN" + cookie
    assert codec.encode({"type": "challenge", "cookie": cookie}) == b"CHAL" + cookie
    assert codec.encode({"type": "welcome", "player": 3}) == b"WELC\x00\x00\x00\x03"
    assert codec.decode(b"JOIN" + cookie) == {"type": "join", "cookie": cookie}
    with pytest.raises(DecodeError):
        codec.decode(b"HELO" + cookie)
    with pytest.raises(EncodeError, match="24 bytes"):
        codec.encode({"type": "join", "cookie": b"short"})
    # The first join is padded to about the size of the challenge that answers it.
    for pipeline in (default_pipeline(), Pipeline(codecs=[codec], messages=MESSAGES)):
        first_join = len(pipeline.encode_datagram(Join()))
        assert len(pipeline.encode_datagram(Challenge(cookie))) <= first_join * 1.2


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
    pipeline = Pipeline(codecs=[make_codec(codec)], messages=MESSAGES)

    async def scenario() -> None:
        server = await create_app(pipeline).start(url)
        a, b, c = [await connect(server.url, pipeline) for _ in range(3)]
        numbers = [await join(conn) for conn in (a, b, c)]
        first = numbers[0]
        assert first % 65536 == 1  # the first of this relay's block
        assert numbers == [first, first + 1, first + 2]
        await a.send(Position(1.5, 2.5, 3.5, 1))
        for other in (b, c):
            update = await asyncio.wait_for(other.receive(), 2)
            assert update == Relayed(first, Position(1.5, 2.5, 3.5, 1))
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


def test_demo_with_web_serves_each_relays_live_view_while_the_bots_play() -> None:
    out = io.StringIO()

    async def scenario() -> None:
        console = Console(file=out, width=120)
        demo = asyncio.create_task(
            run_demo(duration=1.5, players=2, rate=20, web=True, console=console)
        )
        pages: list[str] = []
        while len(pages) < 2:
            assert not demo.done(), out.getvalue()
            await asyncio.sleep(0.05)
            pages = re.findall(r"live view of the (TCP|UDP) relay: (http://\S+/)", out.getvalue())
        for _kind, url in pages:
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=5) as response:
                assert b"wirekit game relay" in response.read()
            # The page's socket is the relay's: a spectator there sees the bots.
            async with connect("ws" + url.removeprefix("http"), default_pipeline()) as spectator:
                await join(spectator)
                update = await asyncio.wait_for(spectator.receive(), 2)
                while not isinstance(update, Relayed):
                    update = await asyncio.wait_for(spectator.receive(), 2)
        reports = await demo
        assert {url.split("://")[0] for url in reports} == {"tcp", "udp"}
        # Served while the bots play, and no longer.
        with pytest.raises(TransportError):
            await connect("ws" + pages[0][1].removeprefix("http"), default_pipeline())

    asyncio.run(scenario())


def test_demo_web_without_the_websockets_library_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "websockets", None)  # as if not installed
    assert main(["demo", "--web", "--duration", "0.1"]) == 1
    assert "pip install 'wirekit[websocket]'" in capsys.readouterr().err


def test_the_relay_defaults_to_udp() -> None:
    from protocols.game import app

    assert app.default_url is not None
    assert app.default_url.startswith("udp://")


# -- joining: the cookie handshake that verifies a UDP player's address --------------


def test_many_udp_players_get_every_update_under_the_amplification_bound() -> None:
    # Each player receives (players - 1) updates per position it sends: far
    # more than 3x its own bytes. The join cookie verified its address, so
    # the default amplification_factor=3 holds back nothing.
    players = 8

    async def scenario() -> None:
        app = create_app()
        async with await app.start("udp://127.0.0.1:0") as server:
            conns = [await connect(server.url, app.pipeline) for _ in range(players)]
            for conn in conns:
                await join(conn)
            for count in range(1, 4):
                for index, conn in enumerate(conns):
                    await conn.send(Position(0.0, 0.0, float(index), count))
                    await asyncio.sleep(0.002)  # stay within the socket buffers
            for conn in conns:
                updates = [await asyncio.wait_for(conn.receive(), 2) for _ in range(3 * 7)]
                assert all(isinstance(update, Relayed) for update in updates)
            stats = server.datagram_stats
            assert stats is not None
            assert stats.dropped_amplification == 0
            assert stats.sent > 3 * stats.received
            for conn in conns:
                conn.close()

    asyncio.run(scenario())


def test_a_peer_that_has_not_joined_gets_a_challenge_and_no_updates() -> None:
    async def scenario() -> None:
        app = create_app()
        async with await app.start("udp://127.0.0.1:0") as server:
            player = await connect(server.url, app.pipeline)
            stranger = await connect(server.url, app.pipeline)
            await join(player)
            await stranger.send(Position(9.0, 9.0, 9.0, 1))
            reply = await asyncio.wait_for(stranger.receive(), 2)
            assert isinstance(reply, Challenge)
            await player.send(Position(1.0, 1.0, 1.0, 1))
            with pytest.raises(TimeoutError):  # neither relayed to nor from it
                await asyncio.wait_for(stranger.receive(), 0.2)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(player.receive(), 0.05)
            player.close()
            stranger.close()

    asyncio.run(scenario())


def test_a_cookie_is_bound_to_the_address_it_was_sent_to() -> None:
    async def scenario() -> None:
        app = create_app()
        async with await app.start("udp://127.0.0.1:0") as server:
            victim = await connect(server.url, app.pipeline)
            attacker = await connect(server.url, app.pipeline)
            await victim.send(Join())
            challenge = await asyncio.wait_for(victim.receive(), 2)
            assert isinstance(challenge, Challenge)
            await attacker.send(Join(challenge.cookie))  # from another address
            assert isinstance(await asyncio.wait_for(attacker.receive(), 2), Challenge)
            await victim.send(Join(challenge.cookie))
            welcome = await asyncio.wait_for(victim.receive(), 2)
            assert isinstance(welcome, Welcome)
            await victim.send(Join(challenge.cookie))  # the welcome was lost: same number
            assert await asyncio.wait_for(victim.receive(), 2) == welcome
            victim.close()
            attacker.close()

    asyncio.run(scenario())


def test_join_cookies_expire_and_cannot_be_forged() -> None:
    now = [1_000_000.0]
    jar = JoinCookies(b"s" * 32, lifetime=30, clock=lambda: now[0])
    peer = ("127.0.0.1", 5000)
    cookie = jar.issue(peer)
    assert len(cookie) == 24
    assert jar.check(peer, cookie)
    assert not jar.check(("127.0.0.1", 5001), cookie)
    assert not jar.check(peer, NO_COOKIE)
    assert not jar.check(peer, cookie[:-1] + bytes([cookie[-1] ^ 1]))
    assert not JoinCookies(b"t" * 32, clock=lambda: now[0]).check(peer, cookie)
    now[0] += 31
    assert not jar.check(peer, cookie)
    assert "s" * 16 not in repr(jar)


def test_a_forgotten_player_is_challenged_and_rejoins() -> None:
    async def scenario() -> None:
        app = create_app()
        limits = Limits(idle_timeout=0.1)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            conn = await connect(server.url, app.pipeline)
            first = await join(conn)
            await asyncio.sleep(0.3)  # silent: the relay forgets the player
            await conn.send(Position(0.0, 0.0, 0.0, 1))
            assert isinstance(await asyncio.wait_for(conn.receive(), 2), Challenge)
            assert await join(conn) == first + 1
            conn.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("url", ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"])
def test_a_spectator_receives_every_players_positions_and_sends_none(url: str) -> None:
    async def scenario() -> None:
        app = create_app()
        async with await app.start(url) as server:
            spectator, a, b = [await connect(server.url, app.pipeline) for _ in range(3)]
            _, a_number, b_number = [await join(conn) for conn in (spectator, a, b)]
            for count in (1, 2, 3):
                await a.send(Position(1.0, 0.0, 0.0, count))
                await b.send(Position(0.0, 1.0, 0.0, count))
                # Over UDP a sender's datagrams may cross: wait for each round.
                seen = {await asyncio.wait_for(spectator.receive(), 2) for _ in range(2)}
                assert seen == {
                    Relayed(a_number, Position(1.0, 0.0, 0.0, count)),
                    Relayed(b_number, Position(0.0, 1.0, 0.0, count)),
                }
            # The players see each other, and nothing from the spectator.
            assert [await asyncio.wait_for(a.receive(), 2) for _ in range(3)] == [
                Relayed(b_number, Position(0.0, 1.0, 0.0, count)) for count in (1, 2, 3)
            ]
            for conn in (spectator, a, b):
                conn.close()

    asyncio.run(scenario())


async def read_until_closed(conn: Connection) -> None:
    while True:
        await conn.receive()


def test_a_spectator_that_joins_again_stays_past_the_idle_timeout() -> None:
    # What the game page does: a joined player's join changes nothing but
    # the idle clock, so a spectator that sends nothing else is not closed.
    async def scenario() -> None:
        app = create_app()
        limits = Limits(idle_timeout=0.3)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as server:
            spectator, player, silent = [await connect(server.url, app.pipeline) for _ in range(3)]
            watching, playing, _ = [await join(conn) for conn in (spectator, player, silent)]
            for _ in range(6):  # 0.6 s in all, twice the idle timeout
                await asyncio.sleep(0.1)
                assert await join(spectator) == watching  # the same number again
                await player.send(Position(2.0, 2.0, 0.0, 1))  # the player stays too
            await player.send(Position(3.0, 3.0, 0.0, 2))
            update = None
            while update != Relayed(playing, Position(3.0, 3.0, 0.0, 2)):
                update = await asyncio.wait_for(spectator.receive(), 2)
            assert not spectator.closed
            # The one that sent nothing more was closed by the idle timeout.
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(read_until_closed(silent), 2)
            for conn in (spectator, player):
                conn.close()

    asyncio.run(scenario())


def test_join_gives_up_when_nobody_answers() -> None:
    async def scenario() -> None:
        app = create_app()
        async with await app.start("udp://127.0.0.1:0") as server:
            url = server.url
        async with connect(url, app.pipeline) as conn:  # the relay is gone
            with pytest.raises(TransportError, match="no welcome"):
                await join(conn, timeout=0.3, retry_after=0.05)

    asyncio.run(scenario())


def test_a_relay_pipeline_without_the_handshake_messages_is_refused() -> None:
    with pytest.raises(ConfigError, match="missing: Join, Challenge, Welcome"):
        create_app(Pipeline(codecs="msgpack", messages=[Position, Relayed]))


# -- two relays on one backplane ------------------------------------------------------------

SECRET = "a cookie secret the relays share"


def test_players_on_two_relays_see_each_other_with_unique_numbers() -> None:
    binary = Pipeline(codecs=[make_codec("game-binary")], messages=MESSAGES)

    async def scenario() -> None:
        hub = "memory://game-two-relays"
        udp_relay = create_app(backplane=hub, cookie_secret=SECRET)
        tcp_relay = create_app(binary, backplane=hub, cookie_secret=SECRET)
        async with (
            await udp_relay.start("udp://127.0.0.1:0") as one,
            await tcp_relay.start("tcp://127.0.0.1:0") as two,
        ):
            ada = await connect(one.url, udp_relay.pipeline)  # UDP, msgpack
            bob = await connect(two.url, binary)  # TCP, the 16-byte layout
            cy = await connect(two.url, binary)
            numbers = [await join(ada), await join(bob), await join(cy)]
            assert len(set(numbers)) == 3
            assert numbers[0] // 65536 != numbers[1] // 65536  # a block per relay
            for _ in range(200):
                if len(tcp_relay.groups.members("players")) == 3:
                    break
                await asyncio.sleep(0.01)
            await ada.send(Position(1.5, 2.5, 3.5, 1))
            for other in (bob, cy):
                update = await asyncio.wait_for(other.receive(), 2)
                assert update == Relayed(numbers[0], Position(1.5, 2.5, 3.5, 1))
            await bob.send(Position(-1.0, 0.5, 2.0, 7))
            assert await asyncio.wait_for(ada.receive(), 2) == Relayed(
                numbers[1], Position(-1.0, 0.5, 2.0, 7)
            )
            assert await asyncio.wait_for(cy.receive(), 2) == Relayed(
                numbers[1], Position(-1.0, 0.5, 2.0, 7)
            )
            for conn in (ada, bob, cy):
                conn.close()

    asyncio.run(scenario())


def test_a_cookie_one_relay_issued_verifies_on_another_with_the_shared_secret() -> None:
    async def scenario() -> None:
        hub = "memory://game-cookies"
        first = create_app(backplane=hub, cookie_secret=SECRET)
        second = create_app(backplane=hub, cookie_secret=SECRET)
        stranger = create_app(backplane="memory://game-cookies-other")  # its own secret
        pipeline = first.pipeline
        async with (
            await first.start("udp://127.0.0.1:0") as one,
            await second.start("udp://127.0.0.1:0") as two,
            await stranger.start("udp://127.0.0.1:0") as three,
        ):
            loop = asyncio.get_running_loop()
            inbox: asyncio.Queue[bytes] = asyncio.Queue()

            class Player(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    inbox.put_nowait(data)

            # One socket, as a player behind a load balancer that spreads its
            # datagrams over the relays.
            transport, _ = await loop.create_datagram_endpoint(Player, local_addr=("127.0.0.1", 0))
            address = lambda server: (server.endpoint.host, server.endpoint.port)  # noqa: E731
            transport.sendto(pipeline.encode_datagram(Join()), address(one))
            challenge = pipeline.decode_datagram(await asyncio.wait_for(inbox.get(), 2))[0]
            assert isinstance(challenge, Challenge)
            transport.sendto(pipeline.encode_datagram(Join(challenge.cookie)), address(three))
            refused = pipeline.decode_datagram(await asyncio.wait_for(inbox.get(), 2))[0]
            assert isinstance(refused, Challenge)  # another secret: not its cookie
            transport.sendto(pipeline.encode_datagram(Join(challenge.cookie)), address(two))
            welcome = pipeline.decode_datagram(await asyncio.wait_for(inbox.get(), 2))[0]
            assert isinstance(welcome, Welcome)
            transport.close()

    asyncio.run(scenario())


def test_player_numbers_avoid_blocks_other_relays_use() -> None:
    draws = iter([5, 5, 9, 9])
    numbers = PlayerNumbers(lambda: next(draws))
    assert numbers.next(set(), {5 * 65536 + 1}) == 9 * 65536 + 1  # 5 is another relay's
    assert numbers.next({9 * 65536 + 1}, set()) == 9 * 65536 + 2
    # Another relay started giving numbers in our block: ours moves on.
    again = PlayerNumbers(iter([3, 4]).__next__)
    assert again.next(set(), set()) == 3 * 65536 + 1
    assert again.next({3 * 65536 + 1}, {3 * 65536 + 1}) == 4 * 65536 + 1


def test_a_short_cookie_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        create_app(cookie_secret="short")
    with pytest.raises(ConfigError, match="not both"):
        create_app(cookies=JoinCookies(), cookie_secret=SECRET)
