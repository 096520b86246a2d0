"""The UDP transport's send queue is bounded: past it a datagram is dropped and counted.

The queue fills only when the kernel refuses a datagram (``EAGAIN``), and a
UDP socket on loopback never does: the kernel hands each datagram to the
receiver, or drops it there, at once. A Unix datagram socket whose peer
does not read does refuse, so these tests put wirekit's transport and UDP
server on one: the same code paths, with real kernel backpressure. The
receiver there loses nothing, so every count is exact: what was sent
arrives, what was not was counted as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from framework import App, Connection, Limits, Pipeline, message
from framework.runtime.datagram import DatagramServer
from framework.runtime.datagram_client import DatagramClient
from framework.runtime.transports.udp import (
    SEND_QUEUE_FACTOR,
    WRITE_HIGH_WATER,
    SendQueueFull,
    UdpTransport,
)
from tests.helpers_runtime import eventually, run, within


@message("burst")
@attrs.frozen
class Burst:
    count: int
    size: int


@message("item")
@attrs.frozen
class Item:
    n: int
    pad: bytes


PIPELINE = Pipeline(framing="length-prefix", codecs="msgpack", messages=[Burst, Item])


@pytest.fixture
def folder() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as path:
        yield path


def unix_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(path)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock``."""
    got = []
    while True:
        try:
            got.append(sock.recv(70_000))
        except BlockingIOError:
            return got


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.paused = 0
        self.resumed = 0

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


