"""Shared pieces of the loopback runtime suites: pipelines, apps, URLs, raw peers.

Every test drives its own event loop with :func:`run`, which bounds the whole
coroutine by one timeout unit (``TIMEOUT``) so a hang fails fast with a clear
error instead of waiting for pytest-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import pytest

from framework import Pipeline, message
from framework.core.endpoints import parse_url
from framework.runtime.app import App
from framework.runtime.tls import TlsOptions
from framework.runtime.transports.base import open_stream

T = TypeVar("T")

#: One timeout unit: no single loopback step should take anywhere near this.
TIMEOUT = 5.0

_names = itertools.count(1)


def run(coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
    """Run ``coro`` in a fresh event loop, failing if it takes over ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """``await`` with the suite's timeout unit."""
    return await asyncio.wait_for(awaitable, timeout)


# -- messages and pipelines -------------------------------------------------------------


@message("ping")
@attrs.frozen
class Ping:
    n: int
    text: str = ""


@message("pong")
@attrs.frozen
class Pong:
    n: int
    text: str = ""


#: The three stream framings, each with the codec it is usually paired with.
FRAMINGS: dict[str, Callable[[], Pipeline]] = {
    "length-prefix": lambda: Pipeline(framing="length-prefix", codecs="msgpack"),
    "newline": lambda: Pipeline(framing="newline", codecs="utf-8"),
    "msgpack-stream": lambda: Pipeline(framing="msgpack-stream", codecs="msgpack"),
}


def sample_values(framing: str, count: int = 5) -> list[Any]:
    """Values each framing's codec carries: text for utf-8, structures for msgpack."""
    if framing == "newline":
        return [f"line {i} é ✓" for i in range(count)]
    return [{"n": i, "blob": b"\x00\n" * i, "items": list(range(i))} for i in range(count)]


def typed_pipeline() -> Pipeline:
    """length-prefix + msgpack + the Ping/Pong messages."""
    return Pipeline(framing="length-prefix", codecs="msgpack", messages=[Ping, Pong])


def echo_app(pipeline: Pipeline, **options: Any) -> App:
    """The one app definition of the transport matrix: every value comes back."""
    app = App(pipeline, **options)

    @app.on(object)
    def echo(value: Any, conn: Any) -> Any:
        return value

    return app


# -- endpoints ---------------------------------------------------------------------------


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")


def unix_path(tmp_path: Path) -> str:
    """A socket path under ``tmp_path``, or a short temp dir if that path is too long."""
    path = tmp_path / "s.sock"
    if len(os.fsencode(path)) < 100:
        return str(path)
    short = tempfile.mkdtemp(prefix="wk")  # pragma: no cover - only on long tmp paths
    return os.path.join(short, "s.sock")  # pragma: no cover


def memory_url() -> str:
    return f"memory://test-{os.getpid()}-{next(_names)}"


def server_url(transport: str, tmp_path: Path) -> str:
    """A port-0 (or fresh) URL for ``transport``."""
    urls = {
        "tcp": "tcp://127.0.0.1:0",
        "tcp6": "tcp://[::1]:0",
        "tls": "tls://127.0.0.1:0",
        "udp": "udp://127.0.0.1:0",
    }
    if transport == "unix":
        return f"unix://{unix_path(tmp_path)}"
    if transport == "memory":
        return memory_url()
    return urls[transport]


STREAM_TRANSPORTS = [
    "tcp",
    pytest.param("tcp6", marks=needs_ipv6),
    "unix",
    "tls",
    "memory",
]


# -- TLS material --------------------------------------------------------------------------


@attrs.frozen
class TlsFiles:
    """Certificates written by trustme for one test session."""

    ca: str
    server: str  # key and chain in one PEM
    client: str
    other_ca: str

    def server_options(self, **extra: Any) -> TlsOptions:
        return TlsOptions(certfile=self.server, keyfile=self.server, **extra)

    def client_options(self, **extra: Any) -> TlsOptions:
        return TlsOptions(cafile=self.ca, **extra)


def make_tls_files(directory: Path) -> TlsFiles:
    import trustme

    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    client = ca.issue_cert("client.wirekit.test")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "server", "client", "other")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return TlsFiles(
        ca=str(paths["ca"]),
        server=str(paths["server"]),
        client=str(paths["client"]),
        other_ca=str(paths["other"]),
    )


# -- raw peers -------------------------------------------------------------------------------


