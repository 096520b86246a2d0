"""Limits on loopback: hostile input, flow control, max_connections, timeouts.

Each hostile-input test runs a well-behaved client beside the attacker and
checks that only the attacker's connection ends, with a logged error, while
the other is served before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from typing import Any

import psutil
import pytest
from helpers_runtime import (
    FRAMINGS,
    Ping,
    Pong,
    echo_app,
    eventually,
    records,
    reset,
    run,
    tcp_socket,
    typed_pipeline,
    within,
)

from framework import LengthPrefix, Pipeline
from framework.core.errors import ConfigError
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed

MiB = 1024 * 1024


# -- hostile input ----------------------------------------------------------------------------


async def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may cut us off half way, which is the point."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError):
        await within(loop.sock_sendall(sock, data))


async def header_4gib(sock: socket.socket) -> None:
    await send_ignoring_reset(sock, b"\xff\xff\xff\xff" + b"x" * 100)


async def header_8byte_4gib(sock: socket.socket) -> None:
    await send_ignoring_reset(sock, (4 * 1024**3).to_bytes(8, "big") + b"x" * 100)


async def endless_line(sock: socket.socket) -> None:
    for _ in range(8):  # 256 KiB, four times the 64 KiB line limit, never a newline
        await send_ignoring_reset(sock, b"a" * 32768)
        await asyncio.sleep(0)


async def invalid_utf8(sock: socket.socket) -> None:
    await send_ignoring_reset(sock, b"caf\xc3\n\xff\xfe\xfd\n")


def framed(payload: bytes) -> bytes:
    return LengthPrefix().encode(payload)


async def msgpack_huge_array(sock: socket.socket) -> None:
    # An array32 announcing 4 billion elements in a 5-byte frame.
    await send_ignoring_reset(sock, framed(b"\xdd\xff\xff\xff\xff"))


async def msgpack_deep_nesting(sock: socket.socket) -> None:
    # 100,000 nested one-element arrays: 100 KB that would exhaust a recursive decoder.
    await send_ignoring_reset(sock, framed(b"\x91" * 100_000 + b"\xc0"))


async def msgpack_map_bomb(sock: socket.socket) -> None:
    # A map32 announcing 4 billion pairs, then nothing.
    await send_ignoring_reset(sock, framed(b"\xdf\xff\xff\xff\xff" + b"\xc0" * 64))


async def stream_nested_bomb(sock: socket.socket) -> None:
    await send_ignoring_reset(sock, b"\x91" * 5000 + b"\xc0")


async def stream_str_4gib(sock: socket.socket) -> None:
    # A str32 header announcing 4 GiB: refused from the header.
    await send_ignoring_reset(sock, b"\xdb\xff\xff\xff\xff" + b"x" * 100)


async def stream_garbage(sock: socket.socket) -> None:
    await send_ignoring_reset(sock, b"\xc1" * 10)  # 0xc1 is never valid msgpack


async def reset_mid_frame(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, (100).to_bytes(4, "big") + b"only ten b")
    await asyncio.sleep(0.05)  # let the server read the partial frame


HOSTILE = {
    "length-header-4GiB": ("length-prefix", header_4gib, "FrameTooLarge"),
    "length-header-8-byte-4GiB": ("length-prefix-8", header_8byte_4gib, "FrameTooLarge"),
    "endless-line": ("newline", endless_line, "FrameTooLarge"),
    "invalid-utf8": ("newline", invalid_utf8, "invalid UTF-8"),
    "msgpack-array-bomb": ("length-prefix", msgpack_huge_array, "DecodeError"),
    "msgpack-map-bomb": ("length-prefix", msgpack_map_bomb, "DecodeError"),
    "msgpack-deep-nesting": ("length-prefix", msgpack_deep_nesting, "DecodeError"),
    "msgpack-stream-nesting": ("msgpack-stream", stream_nested_bomb, "InvalidFrame"),
    "msgpack-stream-str-4GiB": ("msgpack-stream", stream_str_4gib, "FrameTooLarge"),
    "msgpack-stream-garbage": ("msgpack-stream", stream_garbage, "InvalidFrame"),
    "reset-mid-frame": ("length-prefix", reset_mid_frame, "mid-frame"),
}


def hostile_pipeline(name: str) -> Pipeline:
    if name == "length-prefix-8":
        return Pipeline(framing=LengthPrefix(prefix_size=8), codecs="msgpack")
    return FRAMINGS[name]()


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_hostile_input_ends_only_that_connection(
    attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    framing, send, logged = HOSTILE[attack]
    pipeline = hostile_pipeline(framing)
    app = echo_app(pipeline)
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)
    good_value: Any = "fine" if framing == "newline" else {"still": "fine"}
    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with (
            await App.start(app, "tcp://127.0.0.1:0") as server,
            connect(server.url, pipeline) as good,
        ):
            await good.send(good_value)
            assert await within(good.receive()) == good_value
            sock = tcp_socket(server.url)
            try:
                await eventually(lambda: len(server_conns) == 2)
                victim = server_conns[1]
                await send(sock)
                if attack == "reset-mid-frame":
                    reset(sock)
                else:
                    # The server ends the connection: we read its end (or a reset).
                    with contextlib.suppress(ConnectionError):
                        while await within(loop.sock_recv(sock, 65536)):
                            pass
                await within(victim.wait_closed())
            finally:
                sock.close()
            await good.send(good_value)
            assert await within(good.receive()) == good_value
            assert not server_conns[0].closed
            assert server.connections == {server_conns[0]}

        messages = [m for m in records(caplog) if f"#{victim.id}" in m]
        assert any(logged in m for m in messages), records(caplog, logging.DEBUG)
        assert not [m for m in records(caplog) if f"#{server_conns[0].id}" in m]
        assert victim.stats.errors >= 1

    run(main())


def test_hostile_bytes_after_good_frames_still_answer_the_good_ones() -> None:
    pipeline = FRAMINGS["length-prefix"]()
    app = echo_app(pipeline)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start("tcp://127.0.0.1:0") as server:
            with tcp_socket(server.url) as sock:
                wire = pipeline.encode_many([1, 2, 3]) + b"\xff\xff\xff\xff"
                await loop.sock_sendall(sock, wire)
                received = b""
                while chunk := await within(loop.sock_recv(sock, 65536)):
                    received += chunk
        assert pipeline.decoder().feed(received) == [1, 2, 3]

    run(main())


def test_peer_closing_mid_frame_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = FRAMINGS["length-prefix"]()
    app = echo_app(pipeline)
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start("tcp://127.0.0.1:0") as server:
            with tcp_socket(server.url) as sock:
                await loop.sock_sendall(sock, b"\x00\x00\x00\x10half")
                sock.shutdown(socket.SHUT_WR)
                await eventually(lambda: bool(server_conns) and server_conns[0].closed)
        assert any("mid-frame" in m for m in records(caplog))
        assert server_conns[0].stats.errors == 1

    run(main())


# -- flow control -------------------------------------------------------------------------------


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def sample_peak(stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], psutil.Process().memory_info().rss)
        await asyncio.sleep(0.02)


async def flood(sock: socket.socket, chunk: bytes, total: int, deadline: float) -> int:
    """Send ``chunk`` until ``total`` bytes went out or ``deadline`` passed; return bytes sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    view = memoryview(chunk)
    while sent < total and loop.time() < deadline:
        try:
            count = sock.send(view)
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        sent += count
        view = view[count:] if count < len(view) else memoryview(chunk)
        await asyncio.sleep(0)
    return sent


