"""``Limits.max_connections_per_peer`` on loopback: per IP address, per Unix path, in memory."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from helpers_runtime import (
    STREAM_TRANSPORTS,
    Ping,
    TlsFiles,
    client_options,
    echo_app,
    eventually,
    records,
    run,
    server_options,
    server_url,
    tls_files,
    typed_pipeline,
    within,
)

from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.connection import Connection
from framework.runtime.server import _peer_key

__all__ = ["tls_files"]  # the fixture, imported for pytest


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_connection_beyond_the_per_peer_limit_is_refused_and_counted(
    transport: str, tmp_path: Path, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    app = echo_app(typed_pipeline())
    connected: list[Connection] = []
    app.on_connect(connected.append)
    limits = Limits(max_connections_per_peer=2)
    caplog.set_level(logging.WARNING, logger="wirekit")

    async def main() -> None:
        url = server_url(transport, tmp_path)
        async with await app.start(url, limits=limits, **server_options(transport, tls_files)) as s:
            options = client_options(transport, tls_files)
            first = await connect(s.url, app.pipeline, **options)
            second = await connect(s.url, app.pipeline, **options)
            await eventually(lambda: len(s.connections) == 2)
            third = await connect(s.url, app.pipeline, **options)
            # Accepted by the kernel (and the TLS handshake), then closed by the server.
            await within(third.wait_closed())
            assert s.refused == 1
            assert len(connected) == 2  # the refused one never reached the application
            for conn in (first, second):
                await conn.send(Ping(1))
                assert await within(conn.receive()) == Ping(1)
            # A slot freed by a closing connection is free again.
            first.close()
            await first.wait_closed()
            await eventually(lambda: len(s.connections) == 1)
            fourth = await connect(s.url, app.pipeline, **options)
            await fourth.send(Ping(4))
            assert await within(fourth.receive()) == Ping(4)
            assert s.refused == 1
            for conn in (second, fourth):
                conn.close()
                await conn.wait_closed()

    run(main())
    refusals = [m for m in records(caplog) if "max_connections_per_peer" in m]
    assert len(refusals) == 1, records(caplog)


def test_the_limit_is_per_address_not_per_server() -> None:
    """A second loopback address has its own budget (127.0.0.2 is loopback on Linux)."""
    app = echo_app(typed_pipeline())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(max_connections_per_peer=1)
        async with await app.start("tcp://0.0.0.0:0", limits=limits) as server:
            port = server.endpoint.port
            one = await connect(f"tcp://127.0.0.1:{port}", app.pipeline)
            await eventually(lambda: server.connections_from("127.0.0.1") == 1)
            other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                other.bind(("127.0.0.2", 0))
            except OSError:  # pragma: no cover - a system without 127/8 on lo
                other.close()
                pytest.skip("127.0.0.2 is not a loopback address here")
            with other:
                other.setblocking(False)
                await within(loop.sock_connect(other, ("127.0.0.1", port)))
                await loop.sock_sendall(other, app.pipeline.encode(Ping(2)))
                reply = await within(loop.sock_recv(other, 1024))
                assert app.pipeline.decoder().feed(reply) == [Ping(2)]
                assert server.refused == 0
                assert server.connections_from("127.0.0.2") == 1
                again = await connect(f"tcp://127.0.0.1:{port}", app.pipeline)
                await within(again.wait_closed())
                assert server.refused == 1
            one.close()
            await one.wait_closed()
            await eventually(lambda: server.connections_from("127.0.0.1") == 0)
            await eventually(lambda: server.connections_from("127.0.0.2") == 0)

    run(main())


def test_none_turns_the_per_peer_limit_off() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        limits = Limits(max_connections_per_peer=None)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as server:
            conns = [await connect(server.url, app.pipeline) for _ in range(5)]
            for conn in conns:
                await conn.send(Ping(3))
                assert await within(conn.receive()) == Ping(3)
            assert server.refused == 0
            assert server.connections_from("127.0.0.1") == 5
            for conn in conns:
                conn.close()
                await conn.wait_closed()

    run(main())


@pytest.mark.parametrize(
    ("scheme", "peer", "key"),
    [
        ("tcp", ("127.0.0.1", 50000), "127.0.0.1"),
        ("tcp", ("::ffff:127.0.0.1", 50000, 0, 0), "127.0.0.1"),  # IPv4 on a dual-stack socket
        ("tls", ("::1", 50001, 0, 0), "::1"),
        ("tcp", ("fe80::1%eth0", 1, 0, 2), "fe80::1"),
        ("tcp", ("2001:DB8::1", 1, 0, 0), "2001:db8::1"),  # one spelling per address
        ("unix", "", "unix:"),
        ("memory", "memory://x#3", "memory:"),
    ],
)
def test_what_counts_as_one_peer_address(scheme: str, peer: object, key: str) -> None:
    assert _peer_key(scheme, peer) == key


def test_a_flood_of_refusals_logs_one_line_then_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = echo_app(typed_pipeline())
    caplog.set_level(logging.WARNING, logger="wirekit")
    refused = 40

    async def main() -> None:
        limits = Limits(max_connections_per_peer=1)
        async with await app.start("tcp://127.0.0.1:0", limits=limits) as s:
            kept = await connect(s.url, app.pipeline)
            await eventually(lambda: len(s.connections) == 1)
            for _ in range(refused):
                conn = await connect(s.url, app.pipeline)
                await within(conn.wait_closed())
            assert s.refused == refused
            # Within the interval: only the first refusal made a line.
            lines = [m for m in records(caplog) if "max_connections_per_peer" in m]
            assert len(lines) == 1, lines
            kept.close()
            await kept.wait_closed()
        # Closing the server reports what it held back.

    run(main())
    lines = [m for m in records(caplog) if "max_connections_per_peer" in m]
    assert lines[1:] == [
        f"refused {refused - 1} more connections (max_connections_per_peer) in the last 10 s"
    ]


def test_a_flood_of_bad_connections_logs_one_line_per_error_then_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = echo_app(typed_pipeline())
    caplog.set_level(logging.WARNING, logger="wirekit")
    bad = 12

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as s:
            for _ in range(bad):
                reader, writer = await asyncio.open_connection("127.0.0.1", s.endpoint.port)
                writer.write(b"\xff\xff\xff\xff")  # a length header far over max_frame_size
                assert await within(reader.read()) == b""  # closed by the server
                writer.close()
                await writer.wait_closed()
            closing = [m for m in records(caplog) if "closing: FrameTooLarge" in m]
            assert len(closing) == 1, closing

    run(main())
    assert [m for m in records(caplog) if m.startswith("closed ")] == [
        f"closed {bad - 1} more connections (FrameTooLarge) in the last 10 s"
    ]