class RawPeer(asyncio.Protocol):
    """A client that sees bytes, not values: for split, batched and hostile input."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.reads = 0
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.reads += 1
        self._wake()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def wait_for_bytes(self, size: int) -> bytes:
        """Wait until at least ``size`` bytes have arrived; return them all."""
        loop = asyncio.get_running_loop()
        while len(self.received) < size:
            if self.closed.done():
                raise AssertionError(
                    f"closed after {len(self.received)} of {size} bytes: {self.closed.result()!r}"
                )
            self._waiter = loop.create_future()
            await within(self._waiter)
        return bytes(self.received)

    async def wait_closed(self) -> Exception | None:
        return await within(asyncio.shield(self.closed))


@contextlib.asynccontextmanager
async def raw_peer(url: str, tls: TlsOptions | None = None) -> AsyncIterator[RawPeer]:
    """Open a :class:`RawPeer` to ``url`` on any stream transport (TLS included)."""
    endpoint = parse_url(url)
    context = tls.client_context() if tls is not None and endpoint.scheme == "tls" else None
    transport, protocol = await within(open_stream(endpoint, RawPeer, ssl_context=context))
    assert isinstance(protocol, RawPeer)
    try:
        yield protocol
    finally:
        transport.abort()
        await protocol.wait_closed()


async def decode_all(pipeline: Pipeline, peer: RawPeer, count: int) -> list[Any]:
    """Wait until ``count`` values have arrived on ``peer``; decode and return them."""
    while True:
        decoder = pipeline.decoder()
        values = decoder.feed(bytes(peer.received))
        if len(values) >= count:
            return values
        await peer.wait_for_bytes(len(peer.received) + 1)


def tcp_socket(url: str) -> socket.socket:
    """A plain non-blocking socket connected to a ``tcp://`` or ``unix://`` URL."""
    endpoint = parse_url(url)
    if endpoint.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint.path)
    else:
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.connect((endpoint.host, endpoint.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0: the peer sees a reset, not an end of stream."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``check`` every few milliseconds until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.005)


def records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """The wirekit log messages at ``level`` or above."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("wirekit") and r.levelno >= level
    ]


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a server certificate for the loopback names, and a client certificate."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def server_options(transport: str, tls: TlsFiles) -> dict[str, Any]:
    """What ``App.start`` needs besides the URL: TLS options for ``tls``."""
    return {"tls": tls.server_options()} if transport == "tls" else {}


def client_options(transport: str, tls: TlsFiles) -> dict[str, Any]:
    """What ``connect``/``raw_peer`` need besides the URL."""
    return {"tls": tls.client_options()} if transport == "tls" else {}


class IoCounter:
    """Counts reads (``data_received`` calls) and transport writes of server connections."""

    def __init__(self, app: App) -> None:
        self.reads = 0
        self.writes = 0
        self.conns: list[Any] = []
        app.on_connect(self._attach)

    def _attach(self, conn: Any) -> None:
        self.conns.append(conn)
        # uvloop binds a protocol's methods when it attaches it, and its
        # transport's methods cannot be patched: put counting proxies on
        # both sides instead.
        conn._transport.set_protocol(_CountingProtocol(conn, self))
        conn._transport = _CountingTransport(conn._transport, self)


class _CountingProtocol(asyncio.Protocol):
    """Forwards to a connection's protocol methods, counting reads."""

    def __init__(self, conn: Any, counter: IoCounter) -> None:
        self._conn = conn
        self._counter = counter

    def data_received(self, data: bytes) -> None:
        self._counter.reads += 1
        self._conn.data_received(data)

    def eof_received(self) -> bool | None:
        return cast("bool | None", self._conn.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()


class _CountingTransport:
    """Forwards to a transport, counting the calls that write."""

    def __init__(self, inner: Any, counter: IoCounter) -> None:
        self._inner = inner
        self._counter = counter

    def write(self, data: bytes) -> None:
        self._counter.writes += 1
        self._inner.write(data)

    def writelines(self, chunks: Any) -> None:
        self._counter.writes += 1
        self._inner.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A plain TCP listener that accepts and never reads nor writes.

    Yields its port and the accepted connections (to pause or inspect);
    every one is closed on exit, so no transport is left to the collector.
    """
    accepted: list[asyncio.StreamWriter] = []

    def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], accepted
    finally:
        listener.close()
        for writer in accepted:
            writer.transport.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports finish closing
