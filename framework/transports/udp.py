"""A UDP transport for asyncio's selector loops that reads every ready datagram at once.

asyncio's own datagram transport makes one ``recvfrom(256 KiB)`` call per
event-loop iteration: a 256 KiB allocation per datagram (shrunk afterwards)
and a trip through the selector for each one. :class:`UdpTransport` reads
into one reused buffer sized to the largest datagram accepted plus one
byte, copies out only the bytes received, and keeps reading until the socket
has nothing more (or a budget is spent, so other connections get their
turn). It presents the ``asyncio.DatagramTransport`` interface, so a
``DatagramProtocol`` cannot tell the difference.

uvloop's UDP transport is already native and faster: :func:`create_udp_endpoint`
hands uvloop's loops to ``loop.create_datagram_endpoint``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["UdpTransport", "create_udp_endpoint", "is_uvloop"]

log = logging.getLogger("wirekit.udp")

#: Datagrams read per readiness event before other callbacks get a turn.
READ_BUDGET = 256
#: Bytes queued for sending (the socket buffer was full) before the protocol
#: is asked to pause writing: asyncio's datagram default.
WRITE_HIGH_WATER = 64 * 1024

#: The largest payload a UDP datagram can carry (over IPv6; 65,507 over IPv4).
MAX_UDP_PAYLOAD = 65_527

Address = Any


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is a uvloop loop (whose own UDP transport is native)."""
    return type(loop).__module__.partition(".")[0] == "uvloop"


