"""Stream transports on loopback: one app, every transport and framing, one client.

tcp, tcp over ::1, unix, tls and memory, each with the three stream framings;
frames split across many reads and many frames in one read; handler
behaviour; the Connection API; graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import (
    FRAMINGS,
    STREAM_TRANSPORTS,
    IoCounter,
    Ping,
    Pong,
    TlsFiles,
    client_options,
    decode_all,
    echo_app,
    eventually,
    raw_peer,
    records,
    run,
    sample_values,
    server_options,
    server_url,
    silent_server,
    tcp_socket,
    tls_files,
    typed_pipeline,
    within,
)

from framework import Pipeline
from framework.core.errors import DecodeError, EncodeError, TransportError, UnknownMessageType
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed

__all__ = ["tls_files"]  # the fixture, imported for pytest

ALL_FRAMINGS = list(FRAMINGS)


async def exchange(conn: Connection, values: list[Any]) -> None:
    """The client code every transport must pass: request/reply, then a batch."""
    for value in values:
        await conn.send(value)
        assert await within(conn.receive()) == value
    for value in values:
        conn.send_nowait(value)
    assert [await within(conn.receive()) for _ in values] == values


# -- one app, every transport, every framing ---------------------------------------------------


@pytest.mark.parametrize("framing", ALL_FRAMINGS)
@pytest.mark.parametrize("transport", [*STREAM_TRANSPORTS, "udp"])
def test_same_app_and_client_on_every_transport(
    transport: str, framing: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    pipeline = FRAMINGS[framing]()
    app = echo_app(pipeline)

    async def main() -> None:
        url = server_url(transport, tmp_path)
        async with await app.start(url, **server_options(transport, tls_files)) as server:
            assert not server.url.endswith(":0")
            async with connect(server.url, pipeline, **client_options(transport, tls_files)) as c:
                await exchange(c, sample_values(framing))

    run(main())


@pytest.mark.parametrize("framing", ALL_FRAMINGS)
@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_frames_split_across_many_reads(
    transport: str, framing: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    pipeline = FRAMINGS[framing]()
    app = echo_app(pipeline)
    counter = IoCounter(app)
    values = sample_values(framing, 4)
    wire = b"".join(pipeline.encode(value) for value in values)

    async def main() -> None:
        url = server_url(transport, tmp_path)
        async with await app.start(url, **server_options(transport, tls_files)) as server:
            tls = client_options(transport, tls_files).get("tls")
            async with raw_peer(server.url, tls) as peer:
                for index in range(len(wire)):
                    peer.write(wire[index : index + 1])
                    await asyncio.sleep(0)
                await peer.wait_for_bytes(len(wire))
                assert pipeline.decoder().feed(bytes(peer.received)) == values
        assert counter.reads > len(values)

    run(main())


@pytest.mark.parametrize("framing", ALL_FRAMINGS)
@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_many_frames_in_one_read_get_replies_in_one_write(
    transport: str, framing: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    pipeline = FRAMINGS[framing]()
    app = echo_app(pipeline)
    counter = IoCounter(app)
    values = sample_values(framing, 10) * 100
    wire = pipeline.encode_many(values)

    async def main() -> None:
        url = server_url(transport, tmp_path)
        async with await app.start(url, **server_options(transport, tls_files)) as server:
            tls = client_options(transport, tls_files).get("tls")
            async with raw_peer(server.url, tls) as peer:
                peer.write(wire)
                await peer.wait_for_bytes(len(wire))
                assert bytes(peer.received) == wire
        # Every complete frame of a chunk is handled in one pass and its
        # replies leave in one write: never one write per frame.
        assert counter.writes <= counter.reads
        assert counter.writes < len(values) // 10

    run(main())


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_plain_socket_one_byte_at_a_time(transport: str, tmp_path: Path) -> None:
    pipeline = FRAMINGS["length-prefix"]()
    app = echo_app(pipeline)
    counter = IoCounter(app)
    values = sample_values("length-prefix", 3)
    wire = b"".join(pipeline.encode(value) for value in values)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start(server_url(transport, tmp_path)) as server:
            with tcp_socket(server.url) as sock:
                for index in range(len(wire)):
                    await loop.sock_sendall(sock, wire[index : index + 1])
                    await asyncio.sleep(0.0005)
                received = b""
                while len(received) < len(wire):
                    received += await within(loop.sock_recv(sock, 65536))
        assert received == wire
        assert counter.reads > len(wire) // 4

    run(main())


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_plain_socket_thousand_frames_in_one_sendall(transport: str, tmp_path: Path) -> None:
    pipeline = FRAMINGS["length-prefix"]()
    app = echo_app(pipeline)
    counter = IoCounter(app)
    values = [{"seq": seq, "pad": "x" * (seq % 17)} for seq in range(1000)]
    wire = pipeline.encode_many(values)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start(server_url(transport, tmp_path)) as server:
            with tcp_socket(server.url) as sock:
                await loop.sock_sendall(sock, wire)
                decoder = pipeline.decoder()
                replies: list[Any] = []
                while len(replies) < len(values):
                    chunk = await within(loop.sock_recv(sock, 65536))
                    assert chunk, "server closed early"
                    replies += decoder.feed(chunk)
        assert replies == values
        assert counter.writes <= counter.reads < 100

    run(main())


# -- handlers -------------------------------------------------------------------------------


def typed_app(**options: Any) -> App:
    app = App(typed_pipeline(), **options)

    @app.on(Ping)
    def ping(msg: Ping, conn: Connection) -> Pong:
        if msg.text == "boom":
            raise RuntimeError("sync handler failed")
        return Pong(msg.n, "sync")

    @app.on(Pong)
    async def pong(msg: Pong, conn: Connection) -> Ping:
        await asyncio.sleep(0)
        if msg.text == "boom":
            raise RuntimeError("async handler failed")
        return Ping(msg.n, "async")

    return app


def test_sync_and_async_handlers_reply_with_their_return_value() -> None:
    app = typed_app()

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            await conn.send(Ping(1))
            assert await within(conn.receive()) == Pong(1, "sync")
            await conn.send(Pong(2))
            assert await within(conn.receive()) == Ping(2, "async")

    run(main())


def test_handler_that_returns_none_sends_nothing_and_may_send_itself() -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    async def stream(msg: Ping, conn: Connection) -> None:
        for index in range(msg.n):
            await conn.send(Pong(index))

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            await conn.send(Ping(3))
            assert [await within(conn.receive()) for _ in range(3)] == [
                Pong(0),
                Pong(1),
                Pong(2),
            ]
            await conn.send(Ping(0))
            await conn.send(Ping(1))
            assert await within(conn.receive()) == Pong(0)

    run(main())


@pytest.mark.parametrize("kind", [Ping, Pong], ids=["sync", "async"])
def test_handler_error_is_logged_and_closes_that_connection(
    kind: type, caplog: pytest.LogCaptureFixture
) -> None:
    app = typed_app()
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)
    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as good,
        ):
            await good.send(Ping(1))
            await within(good.receive())
            async with connect(server.url, app.pipeline) as bad:
                await bad.send(kind(7, "boom"))
                with pytest.raises(ConnectionClosed):
                    await within(bad.receive())
            await good.send(Ping(2))
            assert await within(good.receive()) == Pong(2, "sync")
            assert not server_conns[0].closed

        victim = server_conns[1]
        [record] = [r for r in caplog.records if "raised" in r.getMessage()]
        assert record.levelno == logging.ERROR
        assert f"#{victim.id}" in record.getMessage()
        assert f"handler for {kind.__name__} raised" in record.getMessage()
        assert record.exc_info is not None
        assert victim.stats.errors == 1

    run(main())


@pytest.mark.parametrize("kind", [Ping, Pong], ids=["sync", "async"])
def test_handler_error_keeps_the_connection_under_keep_policy(
    kind: type, caplog: pytest.LogCaptureFixture
) -> None:
    app = typed_app(handler_errors="keep")
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            await conn.send(kind(1, "boom"))
            await conn.send(Ping(2))
            assert await within(conn.receive()) == Pong(2, "sync")
            assert server_conns[0].stats.errors == 1
            assert not server_conns[0].closed
        assert any(f"handler for {kind.__name__} raised" in r.getMessage() for r in caplog.records)

    run(main())


def error_reply(name: str) -> dict[str, Any]:
    return {"type": "pong", "n": -1, "text": name}


def test_fallback_receives_decode_errors_and_replies() -> None:
    app = App(typed_pipeline())
    seen: list[Exception] = []

    @app.on(Ping)
    def ping(msg: Ping, conn: Connection) -> Pong:
        return Pong(msg.n)

    @app.fallback
    def fallback(error: DecodeError, conn: Connection) -> Any:
        seen.append(error)
        return Pong(-1, type(error).__name__)

    async def main() -> None:
        raw = FRAMINGS["length-prefix"]()  # same wire, no message layer
        async with await app.start("tcp://127.0.0.1:0") as server, connect(server.url, raw) as conn:
            await conn.send({"type": "nonsense", "x": 1})
            assert await within(conn.receive()) == error_reply("UnknownMessageType")
            await conn.send({"type": "ping", "n": "not an int"})
            assert await within(conn.receive()) == error_reply("InvalidMessage")
            await conn.send([1, 2, 3])
            assert await within(conn.receive()) == error_reply("InvalidMessage")
            await conn.send({"type": "pong", "n": 1})  # valid, but nobody handles Pong
            assert await within(conn.receive()) == error_reply("UnknownMessageType")
            await conn.send({"type": "ping", "n": 5})
            assert await within(conn.receive()) == {"type": "pong", "n": 5, "text": ""}
            assert server.connections  # still open
            [server_conn] = server.connections
            assert server_conn.stats.errors == 4

    run(main())
    assert all(isinstance(error, DecodeError) for error in seen)
    assert isinstance(seen[0], UnknownMessageType)
    assert seen[0].type_name == "nonsense"
    assert isinstance(seen[3], UnknownMessageType)
    assert seen[3].value == Pong(1)


def test_fallback_handles_undecodable_bytes_between_good_frames() -> None:
    pipeline = FRAMINGS["newline"]()
    app = echo_app(pipeline)

    @app.fallback
    async def fallback(error: DecodeError, conn: Connection) -> str:
        return f"bad frame: {error.offset}"

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server, raw_peer(server.url) as peer:
            peer.write(b"one\nt\xffo\nthree\n")
            replies = await within(decode_all(pipeline, peer, 3))
        assert sorted(replies) == ["bad frame: 1", "one", "three"]

    run(main())


def test_without_fallback_an_undecodable_frame_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = typed_app()
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)
    raw = FRAMINGS["length-prefix"]()

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as good,
        ):
            await good.send(Ping(1))
            await within(good.receive())
            async with connect(server.url, raw) as bad:
                await bad.send({"type": "nonsense"})
                with pytest.raises(ConnectionClosed):
                    await within(bad.receive())
            await good.send(Ping(2))
            assert await within(good.receive()) == Pong(2, "sync")
        victim = server_conns[1]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(f"#{victim.id}" in m and "UnknownMessageType" in m for m in warnings)

    run(main())


def test_fallback_that_raises_is_logged() -> None:
    app = typed_app(handler_errors="keep")

    @app.fallback
    def fallback(error: DecodeError, conn: Connection) -> None:
        raise RuntimeError("fallback failed")

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, FRAMINGS["length-prefix"]()) as conn,
        ):
            await conn.send({"type": "nonsense"})
            await conn.send({"type": "ping", "n": 1})
            assert await within(conn.receive()) == {"type": "pong", "n": 1, "text": "sync"}

    run(main())


def test_hooks_see_connect_and_disconnect() -> None:
    app = typed_app()
    events: list[tuple[str, int]] = []

    @app.on_connect
    def connected(conn: Connection) -> None:
        events.append(("connect", conn.id))

    @app.on_disconnect
    async def disconnected(conn: Connection) -> None:
        await asyncio.sleep(0)
        events.append(("disconnect", conn.id))

    @app.on_connect
    def broken_hook(conn: Connection) -> None:
        raise RuntimeError("a hook that raises does not stop the others")

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            async with connect(server.url, app.pipeline) as conn:
                await conn.send(Ping(1))
                await within(conn.receive())
            await eventually(lambda: len(events) == 2)
        assert events[0][0] == "connect"
        assert events[1] == ("disconnect", events[0][1])

    run(main())


# -- the Connection API -------------------------------------------------------------------------


def test_peer_and_state() -> None:
    app = App(typed_pipeline())
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    @app.on(Ping)
    def count(msg: Ping, conn: Connection) -> Pong:
        conn.state["count"] = conn.state.get("count", 0) + 1
        return Pong(conn.state["count"])

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as first,
            connect(server.url, app.pipeline) as second,
        ):
            for _ in range(3):
                await first.send(Ping(0))
                await within(first.receive())
            await second.send(Ping(0))
            assert await within(second.receive()) == Pong(1)
            await first.send(Ping(0))
            assert await within(first.receive()) == Pong(4)
            assert first.peer == (server.endpoint.host, server.endpoint.port)
            assert server_conns[0].peer[0] == "127.0.0.1"
            assert server_conns[0].peer != server_conns[1].peer
            assert first.state == {}
            assert "peer=" in repr(first)

    run(main())


def test_stats_count_frames_bytes_and_errors() -> None:
    app = typed_app(handler_errors="keep")
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    @app.fallback
    def fallback(error: DecodeError, conn: Connection) -> None:
        return None

    pipeline = app.pipeline
    requests = [Ping(n, "x" * n) for n in range(5)]

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, pipeline) as conn,
        ):
            for request in requests:
                await conn.send(request)
                await within(conn.receive())
            await conn.send(Ping(9, "boom"))  # handler error
            await conn.send(Pong(0, "boom"))  # async handler error
            await eventually(lambda: server_conns[0].stats.errors == 2)
            client, served = conn.stats, server_conns[0].stats
            sent = sum(len(pipeline.encode(r)) for r in requests)
            sent += len(pipeline.encode(Ping(9, "boom"))) + len(pipeline.encode(Pong(0, "boom")))
            replies = sum(len(pipeline.encode(Pong(r.n, "sync"))) for r in requests)
            assert (client.frames_out, client.bytes_out) == (7, sent)
            assert (client.frames_in, client.bytes_in) == (5, replies)
            assert (served.frames_in, served.bytes_in) == (7, sent)
            assert (served.frames_out, served.bytes_out) == (5, replies)
            assert client.errors == 0

    run(main())


def test_receive_raises_closed_after_every_queued_value_was_returned() -> None:
    app = App(typed_pipeline())

    @app.on_connect
    def greet_and_leave(conn: Connection) -> None:
        for n in range(3):
            conn.send_nowait(Pong(n))
        conn.close()

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            conn = await connect(server.url, app.pipeline)
            await conn.wait_closed()
            assert conn.closed
            assert [await conn.receive() for _ in range(3)] == [Pong(0), Pong(1), Pong(2)]
            for _ in range(2):
                with pytest.raises(ConnectionClosed):
                    await conn.receive()
            with pytest.raises(ConnectionClosed):
                await conn.send(Ping(1))
            with pytest.raises(ConnectionClosed):
                conn.send_nowait(Ping(1))
            conn.close()  # closing twice is harmless
            conn.abort()

    run(main())


def test_receive_waiting_is_woken_by_close() -> None:
    app = App(typed_pipeline())

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            conn = await connect(server.url, app.pipeline)
            waiting = asyncio.ensure_future(conn.receive())
            await asyncio.sleep(0.01)
            assert not waiting.done()
            await eventually(lambda: len(server.connections) == 1)
            for server_conn in server.connections:
                server_conn.close()
            with pytest.raises(ConnectionClosed):
                await within(waiting)

    run(main())


def test_close_is_graceful_and_flushes_pending_writes() -> None:
    app = App(typed_pipeline())
    received: list[int] = []
    done = asyncio.Event

    @app.on(Ping)
    def record(msg: Ping, conn: Connection) -> None:
        received.append(msg.n)

    async def main() -> None:
        gone = done()
        app.on_disconnect(lambda conn: gone.set())
        async with await app.start("tcp://127.0.0.1:0") as server:
            conn = await connect(server.url, app.pipeline)
            for n in range(2000):
                conn.send_nowait(Ping(n, "payload" * 20))
            conn.close()
            with pytest.raises(ConnectionClosed):
                conn.send_nowait(Ping(-1))
            await within(conn.wait_closed())
            await within(gone.wait())
        assert received == list(range(2000))

    run(main())


def test_abort_drops_pending_writes_and_ends_both_sides() -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    def ignore(msg: Ping, conn: Connection) -> None:
        return None

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            conn = await connect(server.url, app.pipeline)
            await eventually(lambda: len(server.connections) == 1)
            conn.send_nowait(Ping(1))
            conn.abort()
            await within(conn.wait_closed())
            assert conn.closed
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            await eventually(lambda: not server.connections)

    run(main())


def test_send_waits_while_the_peer_does_not_read() -> None:
    pipeline = FRAMINGS["length-prefix"]()

    async def main() -> None:
        async with silent_server() as (port, accepted):
            limits = Limits(write_high_water=64 * 1024, write_low_water=16 * 1024)
            conn = await connect(f"tcp://127.0.0.1:{port}", pipeline, limits=limits)
            await eventually(lambda: bool(accepted))
            accepted[0].transport.pause_reading()
            chunk = b"x" * 65536
            sent = 0
            blocked = False
            while sent < 256 * 1024 * 1024:
                try:
                    await asyncio.wait_for(conn.send(chunk), 0.2)
                except TimeoutError:
                    blocked = True
                    break
                sent += len(chunk)
            assert blocked, "send never waited for the peer"
            assert sent < 64 * 1024 * 1024
            conn.abort()
            await conn.wait_closed()

    run(main(), timeout=15)


def test_connect_to_nothing_is_a_transport_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with silent_server() as (port, _accepted):
            pass  # a port that was just free: nothing listens there now
        pipeline = FRAMINGS["length-prefix"]()
        with pytest.raises(TransportError, match="cannot connect"):
            await connect(f"tcp://127.0.0.1:{port}", pipeline)
        with pytest.raises(TransportError, match="cannot connect"):
            await connect(f"unix://{tmp_path}/missing.sock", pipeline)
        with pytest.raises(TransportError, match="nothing listens"):
            await connect("memory://nobody-home", pipeline)

    run(main())


def test_listening_twice_on_one_address_is_a_transport_error(tmp_path: Path) -> None:
    app = echo_app(FRAMINGS["length-prefix"]())

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            with pytest.raises(TransportError, match="cannot listen"):
                await app.start(server.url)
        url = f"memory://twice-{id(app)}"
        async with await app.start(url):
            with pytest.raises(TransportError, match="already in use"):
                await app.start(url)
        async with await app.start(f"unix://{tmp_path}/s.sock") as server:
            with pytest.raises(TransportError, match="cannot listen"):
                await app.start(server.url)

    run(main())


def test_unix_socket_file_is_removed_on_close(tmp_path: Path) -> None:
    app = echo_app(FRAMINGS["length-prefix"]())
    path = tmp_path / "s.sock"

    async def main() -> None:
        async with await app.start(f"unix://{path}"):
            assert path.exists()
        assert not path.exists()

    run(main())


# -- graceful shutdown ----------------------------------------------------------------------------


def test_close_lets_in_flight_handlers_finish_and_loses_no_reply() -> None:
    app = App(typed_pipeline())
    started: list[int] = []

    @app.on(Ping)
    async def slow(msg: Ping, conn: Connection) -> Pong:
        started.append(msg.n)
        await asyncio.sleep(0.05 + 0.01 * (msg.n % 5))
        return Pong(msg.n)

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        clients = [await connect(server.url, app.pipeline) for _ in range(3)]
        for index, conn in enumerate(clients):
            for n in range(5):
                conn.send_nowait(Ping(index * 10 + n))
        await eventually(lambda: len(started) == 15)
        await within(server.close())
        for index, conn in enumerate(clients):
            replies = [await within(conn.receive()) for _ in range(5)]
            assert sorted(r.n for r in replies) == [index * 10 + n for n in range(5)]
            with pytest.raises(ConnectionClosed):
                await within(conn.receive())
        with pytest.raises(TransportError):
            await connect(server.url, app.pipeline)

    run(main())


async def receive_until_closed(conn: Connection) -> list[Any]:
    values = []
    while True:
        try:
            values.append(await within(conn.receive()))
        except ConnectionClosed:
            return values


def test_close_does_not_start_handlers_for_requests_arriving_during_shutdown() -> None:
    app = App(typed_pipeline())
    started: list[int] = []

    @app.on(Ping)
    async def slow(msg: Ping, conn: Connection) -> Pong:
        started.append(msg.n)
        await asyncio.sleep(0.1)
        return Pong(msg.n)

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        conn = await connect(server.url, app.pipeline)
        await conn.send(Ping(1))
        await eventually(lambda: started == [1])
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.02)
        conn.send_nowait(Ping(2))  # arrives while the server shuts down
        await within(closing)
        replies = await receive_until_closed(conn)
        # Every handler that started finished and its reply arrived.
        assert [r.n for r in replies] == started

    run(main())


def test_close_cancels_handlers_that_outlast_the_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    async def stuck(msg: Ping, conn: Connection) -> Pong:
        await asyncio.sleep(30)
        return Pong(msg.n)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await app.start("tcp://127.0.0.1:0", limits=Limits(shutdown_timeout=0.2))
        conn = await connect(server.url, app.pipeline)
        await conn.send(Ping(1))
        await eventually(lambda: bool(server.connections))
        await asyncio.sleep(0.02)
        start = loop.time()
        await within(server.close())
        assert loop.time() - start < 1.5
        with pytest.raises(ConnectionClosed):
            await within(conn.receive())

    run(main())


def test_close_does_not_hang_on_a_peer_that_never_reads() -> None:
    pipeline = FRAMINGS["length-prefix"]()
    app = echo_app(pipeline)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(shutdown_timeout=0.3)
        server = await app.start("tcp://127.0.0.1:0", limits=limits)
        sock = tcp_socket(server.url)
        payload = pipeline.encode(b"x" * 60000) * 16
        try:
            # Fill both directions until the server stops reading from us.
            for _ in range(200):
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, payload), 0.2)
                except TimeoutError:
                    break
            start = loop.time()
            await within(server.close())
            assert loop.time() - start < 2
        finally:
            sock.close()

    run(main(), timeout=20)


def test_server_context_manager_and_repr() -> None:
    app = echo_app(FRAMINGS["length-prefix"]())

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        assert repr(server).startswith("<Server tcp://127.0.0.1:")
        assert server.datagram_stats is None
        async with server:
            pass
        await within(server.wait_closed())
        await within(server.close())  # a second close returns at once

    run(main())


def test_peer_that_half_closes_still_gets_replies_of_running_handlers() -> None:
    pipeline = FRAMINGS["newline"]()
    app = App(pipeline)

    @app.on(str)
    async def slow_upper(line: str, conn: Connection) -> str:
        await asyncio.sleep(0.05)
        return line.upper()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start("tcp://127.0.0.1:0") as server:
            with tcp_socket(server.url) as sock:
                await loop.sock_sendall(sock, b"one\ntwo\n")
                sock.shutdown(socket.SHUT_WR)  # like `printf 'one\ntwo\n' | nc`
                received = b""
                while chunk := await within(loop.sock_recv(sock, 65536)):
                    received += chunk
            assert sorted(received.splitlines()) == [b"ONE", b"TWO"]
            await eventually(lambda: not server.connections)

    run(main())


def test_send_of_a_value_that_cannot_be_encoded_raises_and_sends_nothing() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            with pytest.raises(EncodeError):
                await conn.send({"not": "a registered message"})
            assert conn.stats.frames_out == 0
            await conn.send(Ping(1))
            assert await within(conn.receive()) == Ping(1)

    run(main())


def test_a_reply_that_cannot_be_encoded_does_not_cost_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    def reply(msg: Ping, conn: Connection) -> Any:
        return object() if msg.n == 2 else Pong(msg.n)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            for n in range(1, 4):
                conn.send_nowait(Ping(n))  # one write: the replies share a batch
            assert await within(conn.receive()) == Pong(1)
            assert await within(conn.receive()) == Pong(3)
            [served] = server.connections
            assert served.stats.errors == 1
            assert served.stats.frames_out == 2
        assert any("cannot encode reply object" in m for m in records(caplog, logging.ERROR))

    run(main())


def test_a_client_connection_is_not_closed_for_being_idle() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            limits = Limits(idle_timeout=0.05)
            async with connect(server.url, app.pipeline, limits=limits) as conn:
                await asyncio.sleep(0.2)
                assert not conn.closed
                await conn.send(Ping(1))
                assert await within(conn.receive()) == Ping(1)

    run(main())


def test_concurrent_receivers_each_get_a_value() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        async with (
            await app.start("memory://concurrent-receivers") as server,
            connect(server.url, app.pipeline) as conn,
        ):
            waiting = [asyncio.ensure_future(conn.receive()) for _ in range(3)]
            await asyncio.sleep(0)
            for n in range(3):
                await conn.send(Ping(n))
            values = await within(asyncio.gather(*waiting))
            assert sorted(value.n for value in values) == [0, 1, 2]

    run(main())


def test_serve_runs_until_sigterm_then_shuts_down_gracefully() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    app = App(typed_pipeline())
    started = asyncio.Event

    @app.on(Ping)
    async def slow(msg: Ping, conn: Connection) -> Pong:
        await asyncio.sleep(0.1)
        return Pong(msg.n)

    async def main() -> None:
        ready = started()
        servers: list[Any] = []

        def on_ready(server: Any) -> None:
            servers.append(server)
            ready.set()

        serving = asyncio.ensure_future(app.serve("tcp://127.0.0.1:0", ready=on_ready))
        await within(ready.wait())
        conn = await connect(servers[0].url, app.pipeline)
        await conn.send(Ping(1))
        await asyncio.sleep(0.02)  # the handler is running
        signal.raise_signal(signal.SIGTERM)
        await within(serving)
        assert await within(conn.receive()) == Pong(1)
        with pytest.raises(ConnectionClosed):
            await within(conn.receive())

    previous = signal.getsignal(signal.SIGTERM)
    run(main())
    assert signal.getsignal(signal.SIGTERM) == previous


def test_serve_stops_when_cancelled() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        servers: list[Any] = []
        serving = asyncio.ensure_future(app.serve("tcp://127.0.0.1:0", ready=servers.append))
        await eventually(lambda: bool(servers))
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        await within(servers[0].wait_closed())
        with pytest.raises(TransportError):
            await connect(servers[0].url, app.pipeline)

    run(main())


def test_a_signal_sent_as_soon_as_serve_announces_readiness_shuts_down_gracefully() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    app = echo_app(typed_pipeline())
    stray: list[int] = []

    def ready(server: Any) -> None:
        signal.raise_signal(signal.SIGTERM)  # e.g. a supervisor reacting to the banner

    async def main() -> None:
        await within(app.serve("tcp://127.0.0.1:0", ready=ready))

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    try:
        run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stray == [], "the signal arrived before serve() installed its handler"


def test_replies_keep_the_order_handlers_produced_them() -> None:
    """A reply returned by one handler and a value sent by the next go out in order."""
    pipeline = Pipeline(framing="newline", codecs="utf-8")
    app = App(pipeline)

    @app.on(str)
    def handle(line: str, conn: Connection) -> str | None:
        if line == "a":
            return "reply-to-a"
        conn.send_nowait(f"sent-during-{line}")
        return None

    async def scenario() -> list[str]:
        server = await app.start("tcp://127.0.0.1:0")
        try:
            async with raw_peer(server.url) as peer:
                peer.transport.write(b"a\nb\n")  # one chunk, two frames
                return list(await decode_all(pipeline, peer, 2))
        finally:
            await server.close()

    assert run(scenario()) == ["reply-to-a", "sent-during-b"]


def test_abstract_unix_socket_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"@wirekit-test-{os.getpid()}"
    pipeline = typed_pipeline()

    async def scenario() -> Any:
        server = await echo_app(pipeline).start(f"unix://{name}")
        try:
            async with connect(f"unix://{name}", pipeline) as conn:
                await conn.send(Ping(1))
                return await within(conn.receive())
        finally:
            await server.close()

    assert run(scenario()) == Ping(1)
    assert list(tmp_path.iterdir()) == []
