"""Graceful shutdown under load: every reply produced before it reaches its client.

Many clients pipeline requests at a server; the server is closed while they
are in flight. Per client, the replies the server produced are counted in the
handlers and the replies that arrived are counted at the client: they must be
equal, in order, and every request the server decoded was either answered or
its connection ended with a logged error.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import (
    TlsFiles,
    client_options,
    echo_app,
    eventually,
    run,
    server_options,
    server_url,
    tls_files,
)

from framework.core.endpoints import parse_url
from framework.core.errors import TransportError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed

__all__ = ["tls_files"]  # the fixture, imported for pytest

CLIENTS = 20
REQUESTS = 600  # per client, pipelined
# Replies are padded, and clients read slowly, so that at the moment of the
# shutdown replies wait in the server's socket buffers, not only in flight.
PAD = b"r" * 2048


class Ledger:
    """What the server decoded and produced, per client."""

    def __init__(self) -> None:
        self.decoded: collections.Counter[int] = collections.Counter()
        self.produced: dict[int, list[int]] = collections.defaultdict(list)


def loaded_app(ledger: Ledger, *, handler: str) -> App:
    app = App(Pipeline(framing="length-prefix", codecs="msgpack"))
    rng = random.Random(3)

    if handler == "async":

        @app.on(list)
        async def answer_later(request: list[int], conn: Connection) -> list[int]:
            client, n = request
            ledger.decoded[client] += 1
            await asyncio.sleep(rng.random() * 0.01)
            ledger.produced[client].append(n)
            return [client, n, PAD]

    else:

        @app.on(list)
        def answer(request: list[int], conn: Connection) -> list[int]:
            client, n = request
            ledger.decoded[client] += 1
            ledger.produced[client].append(n)
            return [client, n, PAD]

    return app


async def pipelining_client(
    url: str, pipeline: Pipeline, client: int, options: dict[str, Any], started: asyncio.Event
) -> list[int]:
    """Send REQUESTS requests without waiting, read replies until the server closes."""
    # A small inbox: the client stops reading its socket while it lags.
    conn = await connect(url, pipeline, limits=Limits(max_queued=8), **options)
    received: list[int] = []

    async def send_all() -> None:
        for n in range(REQUESTS):
            try:
                await conn.send([client, n])
            except ConnectionClosed:
                return
            if n % 20 == 19:
                await asyncio.sleep(0)  # let the others in

    sender = asyncio.ensure_future(send_all())
    try:
        while True:
            try:
                reply = await conn.receive()
            except ConnectionClosed:
                break
            assert reply[0] == client
            received.append(reply[1])
            if len(received) == 10:
                started.set()
            if len(received) % 8 == 0:
                await asyncio.sleep(0.002)  # a slow reader
    finally:
        sender.cancel()
        conn.abort()
    return received


@pytest.mark.parametrize("handler", ["sync", "async"])
@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
def test_every_reply_produced_before_shutdown_reaches_its_client(
    transport: str,
    handler: str,
    tmp_path: Path,
    tls_files: TlsFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    app = loaded_app(ledger, handler=handler)
    caplog.set_level(logging.INFO, logger="wirekit")

    async def main() -> list[list[int]]:
        server = await app.start(
            server_url(transport, tmp_path),
            limits=Limits(shutdown_timeout=5),
            **server_options(transport, tls_files),
        )
        started = [asyncio.Event() for _ in range(CLIENTS)]
        options = client_options(transport, tls_files)
        clients = [
            asyncio.ensure_future(
                pipelining_client(server.url, app.pipeline, client, options, started[client])
            )
            for client in range(CLIENTS)
        ]
        # Shut down while every client is in the middle of its requests.
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 10)
        await server.close()
        return await asyncio.wait_for(asyncio.gather(*clients), 10)

    received = run(main(), timeout=30)
    lost_with_error = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("wirekit")
    ]
    for client in range(CLIENTS):
        produced = ledger.produced[client]
        # Every reply produced reached the client, in the order produced.
        assert received[client] == produced, (client, len(received[client]), len(produced))
        assert len(produced) >= 10  # it was served before the shutdown...
    # ...and the shutdown cut the stream of requests short.
    assert sum(len(produced) for produced in ledger.produced.values()) < CLIENTS * REQUESTS
    # Every request the server decoded was answered: none dropped silently,
    # and none with an error either (the handlers had time to finish).
    assert ledger.decoded == collections.Counter(
        {client: len(ledger.produced[client]) for client in range(CLIENTS)}
    )
    assert lost_with_error == [], [r.getMessage() for r in lost_with_error]


def test_a_handler_that_outlasts_the_shutdown_is_cancelled_with_a_logged_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The other way a decoded frame may end: not answered, but never silently."""
    app = App(Pipeline(framing="length-prefix", codecs="msgpack"))
    begun = asyncio.Event()

    @app.on(str)
    async def forever(request: str, conn: Connection) -> str:
        begun.set()
        await asyncio.sleep(60)
        return request

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0", limits=Limits(shutdown_timeout=0.2))
        conn = await connect(server.url, app.pipeline)
        await conn.send("slow")
        await asyncio.wait_for(begun.wait(), 5)
        await server.close()
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(ConnectionClosed):
            await conn.receive()

    run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cancelling 1 handler(s)" in message for message in warnings), warnings