class UdpTransport(asyncio.DatagramTransport):
    """A datagram transport over a non-blocking UDP socket of a selector event loop.

    ``max_size`` is the largest datagram delivered whole. A larger one is
    delivered cut to ``max_size + 1`` bytes, so a protocol that checks the
    size (wirekit's datagram runtime) sees it is too large and drops it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        *,
        max_size: int = MAX_UDP_PAYLOAD,
        connected: bool = False,
        waiter: asyncio.Future[None] | None = None,
    ) -> None:
        super().__init__()
        self._waiter = waiter
        self._loop = loop
        self._sock = sock
        self._fileno = sock.fileno()
        self._protocol = protocol
        self._connected = connected
        self._buffer = bytearray(max_size + 1)
        self._view = memoryview(self._buffer)
        self._send_queue: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._queued = 0
        self._high_water = WRITE_HIGH_WATER
        self._low_water = WRITE_HIGH_WATER // 4
        self._writing_paused = False
        self._reading = False
        self._closing = False
        self._lost = False
        self._extra: dict[str, Any] = {"socket": sock}
        with contextlib.suppress(OSError):
            self._extra["sockname"] = sock.getsockname()
        if connected:
            with contextlib.suppress(OSError):
                self._extra["peername"] = sock.getpeername()
        loop.call_soon(self._start)

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<UdpTransport fd={self._fileno} {state} {self._extra.get('sockname')}>"

    def _start(self) -> None:
        try:
            if self._closing:
                return
            self._protocol.connection_made(self)
            if not self._closing:
                self.resume_reading()
        finally:
            # Like asyncio's transports, the opener returns only once the
            # protocol has its transport: a caller that closes the protocol
            # at once must find something to close.
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    # -- reading --------------------------------------------------------------------

    def _read_ready(self) -> None:
        recvfrom_into = self._sock.recvfrom_into
        view = self._view
        received = self._protocol.datagram_received
        for _ in range(READ_BUDGET):
            if not self._reading:
                return  # closed or paused by the protocol meanwhile
            try:
                size, addr = recvfrom_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors reported on the socket (port unreachable after
                # a send on a connected socket): the protocol decides.
                self._protocol.error_received(exc)
                continue
            received(bytes(view[:size]), addr)

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`."""
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fileno)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fileno, self._read_ready)

    def is_reading(self) -> bool:
        """Whether the transport is reading."""
        return self._reading

    # -- writing --------------------------------------------------------------------

    def sendto(self, data: Any, addr: Address = None) -> None:
        """Send one datagram to ``addr`` (``None`` on a connected socket).

        Sent at once when the socket accepts it; queued (and the protocol
        asked to pause writing past the high-water mark) when its buffer is
        full. Errors go to the protocol's ``error_received``.
        """
        if self._closing:
            return  # like asyncio: a datagram to a closing transport is dropped
        if self._connected and addr is not None and addr != self._extra.get("peername"):
            raise ValueError(f"invalid address: must be None or {self._extra.get('peername')}")
        if not self._send_queue:
            try:
                if addr is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fileno, self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        self._send_queue.append((bytes(data), addr))
        self._queued += len(data)
        self._maybe_pause_writing()

    def _write_ready(self) -> None:
        queue = self._send_queue
        while queue:
            data, addr = queue[0]
            try:
                if addr is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            queue.popleft()
            self._queued -= len(data)
        self._loop.remove_writer(self._fileno)
        self._maybe_resume_writing()
        if self._closing:
            self._finish(None)

    def _maybe_pause_writing(self) -> None:
        if not self._writing_paused and self._queued > self._high_water:
            self._writing_paused = True
            try:
                self._protocol.pause_writing()
            except Exception:
                log.exception("%r: protocol.pause_writing() failed", self)

    def _maybe_resume_writing(self) -> None:
        if self._writing_paused and self._queued <= self._low_water:
            self._writing_paused = False
            try:
                self._protocol.resume_writing()
            except Exception:
                log.exception("%r: protocol.resume_writing() failed", self)

    def get_write_buffer_size(self) -> int:
        """Bytes queued because the socket's send buffer was full."""
        return self._queued

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)`` water marks of the send queue."""
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the send queue's water marks (asyncio's rules: low defaults to high / 4)."""
        high = WRITE_HIGH_WATER if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_writing()

    def can_write_eof(self) -> bool:
        """Datagrams have no end of stream."""
        return False

    # -- closing --------------------------------------------------------------------

    def is_closing(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` was called."""
        return self._closing

    def close(self) -> None:
        """Stop reading; send what is queued, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        self._reading = False
        if not self._send_queue:
            self._loop.call_soon(self._finish, None)

    def abort(self) -> None:
        """Close at once, dropping queued datagrams."""
        self._abort(None)

    def _abort(self, exc: Exception | None) -> None:
        self._closing = True
        self.pause_reading()
        if self._send_queue:
            self._loop.remove_writer(self._fileno)
            self._send_queue.clear()
            self._queued = 0
        self._loop.call_soon(self._finish, exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``, ``sockname`` and, when connected, ``peername``."""
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol this transport delivers to."""
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver to ``protocol`` from now on."""
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol


async def create_udp_endpoint(
    factory: Callable[[], asyncio.DatagramProtocol],
    *,
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
    reuse_port: bool = False,
    max_size: int = MAX_UDP_PAYLOAD,
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    """Open a UDP socket like ``loop.create_datagram_endpoint``, with a :class:`UdpTransport`.

    Bind to ``local_addr`` (a server) or connect to ``remote_addr`` (a
    client). On uvloop, whose own UDP transport is native, this is
    ``loop.create_datagram_endpoint`` itself. Raises ``OSError`` as it does.
    """
    loop = asyncio.get_running_loop()
    if is_uvloop(loop):
        return await loop.create_datagram_endpoint(
            factory,
            local_addr=local_addr,
            remote_addr=remote_addr,
            reuse_port=reuse_port or None,
        )
    if (local_addr is None) == (remote_addr is None):
        raise ValueError("give exactly one of local_addr and remote_addr")
    host, port = local_addr if local_addr is not None else remote_addr  # type: ignore[misc]
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, f"getaddrinfo({host!r}) returned nothing")
    error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if local_addr is not None:
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
            else:
                await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()  # cancelled while connecting
            raise
        protocol = factory()
        waiter: asyncio.Future[None] = loop.create_future()
        transport = UdpTransport(
            loop,
            sock,
            protocol,
            max_size=max_size,
            connected=remote_addr is not None,
            waiter=waiter,
        )
        try:
            await waiter
        except BaseException:
            transport.abort()
            raise
        return transport, protocol
    assert error is not None
    raise error
