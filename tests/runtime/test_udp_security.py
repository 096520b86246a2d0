"""UDP security on loopback: authentication, replay, rotation, amplification, rate limits.

Each scenario runs an attacker (a plain socket) next to a legitimate client
on the same server socket: the attacker's datagrams are dropped and counted,
the legitimate client goes on being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from helpers_runtime import Ping, Pong, eventually, needs_ipv6, records, run, within

from framework import Datagram, FrameTooLarge, Pipeline
from framework.core.limits import Limits
from framework.core.security import OVERHEAD, HmacAuth
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection
from framework.runtime.datagram import DatagramPeer
from framework.runtime.datagram_client import DatagramClient
from framework.runtime.server import Server

KEY = b"k" * 32
NEW_KEY = b"n" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pipeline_with(auth: HmacAuth | None) -> Pipeline:
    return Pipeline(
        framing="length-prefix",
        codecs="msgpack",
        messages=[Ping, Pong],
        datagram=Datagram(auth=auth) if auth is not None else None,
    )


def ping_app(pipeline: Pipeline, *, reply_size: int = 0) -> tuple[App, list[Connection]]:
    """Replies Pong(n, padding) to Ping(n); Ping(n, "verify") verifies the peer's address."""
    app = App(pipeline)
    connected: list[Connection] = []

    @app.on_connect
    def joined(conn: Connection) -> None:
        connected.append(conn)

    @app.on(Ping)
    def ping(msg: Ping, conn: Connection) -> Pong:
        if msg.text == "verify":
            assert isinstance(conn, DatagramPeer)
            conn.verify_address()
        return Pong(msg.n, "x" * reply_size)

    return app, connected