def test_peer_that_never_reads_cannot_grow_server_memory() -> None:
    """A peer floods an echo server and never reads a reply.

    Replies back up, the server stops reading from that peer, and the
    kernel's buffers stop the peer: it cannot get 200 MB in, server memory
    stays flat, and a second client is served meanwhile.
    """
    pipeline = Pipeline(framing="length-prefix")  # bytes in, the same bytes out
    app = echo_app(pipeline)
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)
    frame = pipeline.encode(b"x" * 1024)
    chunk = frame * 1024  # 1 MiB of 1 KiB frames

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start("tcp://127.0.0.1:0") as server:
            async with connect(server.url, pipeline) as warmup:
                await warmup.send(b"warm")
                await within(warmup.receive())
            before = rss()
            peak = [before]
            stop = asyncio.Event()
            sampler = asyncio.ensure_future(sample_peak(stop, peak))
            with tcp_socket(server.url) as sock:
                sock.setblocking(False)
                sender = asyncio.ensure_future(flood(sock, chunk, 200 * MiB, loop.time() + 3))
                await asyncio.sleep(0.5)
                async with connect(server.url, pipeline) as other:
                    for n in range(20):
                        await other.send(b"%d" % n)
                        assert await within(other.receive()) == b"%d" % n
                sent = await within(sender)
                flooder = server_conns[1]
                assert not flooder.closed
            stop.set()
            await sampler
        growth = peak[0] - before
        assert sent < 200 * MiB, "the server read everything: reading never paused"
        assert flooder.stats.bytes_in <= sent
        assert growth < 64 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB"

    run(main(), timeout=15)


