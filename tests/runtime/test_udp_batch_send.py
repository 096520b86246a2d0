"""UdpTransport sends a read's datagrams together, on real loopback sockets.

What a protocol sends while the transport is handing it a read's datagrams
goes out when they are all handled: a run of one size to one address in
one segmented ``sendmsg`` (Linux's UDP_SEGMENT), the rest one by one. The
peers must not be able to tell: each gets every datagram sent to it, whole,
in order, whatever the kernel accepts or refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest
from helpers_runtime import eventually, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.runtime.transports import udp
from framework.runtime.transports.udp import UdpTransport, create_udp_endpoint

#: Linux's SO_RCVBUFFORCE (past rmem_max, for root), which Python 3.11 does not name.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP_SEGMENT")


class CountingSocket(socket.socket):
    """A UDP socket that counts its sends and can be told to refuse segmented ones."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.segmented = 0  # sendmsg calls that went out
        self.single = 0  # send and sendto calls
        self.refusals: list[BaseException] = []  # raised by the next sendmsg calls, in turn

    def sendmsg(self, *args: Any) -> int:  # type: ignore[override]
        if self.refusals:
            raise self.refusals.pop(0)
        self.segmented += 1
        return super().sendmsg(*args)

    def send(self, *args: Any) -> int:  # type: ignore[override]
        self.single += 1
        return super().send(*args)

    def sendto(self, *args: Any) -> int:  # type: ignore[override]
        self.single += 1
        return super().sendto(*args)


class Scripted(asyncio.DatagramProtocol):
    """On each datagram, sends what ``script`` gives for it, then closes if told to."""

    def __init__(self, script: Callable[[bytes, Any], list[tuple[bytes, Any]]]) -> None:
        self.script = script
        self.transport: Any = None
        self.close_after = False
        self.errors: list[Exception] = []
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for payload, to in self.script(data, addr):
            self.transport.sendto(payload, to)
        if self.close_after:
            self.transport.close()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


async def server(protocol: Scripted) -> tuple[UdpTransport, CountingSocket]:
    sock = CountingSocket()
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    transport = UdpTransport(asyncio.get_running_loop(), sock, protocol, waiter=waiter)
    await waiter
    return transport, sock


def peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # room for a whole burst: nothing may be dropped on the way in
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def receive(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    return [await asyncio.wait_for(loop.sock_recv(sock, 65536), 5) for _ in range(count)]


def payload(index: int, size: int) -> bytes:
    """``size`` bytes that say which datagram they are: a reorder or a cut shows."""
    stamp = b"%d:" % index
    return (stamp * (size // len(stamp) + 1))[:size]


def replying(planned: list[bytes]) -> Scripted:
    """A protocol that answers each datagram with ``planned``, to its sender."""
    return Scripted(lambda data, addr: [(each, addr) for each in planned])


async def burst(client: socket.socket, transport: UdpTransport, planned: list[bytes]) -> None:
    """Ask for ``planned`` and check that the client gets it, whole and in order."""
    client.sendto(b"go", transport.get_extra_info("sockname"))
    assert await receive(client, len(planned)) == planned


sends = st.lists(
    st.tuples(
        st.integers(0, 2),  # to which peer
        # Runs of one size are what gets segmented: few sizes, some at the limits.
        st.sampled_from([0, 1, 56, 56, 56, 57, 200, udp.GSO_MAX_SEGMENT, udp.GSO_MAX_SEGMENT + 1]),
    ),
    max_size=90,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=sends)
def test_each_peer_gets_what_was_sent_to_it_whole_and_in_order(
    script: list[tuple[int, int]],
) -> None:
    async def main() -> None:
        peers = [peer() for _ in range(3)]
        addresses = [p.getsockname() for p in peers]
        planned = [(payload(i, size), addresses[to]) for i, (to, size) in enumerate(script)]
        transport, sock = await server(Scripted(lambda data, addr: planned))
        peers[0].sendto(b"go", transport.get_extra_info("sockname"))
        for index, each in enumerate(peers):
            expected = [data for data, to in planned if to == addresses[index]]
            assert await receive(each, len(expected)) == expected
        # Nothing more arrives: no datagram twice.
        await asyncio.sleep(0.01)
        for each in peers:
            with pytest.raises(BlockingIOError):
                each.recv(65536)
            each.close()
        assert sock.segmented + sock.single <= max(len(planned), 1)
        transport.close()

    run(main())


def test_a_run_to_one_peer_goes_out_in_one_send_per_64_datagrams() -> None:
    async def main() -> None:
        client = peer()
        # 100 of one size, then a shorter one: it ends the second run.
        planned = [payload(i, 56) for i in range(100)] + [b"end"]
        transport, sock = await server(replying(planned))
        await burst(client, transport, planned)
        assert (sock.segmented, sock.single) == (2, 0)
        transport.close()
        client.close()

    run(main())


def test_a_kernel_that_refuses_segmentation_gets_each_datagram_on_its_own() -> None:
    async def main() -> None:
        client = peer()
        planned = [payload(i, 56) for i in range(10)]
        transport, sock = await server(replying(planned))
        sock.refusals.append(OSError(errno.EIO, "no checksum offload"))
        for _ in range(2):
            await burst(client, transport, planned)
        # Asked once, then never again on this socket.
        assert (sock.segmented, sock.single, sock.refusals) == (0, 20, [])
        transport.close()
        client.close()

    run(main())


@pytest.mark.parametrize(
    "refusal", [ConnectionRefusedError(errno.ECONNREFUSED, "refused"), BlockingIOError()]
)
def test_a_send_error_goes_to_the_protocol_and_the_datagrams_still_go(
    refusal: OSError,
) -> None:
    async def main() -> None:
        client = peer()
        planned = [payload(i, 56) for i in range(10)]
        protocol = replying(planned)
        transport, sock = await server(protocol)
        sock.refusals.append(refusal)
        await burst(client, transport, planned)
        # A socket error is the peer's or the buffer's, not segmentation's:
        # the next read's run is segmented again.
        await burst(client, transport, planned)
        assert sock.segmented == 1
        assert protocol.errors == ([] if isinstance(refusal, BlockingIOError) else [refusal])
        transport.close()
        client.close()

    run(main())


def test_what_was_sent_before_a_close_in_the_same_read_still_goes() -> None:
    async def main() -> None:
        client = peer()
        planned = [payload(i, 56) for i in range(5)]
        protocol = replying(planned)
        protocol.close_after = True
        transport, _sock = await server(protocol)
        await burst(client, transport, planned)
        await eventually(lambda: protocol.lost == [None])
        client.close()

    run(main())


def test_uvloop_gets_the_same_transport() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        client = peer()
        protocol = Scripted(lambda data, addr: [(data, addr)] * 3)
        transport, _ = await create_udp_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
        assert isinstance(transport, UdpTransport)
        client.sendto(b"ping", transport.get_extra_info("sockname"))
        assert await receive(client, 3) == [b"ping"] * 3
        transport.close()
        await eventually(lambda: protocol.lost == [None])
        client.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


def test_a_handler_that_sends_much_does_not_hold_it_all_back() -> None:
    async def main() -> None:
        client = peer()
        planned = [payload(i, 1_000) for i in range(200)]  # 200 KB in one read
        seen_during: list[int] = []

        def script(data: bytes, addr: Any) -> list[tuple[bytes, Any]]:
            return [(each, addr) for each in planned]

        class Watching(Scripted):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                super().datagram_received(data, addr)
                # Still inside the read: what has reached the client already?
                count = 0
                with contextlib.suppress(BlockingIOError):
                    while True:
                        received.append(client.recv(65536))
                        count += 1
                seen_during.append(count)

        received: list[bytes] = []
        transport, sock = await server(Watching(script))
        client.sendto(b"go", transport.get_extra_info("sockname"))
        await eventually(lambda: bool(seen_during))
        # Flushed at each segmented send's worth, not at the end of the read.
        assert seen_during[0] >= 100
        received += await receive(client, len(planned) - len(received))
        assert received == planned
        assert sock.single == 0
        transport.close()
        client.close()

    run(main())
