"""framework.runtime.transports.udp: the batch-reading UDP transport, on real loopback sockets."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import pytest
from helpers_runtime import eventually, ipv6_available, run, within

from framework import Pipeline
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.transports import base
from framework.runtime.transports.udp import UdpTransport, create_udp_endpoint


class Recorder(asyncio.DatagramProtocol):
    """Records what the transport delivers, and on which turn of the event loop."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: Any = None
        self.datagrams: list[tuple[bytes, Any, int]] = []
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []
        self.turn = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.turn += 1
        if not self.lost:
            asyncio.get_running_loop().call_soon(self._tick)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr, self.turn))
        if self.echo:
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def client_socket(family: int, server: tuple[Any, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(server[:2])
    return sock


NO_IPV6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6")
HOSTS = ["127.0.0.1", pytest.param("::1", marks=NO_IPV6)]


@pytest.mark.parametrize("host", HOSTS)
def test_echo_of_a_burst_loses_nothing_and_reads_it_in_one_turn(host: str) -> None:
    async def main() -> None:
        transport, protocol = await create_udp_endpoint(
            lambda: Recorder(echo=True), local_addr=(host, 0)
        )
        assert isinstance(transport, UdpTransport)
        assert isinstance(protocol, Recorder)
        await eventually(lambda: protocol.transport is not None)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        client = client_socket(family, transport.get_extra_info("sockname"))
        payloads = [b"%03d" % n * (n % 7 + 1) for n in range(100)]
        # Sent while the loop is not running: all are ready at the next turn.
        for payload in payloads:
            client.send(payload)
        await eventually(lambda: len(protocol.datagrams) == len(payloads))
        assert [data for data, _, _ in protocol.datagrams] == payloads
        assert len({turn for _, _, turn in protocol.datagrams}) == 1
        assert {addr[:2] for _, addr, _ in protocol.datagrams} == {client.getsockname()[:2]}
        client.setblocking(False)
        echoed = []
        loop = asyncio.get_running_loop()
        for _ in payloads:
            echoed.append(await within(loop.sock_recv(client, 4096)))
        assert echoed == payloads
        client.close()
        transport.close()
        await eventually(lambda: protocol.lost == [None])

    run(main())


def test_a_datagram_over_max_size_arrives_cut_to_one_byte_more() -> None:
    async def main() -> None:
        transport, protocol = await create_udp_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), max_size=100
        )
        assert isinstance(protocol, Recorder)
        client = client_socket(socket.AF_INET, transport.get_extra_info("sockname"))
        client.send(b"x" * 300)
        client.send(b"y" * 100)
        await eventually(lambda: len(protocol.datagrams) == 2)
        # Too large shows as max_size + 1 bytes: the runtime drops and counts it.
        assert [data for data, _, _ in protocol.datagrams] == [b"x" * 101, b"y" * 100]
        client.close()
        transport.close()

    run(main())


def test_connected_socket_reports_an_unreachable_peer_to_error_received() -> None:
    async def main() -> None:
        # A port nobody listens on: bind one, note it, close it.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        probe.close()
        transport, protocol = await create_udp_endpoint(Recorder, remote_addr=address)
        assert isinstance(protocol, Recorder)
        assert transport.get_extra_info("peername") == address
        with pytest.raises(ValueError, match="invalid address"):
            transport.sendto(b"x", ("127.0.0.1", 1))
        for _ in range(3):
            transport.sendto(b"anyone?")
            await asyncio.sleep(0.01)
            if protocol.errors:
                break
        await eventually(lambda: bool(protocol.errors))
        assert isinstance(protocol.errors[0], ConnectionRefusedError)
        assert not transport.is_closing()
        transport.close()

    run(main())


def test_close_and_abort_end_the_transport_once_and_drop_later_sends() -> None:
    async def main() -> None:
        for end in ("close", "abort"):
            transport, protocol = await create_udp_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            assert isinstance(protocol, Recorder)
            sock = transport.get_extra_info("socket")
            getattr(transport, end)()
            getattr(transport, end)()
            assert transport.is_closing()
            transport.sendto(b"late", ("127.0.0.1", 9))  # dropped, as asyncio does
            await eventually(lambda p=protocol: p.lost == [None])  # type: ignore[misc]
            assert sock.fileno() == -1
            assert not protocol.errors

    run(main())


def test_pause_and_resume_reading_and_write_buffer_limits() -> None:
    async def main() -> None:
        transport, protocol = await create_udp_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        assert isinstance(transport, UdpTransport)
        assert isinstance(protocol, Recorder)
        await eventually(transport.is_reading)
        client = client_socket(socket.AF_INET, transport.get_extra_info("sockname"))
        transport.pause_reading()
        client.send(b"held")
        await asyncio.sleep(0.05)
        assert protocol.datagrams == []
        transport.resume_reading()
        await eventually(lambda: len(protocol.datagrams) == 1)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        assert transport.get_write_buffer_size() == 0
        with pytest.raises(ValueError, match="must be >= low"):
            transport.set_write_buffer_limits(high=10, low=20)
        client.close()
        transport.close()

    run(main())


def test_the_datagram_runtime_serves_over_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # What base.serve_datagrams would do with this transport wired in.
    async def serve_datagrams(endpoint: Any, factory: Any, *, reuse_port: bool = False) -> Any:
        transport, protocol = await create_udp_endpoint(
            factory, local_addr=(endpoint.host, endpoint.port), reuse_port=reuse_port
        )
        assert isinstance(transport, UdpTransport)
        return transport, protocol, base._bound(endpoint, transport.get_extra_info("sockname"))

    monkeypatch.setattr("framework.runtime.server.serve_datagrams", serve_datagrams)
    pipeline = Pipeline(codecs="bytes")
    app = App(pipeline)

    @app.on(bytes)
    def echo(value: bytes, conn: Any) -> bytes:
        return value

    async def main() -> None:
        limits = Limits(max_datagram_size=100)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            async with await connect(server.url, pipeline) as conn:
                await conn.send(b"hello")
                assert await within(conn.receive()) == b"hello"
            host, port = server.endpoint.host, server.endpoint.port
            raw = client_socket(socket.AF_INET, (host, port))
            raw.setblocking(False)
            raw.send(b"z" * 5000)
            raw.send(b"after")
            loop = asyncio.get_running_loop()
            assert await within(loop.sock_recv(raw, 100)) == b"after"
            raw.close()
            stats = server.datagram_stats
            assert stats is not None
            await eventually(lambda: stats.dropped_oversize == 1)

    run(main())


def test_the_protocol_has_its_transport_when_the_opener_returns() -> None:
    async def main() -> None:
        transport, protocol = await create_udp_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        assert isinstance(protocol, Recorder)
        assert protocol.transport is transport  # so closing the protocol closes the socket
        transport.close()
        await eventually(lambda: bool(protocol.lost))

    run(main())


@pytest.mark.parametrize("side", ["server", "client"])
def test_closing_right_after_opening_leaves_no_socket_open(side: str) -> None:
    # Closed before the loop turns once: the socket must still be closed
    # (an unclosed one is a ResourceWarning, an error in this suite).
    app = App(Pipeline())

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0") as server:
            if side == "client":
                conn = await connect(server.url, app.pipeline)
                conn.close()

    run(main())
    gc.collect()