def test_connections_arriving_during_shutdown_are_refused_not_served() -> None:
    app = App(Pipeline(framing="length-prefix", codecs="msgpack"))
    release = asyncio.Event()

    @app.on(str)
    async def held(request: str, conn: Connection) -> str:
        await release.wait()
        return request

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0", limits=Limits(shutdown_timeout=5))
        first = await connect(server.url, app.pipeline)
        await first.send("in flight")
        await eventually(lambda: len(server.connections) == 1)
        await asyncio.sleep(0.05)  # "in flight" is read and its handler waits
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.05)  # the listener is closed; the handler still runs
        with pytest.raises(TransportError, match="cannot connect"):
            await connect(server.url, app.pipeline, timeout=1)
        release.set()
        assert await asyncio.wait_for(first.receive(), 5) == "in flight"
        await closing

    run(main())


# A shutdown timeout no test waits for: a close that lingers until it runs
# out makes the test fail on its own (much shorter) timeout instead.
UNREACHED_TIMEOUT = 30.0


def idle_client(url: str, tls: TlsFiles) -> socket.socket:
    """A blocking socket connected to ``url`` (TLS handshake done) that reads nothing."""
    endpoint = parse_url(url)
    if endpoint.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint.path)
        return sock
    sock = socket.create_connection((endpoint.host, endpoint.port))
    if endpoint.scheme == "tls":
        context = ssl.create_default_context(cafile=tls.ca)
        return context.wrap_socket(sock, server_hostname=endpoint.host)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sent, up to its end of stream (a reset raises)."""
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.timeout(20)
@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
def test_an_idle_client_does_not_hold_the_shutdown(
    transport: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Nothing in flight: the connection closes at once, not at the shutdown timeout."""
    app = echo_app(Pipeline(framing="length-prefix", codecs="msgpack"))

    async def main() -> bytes:
        server = await app.start(
            server_url(transport, tmp_path),
            limits=Limits(shutdown_timeout=UNREACHED_TIMEOUT),
            **server_options(transport, tls_files),
        )
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(None, idle_client, server.url, tls_files)
        with client:
            await eventually(lambda: len(server.connections) == 1)
            await server.close()  # within run()'s timeout unit, far below 30 s
            return await loop.run_in_executor(None, read_to_end, client)

    # The idle client then reads an orderly end of stream, not a reset.
    assert run(main()) == b""


@pytest.mark.timeout(20)
@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
def test_an_idle_client_that_has_not_read_its_reply_gets_it_then_the_end(
    transport: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    app = echo_app(Pipeline(framing="length-prefix", codecs="msgpack"))
    request = app.pipeline.encode({"n": 1, "pad": "x" * 4096})

    async def main() -> bytes:
        server = await app.start(
            server_url(transport, tmp_path),
            limits=Limits(shutdown_timeout=UNREACHED_TIMEOUT),
            **server_options(transport, tls_files),
        )
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(None, idle_client, server.url, tls_files)
        with client:
            await loop.run_in_executor(None, client.sendall, request)
            await eventually(lambda: any(conn.stats.frames_out == 1 for conn in server.connections))
            await server.close()
            return await loop.run_in_executor(None, read_to_end, client)

    assert run(main()) == request  # the echo, whole, then an end of stream


@pytest.mark.timeout(20)
def test_a_peer_that_reset_while_reading_was_paused_does_not_break_the_shutdown() -> None:
    """Its reset went unnoticed (nothing was reading): the half-close fails, the rest goes on."""
    pipeline = Pipeline(framing="length-prefix", codecs="msgpack")
    app = App(pipeline)
    started: list[Any] = []
    gone: list[Connection] = []
    app.on_disconnect(gone.append)

    async def main() -> None:
        release = asyncio.Event()

        @app.on(object)
        async def slow(value: Any, conn: Connection) -> None:
            started.append(value)
            await release.wait()

        # One handler at a time: reading pauses while the first one waits.
        limits = Limits(shutdown_timeout=UNREACHED_TIMEOUT, max_inflight_handlers=1)
        server = await app.start("tcp://127.0.0.1:0", limits=limits)
        with socket.create_connection(("127.0.0.1", server.endpoint.port)) as client:
            client.sendall(pipeline.encode(1) + pipeline.encode(2))
            await eventually(lambda: bool(started))
            client.sendall(pipeline.encode(3) * 100)  # left unread by the paused server
            await asyncio.sleep(0.05)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        asyncio.get_running_loop().call_later(0.05, release.set)
        await server.close()
        assert not server.connections

    run(main())
    assert len(gone) == 1
