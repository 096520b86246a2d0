"""UDP on loopback: one datagram is one frame, each peer address a virtual connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from helpers_runtime import (
    FRAMINGS,
    Ping,
    Pong,
    echo_app,
    eventually,
    needs_ipv6,
    records,
    run,
    typed_pipeline,
    within,
)

from framework import Datagram, Pipeline
from framework.core.errors import DecodeError, EncodeError, FrameTooLarge
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed
from framework.runtime.server import Server


@contextlib.contextmanager
def udp_socket(server: Server) -> Iterator[socket.socket]:
    """A plain UDP socket connected to ``server``, for datagrams the client API would refuse."""
    host, port = server.endpoint.host, server.endpoint.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.setblocking(False)
        yield sock


async def recv(sock: socket.socket) -> bytes:
    return await within(asyncio.get_running_loop().sock_recv(sock, 65536))


def typed_udp_app(**options: Any) -> App:
    app = App(typed_pipeline(), **options)

    @app.on(Ping)
    def ping(msg: Ping, conn: Connection) -> Pong:
        if msg.text == "boom":
            raise RuntimeError("handler failed")
        conn.state["count"] = conn.state.get("count", 0) + 1
        return Pong(conn.state["count"], str(conn.id))

    return app


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("[::1]", marks=needs_ipv6)])
def test_echo_of_typed_messages(host: str) -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        async with await app.start(f"udp://{host}:0") as server:
            assert server.url.startswith(f"udp://{host}:")
            assert server.url != f"udp://{host}:0"
            async with connect(server.url, app.pipeline) as conn:
                for n in range(5):
                    await conn.send(Ping(n, "é" * n))
                    assert await within(conn.receive()) == Ping(n, "é" * n)
                assert conn.stats.frames_out == conn.stats.frames_in == 5
            assert server.datagram_stats is not None
            assert server.datagram_stats.received == 5
            assert server.datagram_stats.sent == 5

    run(main())


def test_stream_framing_is_not_applied_to_datagrams() -> None:
    pipeline = FRAMINGS["newline"]()
    app = echo_app(pipeline)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            with udp_socket(server) as sock:
                sock.send(b"two\nlines, no framing")
                assert await recv(sock) == b"two\nlines, no framing"

    run(main())


def test_packed_datagrams_carry_several_frames_when_asked() -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="msgpack", datagram=Datagram(packed=True))
    app = echo_app(pipeline)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            with udp_socket(server) as sock:
                sock.send(pipeline.encode_many([1, 2, 3]))
                replies = [pipeline.decode_datagram(await recv(sock)) for _ in range(3)]
        assert replies == [[1], [2], [3]]

    run(main())


def test_oversize_datagrams_are_dropped_and_counted() -> None:
    app = typed_udp_app()

    async def main() -> None:
        limits = Limits(max_datagram_size=200)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            stats = server.datagram_stats
            assert stats is not None
            async with connect(server.url, app.pipeline) as good:
                with udp_socket(server) as attacker:
                    for _ in range(3):
                        attacker.send(app.pipeline.encode_datagram(Ping(1, "x" * 300)))
                    await good.send(Ping(1))
                    assert (await within(good.receive())).n == 1
                    await eventually(lambda: stats.dropped_oversize == 3)
                    # The attacker is dropped, not banned: a small datagram is served.
                    attacker.send(app.pipeline.encode_datagram(Ping(2)))
                    reply = app.pipeline.decode_datagram(await recv(attacker))
                    assert reply[0].n == 1
                await good.send(Ping(3))
                assert (await within(good.receive())).n == 2
            assert stats.received == 6
            assert stats.dropped_undecodable == 0

    run(main())


def test_datagram_over_the_pipeline_limit_counts_as_oversize() -> None:
    pipeline = Pipeline(codecs="msgpack", datagram=Datagram(max_frame_size=100))
    app = echo_app(pipeline)

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = server.datagram_stats
            assert stats is not None
            with udp_socket(server) as sock:
                sock.send(b"\x01" * 101)
                sock.send(pipeline.encode_datagram(1))
                assert await recv(sock) == b"\x01"
            assert stats.dropped_oversize == 1
            assert stats.dropped_undecodable == 0

    run(main())


@pytest.mark.parametrize(
    "garbage",
    [b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x91" * 5000, b"", b"\x81\xa4type\xa7unknown"],
    ids=["invalid-byte", "array-bomb", "deep-nesting", "empty", "unknown-type"],
)
def test_undecodable_datagrams_are_dropped_and_counted(
    garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    app = typed_udp_app()
    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            stats = server.datagram_stats
            assert stats is not None
            async with connect(server.url, app.pipeline) as good:
                with udp_socket(server) as attacker:
                    attacker.send(garbage)
                    await eventually(lambda: stats.dropped_undecodable == 1)
                    await good.send(Ping(1))
                    assert (await within(good.receive())).n == 1
                    attacker.send(app.pipeline.encode_datagram(Ping(1)))
                    assert app.pipeline.decode_datagram(await recv(attacker))[0].n == 1
            assert stats.dropped_oversize == 0
        assert any("dropped datagram" in m for m in records(caplog, logging.INFO))

    run(main())


def test_fallback_sees_undecodable_datagrams_and_replies() -> None:
    app = typed_udp_app()
    errors: list[DecodeError] = []

    @app.fallback
    def fallback(error: DecodeError, conn: Connection) -> Pong:
        errors.append(error)
        return Pong(-1, type(error).__name__)

    async def main() -> None:
        # A 30-byte answer to a 1-byte datagram is what reflection attacks
        # feed on: the default amplification bound would drop it (see
        # tests/runtime/test_udp_security.py). This test is about the fallback.
        limits = Limits(amplification_factor=None)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            with udp_socket(server) as sock:
                sock.send(b"\xc1")
                assert app.pipeline.decode_datagram(await recv(sock)) == [Pong(-1, "DecodeError")]
                sock.send(app.pipeline.encode_datagram(Pong(1)))  # no handler for Pong
                assert app.pipeline.decode_datagram(await recv(sock)) == [
                    Pong(-1, "UnknownMessageType")
                ]
            assert server.datagram_stats is not None
            assert server.datagram_stats.dropped_undecodable == 2

    run(main())


def test_each_peer_is_one_virtual_connection_with_its_own_state() -> None:
    app = typed_udp_app()
    connected: list[Connection] = []
    app.on_connect(connected.append)

    async def main() -> None:
        async with (
            await app.start("udp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as first,
            connect(server.url, app.pipeline) as second,
        ):
            replies = []
            for conn in (first, first, second, first, second):
                await conn.send(Ping(0))
                replies.append(await within(conn.receive()))
            assert [r.n for r in replies] == [1, 2, 1, 3, 2]
            first_id, second_id = replies[0].text, replies[2].text
            assert first_id != second_id
            assert {r.text for r in (replies[1], replies[3])} == {first_id}
            assert len(connected) == 2
            assert [str(c.id) for c in connected] == [first_id, second_id]
            sockname = first.transport.get_extra_info("sockname")  # type: ignore[attr-defined]
            assert connected[0].peer == sockname

    run(main())


def test_idle_peers_expire() -> None:
    app = typed_udp_app()
    events: list[tuple[str, int]] = []
    app.on_connect(lambda conn: events.append(("connect", conn.id)))
    app.on_disconnect(lambda conn: events.append(("disconnect", conn.id)))

    async def main() -> None:
        limits = Limits(idle_timeout=0.1)
        async with (
            await app.start("udp://127.0.0.1:0", limits=limits) as server,
            connect(server.url, app.pipeline) as conn,
        ):
            await conn.send(Ping(0))
            before = await within(conn.receive())
            await conn.send(Ping(0))
            assert (await within(conn.receive())).n == 2
            await eventually(lambda: len(events) == 2)
            assert events == [("connect", events[0][1]), ("disconnect", events[0][1])]
            await conn.send(Ping(0))
            after = await within(conn.receive())
            assert after.n == 1  # a new virtual connection: fresh state
            assert after.text != before.text
            assert events[2][0] == "connect"

    run(main())


def test_busy_peer_does_not_expire() -> None:
    app = typed_udp_app()

    async def main() -> None:
        limits = Limits(idle_timeout=0.15)
        async with (
            await app.start("udp://127.0.0.1:0", limits=limits) as server,
            connect(server.url, app.pipeline) as conn,
        ):
            for n in range(1, 9):  # 0.4 s, a datagram every 0.05 s
                await conn.send(Ping(0))
                assert (await within(conn.receive())).n == n
                await asyncio.sleep(0.05)

    run(main())


def test_hooks_run_on_first_datagram_and_on_server_close() -> None:
    app = typed_udp_app()
    events: list[str] = []

    @app.on_connect
    async def hello(conn: Connection) -> None:
        events.append("connect")

    @app.on_disconnect
    def bye(conn: Connection) -> None:
        events.append("disconnect")

    async def main() -> None:
        server = await app.start("udp://127.0.0.1:0")
        async with connect(server.url, app.pipeline) as conn:
            await asyncio.sleep(0.05)
            assert events == []  # nothing until a datagram arrives
            await conn.send(Ping(0))
            await within(conn.receive())
            await eventually(lambda: events == ["connect"])
            await server.close()
            assert events == ["connect", "disconnect"]

    run(main())


def test_handler_error_never_closes_a_udp_peer(caplog: pytest.LogCaptureFixture) -> None:
    app = typed_udp_app(handler_errors="close")
    connected: list[Connection] = []
    app.on_connect(connected.append)

    async def main() -> None:
        async with (
            await app.start("udp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            await conn.send(Ping(0))
            assert (await within(conn.receive())).n == 1
            await conn.send(Ping(0, "boom"))
            await conn.send(Ping(0))
            assert (await within(conn.receive())).n == 2  # same peer, state kept
            assert len(connected) == 1
            assert not connected[0].closed
            assert connected[0].stats.errors == 1
        [message] = [m for m in records(caplog, logging.ERROR) if "raised" in m]
        assert f"#{connected[0].id}" in message
        assert "handler for Ping raised" in message

    run(main())


def test_new_peers_beyond_max_peers_are_dropped() -> None:
    app = typed_udp_app()

    async def main() -> None:
        limits = Limits(max_peers=1)
        async with (
            await app.start("udp://127.0.0.1:0", limits=limits) as server,
            connect(server.url, app.pipeline) as first,
            connect(server.url, app.pipeline) as second,
        ):
            stats = server.datagram_stats
            assert stats is not None
            await first.send(Ping(0))
            await within(first.receive())
            await second.send(Ping(0))
            await eventually(lambda: stats.dropped_no_capacity == 1)
            await first.send(Ping(0))
            assert (await within(first.receive())).n == 2

    run(main())


def test_graceful_close_sends_replies_of_in_flight_handlers() -> None:
    app = App(typed_pipeline())
    started: list[int] = []

    @app.on(Ping)
    async def slow(msg: Ping, conn: Connection) -> Pong:
        started.append(msg.n)
        await asyncio.sleep(0.1)
        return Pong(msg.n)

    async def main() -> None:
        server = await app.start("udp://127.0.0.1:0")
        async with connect(server.url, app.pipeline) as conn:
            for n in range(5):
                await conn.send(Ping(n))
            await eventually(lambda: len(started) == 5)
            await within(server.close())
            replies = [await within(conn.receive()) for _ in range(5)]
            assert sorted(r.n for r in replies) == list(range(5))

    run(main())


def test_client_api_over_udp() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            conn = await connect(server.url, app.pipeline)
            assert conn.peer == (server.endpoint.host, server.endpoint.port)
            with pytest.raises(EncodeError):
                conn.send_nowait({"not": "a message"})
            await conn.send(Ping(1))
            assert await within(conn.receive()) == Ping(1)
            conn.close()
            await within(conn.wait_closed())
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            with pytest.raises(ConnectionClosed):
                await conn.send(Ping(2))

    run(main())


def test_largest_ipv4_datagram_round_trips_untruncated() -> None:
    pipeline = Pipeline()  # bytes in, the same bytes out
    app = echo_app(pipeline)
    payload = bytes(range(256)) * 255 + b"\xff" * (65_507 - 256 * 255)

    async def main() -> None:
        async with (
            await app.start("udp://127.0.0.1:0") as server,
            connect(server.url, pipeline) as conn,
        ):
            await conn.send(payload)
            assert await within(conn.receive()) == payload
            with pytest.raises(FrameTooLarge):  # 65,508 bytes cannot be one IPv4 datagram
                await conn.send(payload + b"!")

    run(main())