@contextlib.contextmanager
def udp_socket(server: Server) -> Iterator[socket.socket]:
    """A plain UDP socket connected to ``server``: the attacker, or a victim's address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server.endpoint.host, server.endpoint.port))
        sock.setblocking(False)
        yield sock


async def recv(sock: socket.socket) -> bytes:
    return await within(asyncio.get_running_loop().sock_recv(sock, 65536))


def udp_stats(server: Server) -> Any:
    stats = server.datagram_stats
    assert stats is not None
    return stats


def test_forged_replayed_truncated_and_oversize_datagrams_cost_only_themselves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit")
    auth = HmacAuth({1: KEY})
    pipeline = pipeline_with(auth)
    app, connected = ping_app(pipeline)

    async def main() -> None:
        limits = Limits(max_datagram_size=512)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            stats = udp_stats(server)
            async with connect(server.url, pipeline) as good:
                await good.send(Ping(1))
                assert await within(good.receive()) == Pong(1)

                victim = auth.session()  # datagrams an eavesdropper captured
                captured = victim.seal(pipeline.encode_datagram(Ping(50)))
                flipped = bytearray(victim.seal(pipeline.encode_datagram(Ping(51))))
                flipped[-1] ^= 0x01
                with udp_socket(server) as attacker, udp_socket(server) as spoofer:
                    attacker.send(b"\x00" * 64)  # forged: no key
                    attacker.send(bytes(flipped))  # forged: one bit changed
                    attacker.send(captured[: OVERHEAD - 1])  # truncated
                    attacker.send(captured[:-1])  # truncated tag
                    attacker.send(b"\x10" + b"\x09" + b"\x00" * 40)  # unknown key id 9
                    attacker.send(b"x" * 600)  # oversize
                    attacker.send(captured)  # authentic, first time: served
                    assert pipeline.decode_datagram(victim.open(await recv(attacker))) == [Pong(50)]
                    attacker.send(captured)  # replayed from the same address
                    spoofer.send(captured)  # replayed from another address
                    await eventually(lambda: stats.dropped_replayed == 2)
                    await eventually(lambda: stats.dropped_unauthenticated == 5)
                    await good.send(Ping(2))
                    assert await within(good.receive()) == Pong(2)
            assert stats.dropped_oversize == 1
            assert stats.dropped_undecodable == 0
            assert stats.received == 11
            # Only the two authentic addresses ever became peers.
            assert len(connected) == 2
        logged = records(caplog, logging.INFO)
        assert any("unknown authentication format" in line for line in logged)
        assert any("seen before" in line for line in logged)
        assert all(KEY.decode() not in line for line in logged)

    run(main())


def test_an_authenticated_client_drops_forged_and_replayed_replies() -> None:
    auth = HmacAuth({1: KEY})
    pipeline = pipeline_with(auth)

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake_server:
            fake_server.bind(("127.0.0.1", 0))
            fake_server.settimeout(5)  # read from a thread: uvloop has no sock_recvfrom
            port = fake_server.getsockname()[1]
            async with connect(f"udp://127.0.0.1:{port}", pipeline) as client:
                assert isinstance(client, DatagramClient)
                await client.send(Ping(1))
                data, addr = await within(asyncio.to_thread(fake_server.recvfrom, 65536))
                session, payload = auth.responder().open(data)
                assert pipeline.decode_datagram(payload) == [Ping(1)]
                reply = session.seal(pipeline.encode_datagram(Pong(1)))
                for datagram in (reply, reply, b"forged" * 10, reply[:-3]):
                    fake_server.sendto(datagram, addr)
                assert await within(client.receive()) == Pong(1)
                stats = client.datagram_stats
                await eventually(lambda: stats.received == 4)
                assert stats.dropped_replayed == 1
                assert stats.dropped_unauthenticated == 2

    run(main())


def test_old_key_is_accepted_during_rotation_then_refused() -> None:
    clock = FakeClock()
    server_auth = HmacAuth({1: KEY}, grace=30, clock=clock)
    client_auth = HmacAuth({1: KEY})
    app, _ = ping_app(pipeline_with(server_auth))
    client_pipeline = pipeline_with(client_auth)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = udp_stats(server)
            async with connect(server.url, client_pipeline) as client:
                await client.send(Ping(1))
                assert await within(client.receive()) == Pong(1)

                server_auth.add_key(2, NEW_KEY)  # 1. servers accept the new key
                client_auth.add_key(2, NEW_KEY)  # 2. clients accept it too
                server_auth.use(2)  # 3. servers seal with it; key 1 has 30 s left
                await client.send(Ping(2))  # still sealed with key 1: accepted
                assert await within(client.receive()) == Pong(2)

                clock.now += 31  # the grace period is over
                await client.send(Ping(3))
                await eventually(lambda: stats.dropped_unauthenticated == 1)
                client_auth.use(2)  # a late client moves to the new key
                await client.send(Ping(4))
                assert await within(client.receive()) == Pong(4)
            assert server_auth.key_ids == (2,)

    run(main())


def test_replies_to_an_unverified_address_stay_within_three_times_what_it_sent() -> None:
    # No authentication: the server cannot tell a spoofed source address from
    # a real one, so the victim's socket stands in for a spoofed address.
    app, connected = ping_app(pipeline_with(None), reply_size=200)
    pipeline = app.pipeline

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = udp_stats(server)
            with udp_socket(server) as victim:
                requests = [pipeline.encode_datagram(Ping(n)) for n in range(20)]
                for request in requests:
                    victim.send(request)
                await eventually(lambda: stats.received == 20)
                [peer] = connected
                assert not peer.address_verified  # type: ignore[attr-defined]
                sent_to_us = sum(len(r) for r in requests)
                received = [await recv(victim) for _ in range(stats.sent)]
                assert 0 < sum(map(len, received)) <= 3 * sent_to_us
                assert stats.dropped_amplification == 20 - stats.sent > 0
                assert peer.stats.bytes_out <= 3 * peer.stats.bytes_in

                # Once the peer proves it receives (here: the app says so),
                # replies flow whatever their size.
                victim.send(pipeline.encode_datagram(Ping(99, "verify")))
                assert pipeline.decode_datagram(await recv(victim)) == [Pong(99, "x" * 200)]
                assert peer.address_verified  # type: ignore[attr-defined]
                before = stats.dropped_amplification
                for n in range(5):
                    victim.send(pipeline.encode_datagram(Ping(n)))
                    assert pipeline.decode_datagram(await recv(victim))[0].n == n
                assert stats.dropped_amplification == before

    run(main())


def test_an_authenticated_peer_is_verified_and_not_bounded() -> None:
    auth = HmacAuth({1: KEY})
    pipeline = pipeline_with(auth)
    app, connected = ping_app(pipeline, reply_size=1000)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            async with connect(server.url, pipeline) as client:
                for n in range(5):
                    await client.send(Ping(n))
                    assert await within(client.receive()) == Pong(n, "x" * 1000)
            [peer] = connected
            assert peer.address_verified  # type: ignore[attr-defined]
            assert peer.stats.bytes_out > 10 * peer.stats.bytes_in
            assert udp_stats(server).dropped_amplification == 0

    run(main())


def test_a_fallback_answer_to_a_tiny_datagram_is_not_amplified() -> None:
    app, _ = ping_app(pipeline_with(None))

    @app.fallback
    def fallback(error: Exception, conn: Connection) -> Pong:
        return Pong(-1, type(error).__name__)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = udp_stats(server)
            with udp_socket(server) as victim:
                victim.send(b"\xc1")  # 1 byte in: a 30-byte answer would be 30x
                await eventually(lambda: stats.dropped_amplification == 1)
            assert stats.dropped_undecodable == 1
            assert stats.sent == 0

    run(main())


def test_amplification_bound_can_be_turned_off() -> None:
    app, _ = ping_app(pipeline_with(None), reply_size=500)

    async def main() -> None:
        limits = Limits(amplification_factor=None)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            async with connect(server.url, app.pipeline) as client:
                await client.send(Ping(1))
                assert await within(client.receive()) == Pong(1, "x" * 500)
            assert udp_stats(server).dropped_amplification == 0

    run(main())


def test_a_peer_over_its_rate_loses_the_excess_and_others_are_served() -> None:
    app, _ = ping_app(pipeline_with(None))
    # A rate so slow that no token comes back during the test: exactly the
    # burst gets through, whatever the machine's speed.
    limits = Limits(max_frames_per_second=0.001, frame_burst=5)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            stats = udp_stats(server)
            async with (
                connect(server.url, app.pipeline) as flooder,
                connect(server.url, app.pipeline) as polite,
            ):
                for n in range(20):
                    await flooder.send(Ping(n))
                await eventually(lambda: stats.received == 20)
                assert [await within(flooder.receive()) for _ in range(5)] == [
                    Pong(n) for n in range(5)
                ]
                assert stats.dropped_rate_limited == 15
                await polite.send(Ping(100))  # its own bucket
                assert await within(polite.receive()) == Pong(100)
            assert stats.dropped_undecodable == 0

    run(main())


def test_the_rate_limit_applies_to_authentic_datagrams_only() -> None:
    # Forgeries from a peer's address must not use up its tokens.
    auth = HmacAuth({1: KEY})
    pipeline = pipeline_with(auth)
    app, _ = ping_app(pipeline)
    limits = Limits(max_frames_per_second=0.001, frame_burst=3)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            stats = udp_stats(server)
            async with connect(server.url, pipeline) as client:
                with udp_socket(server) as attacker:
                    for _ in range(10):
                        attacker.send(b"\x10\x01" + b"\x00" * 40)
                await eventually(lambda: stats.dropped_unauthenticated == 10)
                for n in range(3):
                    await client.send(Ping(n))
                    assert await within(client.receive()) == Pong(n)
                await client.send(Ping(3))
                await eventually(lambda: stats.dropped_rate_limited == 1)

    run(main())


@pytest.mark.parametrize("authenticated", [True, False], ids=["forged", "undecodable"])
def test_a_flood_of_bad_datagrams_logs_a_few_lines_not_one_per_datagram(
    authenticated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wirekit")
    app, connected = ping_app(pipeline_with(HmacAuth({1: KEY}) if authenticated else None))

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = udp_stats(server)
            with udp_socket(server) as attacker:
                # 100 fit in the kernel's socket buffer: none is lost before
                # the server sees it.
                for _ in range(100):
                    attacker.send(b"\xc1" * 60)
            await eventually(
                lambda: stats.dropped_unauthenticated + stats.dropped_undecodable == 100
            )
            if authenticated:
                assert connected == []  # no peer, no hook, for a forgery

    run(main())
    lines = [line for line in records(caplog, logging.DEBUG) if "dropped datagram" in line]
    assert 1 <= len(lines) < 30


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("[::1]", marks=needs_ipv6)])
def test_authenticated_echo_over_ipv4_and_ipv6(host: str) -> None:
    auth = HmacAuth({1: KEY})
    pipeline = pipeline_with(auth)
    app, _ = ping_app(pipeline)

    async def main() -> None:
        async with await app.start(f"udp://{host}:0") as server:
            async with connect(server.url, pipeline_with(HmacAuth({1: KEY}))) as client:
                for n in range(3):
                    await client.send(Ping(n))
                    assert await within(client.receive()) == Pong(n)
            stats = udp_stats(server)
            assert stats.dropped_unauthenticated == stats.dropped_replayed == 0

    run(main())


def test_a_send_too_large_once_sealed_raises_and_sends_nothing() -> None:
    small = Pipeline(codecs="bytes", datagram=Datagram(auth=HmacAuth({1: KEY}), max_frame_size=100))
    app = App(small)

    @app.on(bytes)
    def echo(data: bytes, conn: Connection) -> bytes:
        return data

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            async with connect(server.url, small) as client:
                with pytest.raises(FrameTooLarge):
                    await client.send(b"x" * 80)  # 80 + 34 > 100
                await client.send(b"x" * 66)  # 66 + 34 = 100: fits
                assert await within(client.receive()) == b"x" * 66
            assert udp_stats(server).received == 1

    run(main())