def test_peer_streaming_200_mb_to_a_sink_keeps_memory_flat() -> None:
    """200 MB of frames to a handler that replies nothing: all read, none kept."""
    pipeline = Pipeline(framing="length-prefix")
    app = App(pipeline)
    counted = [0]

    @app.on(bytes)
    def sink(frame: bytes, conn: Connection) -> None:
        counted[0] += len(frame)

    payload = 64 * 1024 - 4
    chunk = pipeline.encode(b"y" * payload) * 16  # 1 MiB
    total = 200 * MiB

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await app.start("tcp://127.0.0.1:0") as server:
            before = rss()
            peak = [before]
            stop = asyncio.Event()
            sampler = asyncio.ensure_future(sample_peak(stop, peak))
            with tcp_socket(server.url) as sock:
                sender = asyncio.ensure_future(flood(sock, chunk, total, loop.time() + 10))
                await asyncio.sleep(0.2)
                async with connect(server.url, Pipeline(framing="length-prefix")) as other:
                    await other.send(b"hello")  # no reply from a sink: just not refused
                sent = await within(sender, 12)
                assert sent == total
                await eventually(lambda: counted[0] >= total // (payload + 4) * payload)
            stop.set()
            await sampler
        growth = peak[0] - before
        assert growth < 64 * MiB, f"server RSS grew by {growth / MiB:.1f} MiB"

    run(main(), timeout=20)


COUNT = 5000  # 20 MB of 4 KiB values: far beyond what the kernel's buffers hold


def test_client_pauses_reading_while_its_inbox_is_full() -> None:
    """A client that does not call receive() stops reading; the server's send() waits."""
    app = App(typed_pipeline())
    pushed = [0]
    finished = asyncio.Event

    async def main() -> None:
        done = finished()

        @app.on_connect
        async def push(conn: Connection) -> None:
            for n in range(COUNT):
                await conn.send(Pong(n, "z" * 4096))
                pushed[0] += 1
            done.set()

        async with await app.start("tcp://127.0.0.1:0") as server:
            limits = Limits(max_queued=16)
            async with connect(server.url, app.pipeline, limits=limits) as conn:
                await asyncio.sleep(0.3)
                stalled = pushed[0]
                assert stalled < COUNT, "the client never pushed back"
                assert conn.stats.frames_in < COUNT // 2
                received = [await within(conn.receive()) for _ in range(COUNT)]
                assert [value.n for value in received] == list(range(COUNT))
                await within(done.wait())

    run(main(), timeout=15)


def test_slow_async_handlers_pause_reading_at_max_inflight_handlers() -> None:
    app = App(typed_pipeline())
    running = [0, 0]  # now, most at once
    release = asyncio.Event

    async def main() -> None:
        gate = release()

        @app.on(Ping)
        async def slow(msg: Ping, conn: Connection) -> Pong:
            running[0] += 1
            running[1] = max(running[1], running[0])
            await gate.wait()
            running[0] -= 1
            return Pong(msg.n)

        limits = Limits(max_inflight_handlers=8)
        async with (
            await app.start("tcp://127.0.0.1:0", limits=limits) as server,
            connect(server.url, app.pipeline) as conn,
        ):
            for n in range(200):
                conn.send_nowait(Ping(n))
            await eventually(lambda: running[0] >= 8)
            await asyncio.sleep(0.1)
            assert running[1] == 8  # the rest were held back, and reading paused
            gate.set()
            replies = [await within(conn.receive()) for _ in range(200)]
            assert sorted(r.n for r in replies) == list(range(200))

    run(main())


# -- max_connections and timeouts -----------------------------------------------------------------


def test_connection_beyond_max_connections_is_closed_at_once() -> None:
    app = echo_app(typed_pipeline())
    hooks: list[str] = []
    app.on_connect(lambda conn: hooks.append("connect"))
    app.on_disconnect(lambda conn: hooks.append("disconnect"))

    async def main() -> None:
        limits = Limits(max_connections=2)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as server:
            first = await connect(server.url, app.pipeline)
            second = await connect(server.url, app.pipeline)
            for conn in (first, second):
                await conn.send(Ping(1))
                assert await within(conn.receive()) == Ping(1)
            third = await connect(server.url, app.pipeline)
            await within(third.wait_closed())
            with pytest.raises(ConnectionClosed):
                await third.receive()
            assert server.refused == 1
            assert hooks == ["connect", "connect"]  # nothing for the refused one
            for conn in (first, second):
                await conn.send(Ping(2))
                assert await within(conn.receive()) == Ping(2)
            first.close()
            await first.wait_closed()
            await eventually(lambda: len(server.connections) == 1)
            fourth = await connect(server.url, app.pipeline)
            await fourth.send(Ping(4))
            assert await within(fourth.receive()) == Ping(4)
            for conn in (second, fourth):
                conn.close()
                await conn.wait_closed()

    run(main())


def test_max_connections_counts_memory_connections_too() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        url = f"memory://limit-{id(app)}"
        async with await app.start(url, limits=Limits(max_connections=1)) as server:
            async with connect(url, app.pipeline) as first:
                refused = await connect(url, app.pipeline)
                await within(refused.wait_closed())
                await first.send(Ping(1))
                assert await within(first.receive()) == Ping(1)
            assert server.refused == 1

    run(main())


def test_idle_timeout_closes_a_silent_connection(caplog: pytest.LogCaptureFixture) -> None:
    app = echo_app(typed_pipeline())
    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(idle_timeout=0.2)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as server:
            silent = await connect(server.url, app.pipeline)
            chatty = await connect(server.url, app.pipeline)
            start = loop.time()
            for n in range(8):  # 0.4 s of traffic, a message every 0.05 s
                await chatty.send(Ping(n))
                assert await within(chatty.receive()) == Ping(n)
                await asyncio.sleep(0.05)
            await within(silent.wait_closed())
            assert 0.15 < loop.time() - start < 1.0
            assert not chatty.closed
            chatty.close()
            await chatty.wait_closed()
        assert any("idle" in m for m in records(caplog, logging.INFO))

    run(main())


# -- Limits itself ----------------------------------------------------------------------------


def test_limits_defaults_are_safe() -> None:
    limits = Limits()
    assert limits.max_connections == 10_000
    assert limits.idle_timeout == 300
    assert limits.max_datagram_size == 65_507
    assert limits.write_low_water < limits.write_high_water
    assert limits.max_inflight_handlers > 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_connections", 0),
        ("max_connections", -1),
        ("max_connections", 1.5),
        ("idle_timeout", 0),
        ("idle_timeout", "10"),
        ("handshake_timeout", None),
        ("shutdown_timeout", -1),
        ("write_high_water", None),
        ("max_queued", None),
        ("max_queued", True),
        ("max_datagram_size", None),
        ("max_peers", 0),
        ("max_inflight_handlers", None),
    ],
)
def test_limits_are_validated_eagerly_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option) as info:
        Limits(**{option: value})
    assert info.value.option == option


def test_low_water_above_high_water_is_refused() -> None:
    with pytest.raises(ConfigError, match="write_low_water"):
        Limits(write_high_water=1000, write_low_water=2000)


def test_none_disables_the_limits_that_allow_it() -> None:
    limits = Limits(max_connections=None, idle_timeout=None)
    assert limits.max_connections is None
    assert limits.idle_timeout is None


def test_idle_close_to_a_peer_that_never_reads_ends_in_an_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = Pipeline(framing="length-prefix")
    app = App(pipeline)
    server_conns: list[Connection] = []
    app.on_connect(server_conns.append)

    @app.on(bytes)
    def big(frame: bytes, conn: Connection) -> bytes:
        return b"r" * (8 * MiB)  # far more than the socket buffers take

    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(idle_timeout=0.2)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as server:
            with tcp_socket(server.url) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await loop.sock_sendall(sock, pipeline.encode(b"go"))
                start = loop.time()
                await eventually(lambda: bool(server_conns) and server_conns[0].closed)
                assert 0.3 < loop.time() - start < 2
                assert not server.connections
        messages = records(caplog, logging.INFO)
        assert any("idle" in m and "closing" in m for m in messages)
        assert any("aborting" in m for m in messages)

    run(main())