def test_a_transport_whose_peer_does_not_read_drops_past_its_bound_and_reports_each(
    folder: str,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        receiver = unix_socket(os.path.join(folder, "receiver"))
        sender = unix_socket(os.path.join(folder, "sender"))
        sender.connect(receiver.getsockname())
        protocol = Recorder()
        waiter: asyncio.Future[None] = loop.create_future()
        transport = UdpTransport(loop, sender, protocol, connected=True, waiter=waiter)
        await within(waiter)
        assert transport.max_queued == SEND_QUEUE_FACTOR * WRITE_HIGH_WATER
        attempted, size, largest = 1_000, 1_000, 0
        for n in range(attempted):
            transport.sendto(n.to_bytes(4, "big") + bytes(size - 4))
            largest = max(largest, transport.get_write_buffer_size())
        assert largest <= transport.max_queued < attempted * size
        assert protocol.paused == 1
        dropped = [exc for exc in protocol.errors if isinstance(exc, SendQueueFull)]
        assert len(dropped) == transport.dropped == len(protocol.errors) > 0
        assert all(exc.size == size and exc.addr is None for exc in dropped)

        # The receiver reads: the queue goes out in order, writing resumes,
        # and everything not dropped arrives.
        got: list[bytes] = []
        while transport.get_write_buffer_size() or len(got) < attempted - transport.dropped:
            got += drain(receiver)
            await asyncio.sleep(0.001)
        got += drain(receiver)
        assert protocol.resumed == 1
        numbers = [int.from_bytes(data[:4], "big") for data in got]
        assert len(numbers) == attempted - transport.dropped
        assert numbers == sorted(numbers)
        transport.close()
        receiver.close()

    run(main())


async def serve_unix(app: App, path: str) -> tuple[UdpTransport, DatagramServer]:
    """wirekit's UDP server on a Unix datagram socket (see the module docstring)."""
    loop = asyncio.get_running_loop()
    server = DatagramServer(PIPELINE, app, Limits(amplification_factor=None))
    waiter: asyncio.Future[None] = loop.create_future()
    transport = UdpTransport(loop, unix_socket(path), server, waiter=waiter)
    await within(waiter)
    return transport, server


def test_a_handler_burst_far_over_the_bound_is_dropped_and_counted_exactly(
    folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit.udp")

    async def main() -> None:
        app = App(PIPELINE)
        seen: dict[str, Any] = {}

        @app.on(Burst)
        def burst(value: Burst, conn: Connection) -> None:
            largest = 0
            for n in range(value.count):
                conn.send_nowait(Item(n, bytes(value.size)))
                largest = max(largest, transport.get_write_buffer_size())
            seen["largest"] = largest
            seen["can_send"] = conn.can_send

        transport, server = await serve_unix(app, os.path.join(folder, "server"))
        client = unix_socket(os.path.join(folder, "client"))
        client.connect(transport.get_extra_info("sockname"))
        attempted = 2_000  # about 2 MB, eight times the bound
        client.send(PIPELINE.encode_datagram(Burst(attempted, 1_000)))
        await eventually(lambda: "largest" in seen)
        stats = server.stats
        assert seen["largest"] <= transport.max_queued
        assert stats.dropped_send_queue > 0
        assert stats.sent + stats.dropped_send_queue == attempted
        assert seen["can_send"] is False  # over the high-water mark: peers are backed up
        (peer,) = server.peers.values()
        assert peer.stats.frames_out == stats.sent
        # Logged once, not once per datagram: the rest are summed up later.
        logged = [r.getMessage() for r in caplog.records if "send queue full" in r.getMessage()]
        assert len(logged) == 1 < stats.dropped_send_queue

        got: list[bytes] = []
        while transport.get_write_buffer_size() or len(got) < stats.sent:
            got += drain(client)
            await asyncio.sleep(0.001)
        got += drain(client)
        assert len(got) == stats.sent
        assert peer.can_send

        # The server goes on serving.
        client.send(PIPELINE.encode_datagram(Burst(3, 10)))
        later: list[bytes] = []
        await eventually(lambda: len(later.__iadd__(drain(client))) == 3)
        assert [PIPELINE.decode_datagram(data)[0].n for data in later] == [0, 1, 2]
        transport.close()
        client.close()

    run(main())


def test_a_group_publish_skips_and_counts_udp_members_while_the_socket_is_backed_up(
    folder: str,
) -> None:
    async def main() -> None:
        app = App(PIPELINE)
        groups = app.groups
        handed: list[int] = []

        @app.on_connect
        def enter(conn: Connection) -> None:
            groups.join(conn, "room")

        @app.on(Burst)
        def burst(value: Burst, conn: Connection) -> None:
            if value.size == 0:  # a publish of Item(count) to the room
                handed.append(groups.publish("room", Item(value.count, b"")))
                return
            for n in range(value.count):
                conn.send_nowait(Item(n, bytes(value.size)))

        await groups.start(
            f"memory://send-queue-{os.getpid()}-{id(app)}", "test", 15.0, PIPELINE.messages
        )
        transport, server = await serve_unix(app, os.path.join(folder, "server"))
        slow = unix_socket(os.path.join(folder, "slow"))
        quick = unix_socket(os.path.join(folder, "quick"))
        address = transport.get_extra_info("sockname")
        quick.sendto(PIPELINE.encode_datagram(Burst(1, 10)), address)
        got: list[bytes] = []
        await eventually(lambda: len(got.__iadd__(drain(quick))) == 1)

        # The slow member asks for far more than the socket can hold, and
        # does not read: the shared socket backs up, for every peer.
        slow.sendto(PIPELINE.encode_datagram(Burst(2_000, 1_000)), address)
        await eventually(lambda: server.stats.dropped_send_queue > 0)
        queued = transport.get_write_buffer_size()
        quick.sendto(PIPELINE.encode_datagram(Burst(7, 0)), address)
        await eventually(lambda: len(handed) == 1)
        assert handed == [0]  # both members skipped, not queued for
        assert groups.stats.dropped == 2
        assert all(groups.dropped(peer) == 1 for peer in server.peers.values())
        assert transport.get_write_buffer_size() == queued

        # Once the slow member reads, the queue empties and publishes go out again.
        while transport.get_write_buffer_size():
            drain(slow)
            await asyncio.sleep(0.001)
        drain(slow)
        quick.sendto(PIPELINE.encode_datagram(Burst(8, 0)), address)
        got = []
        await eventually(lambda: len(got.__iadd__(drain(quick))) == 1)
        assert handed == [0, 2]
        assert PIPELINE.decode_datagram(got[0]) == [Item(8, b"")]
        await eventually(lambda: len(drain(slow)) == 1)
        transport.close()
        await groups.stop()
        slow.close()
        quick.close()

    run(main())


def test_a_client_sending_to_a_server_that_does_not_read_drops_and_counts(folder: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = unix_socket(os.path.join(folder, "server"))
        sock = unix_socket(os.path.join(folder, "client"))
        sock.connect(server.getsockname())
        client = DatagramClient(PIPELINE, limits=Limits())
        waiter: asyncio.Future[None] = loop.create_future()
        transport = UdpTransport(loop, sock, client, connected=True, waiter=waiter)
        await within(waiter)
        attempted, largest = 2_000, 0
        for n in range(attempted):
            client.send_nowait(Item(n, bytes(1_000)))
            largest = max(largest, transport.get_write_buffer_size())
        stats = client.datagram_stats
        assert largest <= transport.max_queued
        assert stats.dropped_send_queue == transport.dropped > 0
        assert stats.sent + stats.dropped_send_queue == attempted
        assert client.stats.frames_out == stats.sent
        assert not client.can_send

        got: list[bytes] = []
        while transport.get_write_buffer_size() or len(got) < stats.sent:
            got += drain(server)
            await asyncio.sleep(0.001)
        got += drain(server)
        assert len(got) == stats.sent
        assert client.can_send
        client.close()
        server.close()

    run(main())
