"""A UDP transport that reads every ready datagram at once and sends a read's replies together.

asyncio's own datagram transport makes one ``recvfrom(256 KiB)`` call per
event-loop iteration: a 256 KiB allocation per datagram (shrunk afterwards)
and a trip through the selector for each one. :class:`UdpTransport` reads
into one reused buffer sized to the largest datagram accepted plus one
byte, copies out only the bytes received, and keeps reading until the socket
has nothing more (or a budget is spent, so other connections get their
turn). What the protocol sends meanwhile goes out once the read's datagrams
are handled, a run of one size to one address in one system call where
Linux's UDP segmentation offload allows (see :meth:`UdpTransport._send_batch`).
It presents the ``asyncio.DatagramTransport`` interface, so a
``DatagramProtocol`` cannot tell the difference.

It runs on any loop with ``add_reader`` and ``add_writer``, uvloop's
included: there it replaces uvloop's native transport, which sends each
datagram with its own system call (measured on the performance page).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["SEND_QUEUE_FACTOR", "SendQueueFull", "UdpTransport", "create_udp_endpoint"]

log = logging.getLogger("wirekit.udp")

#: Datagrams read per readiness event before other callbacks get a turn.
READ_BUDGET = 256
#: Bytes queued for sending (the socket buffer was full) before the protocol
#: is asked to pause writing: asyncio's datagram default.
WRITE_HIGH_WATER = 64 * 1024
#: The send queue's bound, in high-water marks (256 KiB by default): past it
#: a datagram is dropped, not queued. UDP may lose a datagram; a socket
#: whose buffer stays full must not make the process hoard them.
SEND_QUEUE_FACTOR = 4

#: Bytes read per datagram: the largest UDP payload over IPv6 (the core's
#: MAX_UDP_PAYLOAD, 65,507, is the IPv4 one), so no datagram is ever cut short.
RECEIVE_SIZE = 65_527

#: Whether a read's replies may be sent with Linux's UDP segmentation
#: offload (kernel 4.18+): several datagrams of one size to one address in
#: one system call. A socket whose kernel refuses it stops trying.
GSO = sys.platform.startswith("linux")
#: ``UDP_SEGMENT`` from linux/udp.h (Python 3.11's socket module lacks it).
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: Datagrams per segmented send: the kernel's limit (UDP_MAX_SEGMENTS).
GSO_MAX_SEGMENTS = 64
#: Segments no larger than this fit in one packet of any IPv6 route (its
#: 1,280-byte minimum MTU less the headers); a larger one would be refused.
GSO_MAX_SEGMENT = 1_232
#: Payload per segmented send: below the 64 KiB of one IP datagram.
GSO_MAX_BYTES = 60_000
_NO_GSO = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
_GSO_FAMILIES = (socket.AF_INET, socket.AF_INET6)

Address = Any


class SendQueueFull(OSError):
    """A datagram the transport dropped: its send queue was at its bound.

    Handed to the protocol's ``error_received``, asyncio's channel for a
    datagram that could not be sent; ``size`` and ``addr`` say which.
    """

    def __init__(self, size: int, addr: Address, queued: int) -> None:
        super().__init__(
            errno.ENOBUFS, f"send queue full ({queued} bytes queued): {size}-byte datagram dropped"
        )
        self.size = size
        self.addr = addr


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
        max_size: int = RECEIVE_SIZE,
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
        self._max_queued = WRITE_HIGH_WATER * SEND_QUEUE_FACTOR
        self._dropped = 0
        self._writing_paused = False
        self._reading = False
        self._batch: list[tuple[bytes, Address]] | None = None  # a read's sends, until it ends
        self._batched = 0  # bytes in _batch
        self._gso = GSO and sock.type == socket.SOCK_DGRAM and sock.family in _GSO_FAMILIES
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
        # What the protocol sends while handling these datagrams is sent
        # when they are all handled, as few system calls as it takes (see
        # _send_batch): the replies to one read, like a stream's.
        batch: list[tuple[bytes, Address]] = []
        self._batch = batch
        try:
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
        finally:
            self._batch = None
            self._batched = 0
            if batch:
                self._send_batch(batch)

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
        full; dropped when the queue is at its bound (``SEND_QUEUE_FACTOR``
        high-water marks), reported to ``error_received`` as
        :class:`SendQueueFull`. Errors go to the protocol's ``error_received``.
        """
        if self._closing:
            return  # like asyncio: a datagram to a closing transport is dropped
        if self._connected and addr is not None and addr != self._extra.get("peername"):
            raise ValueError(f"invalid address: must be None or {self._extra.get('peername')}")
        batch = self._batch
        if batch is not None and not self._send_queue:
            # During a read: sent once the read's datagrams are handled, or
            # as soon as they make a segmented send's worth (so a handler
            # that sends much holds no more than that back).
            data = data if type(data) is bytes else bytes(data)
            batch.append((data, addr))
            self._batched += len(data)
            if self._batched >= GSO_MAX_BYTES:
                pending = batch[:]
                batch.clear()  # what error_received sends meanwhile joins the next
                self._batched = 0
                self._send_batch(pending)
            return
        self._send_one(data, addr)

    def _send_one(self, data: Any, addr: Address) -> None:
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
        size = len(data)
        if self._queued + size > self._max_queued:
            # Only when the socket's buffer is full: the usual send never gets here.
            self._dropped += 1
            self._protocol.error_received(SendQueueFull(size, addr, self._queued))
            return
        self._send_queue.append((bytes(data), addr))
        self._queued += size
        self._maybe_pause_writing()

    def _send_batch(self, batch: list[tuple[bytes, Address]]) -> None:
        """Send a read's datagrams in order; a run of one size to one address in one call.

        With Linux's UDP segmentation offload (``UDP_SEGMENT``), one
        ``sendmsg`` hands the kernel up to 64 datagrams of one size for one
        address (the last may be shorter), and the kernel sends them as
        that many datagrams: the peer cannot tell. Where the kernel or the
        route refuses it, the transport stops asking and sends each on its
        own, as it does any datagram not in such a run.
        """
        count = len(batch)
        if count == 1:  # the usual read of a quiet socket: nothing to gather
            self._send_one(*batch[0])
            return
        index = 0
        while index < count:
            data, addr = batch[index]
            size = len(data)
            stop = index + 1
            if self._gso and 0 < size <= GSO_MAX_SEGMENT:
                limit = min(count, index + GSO_MAX_SEGMENTS, index + GSO_MAX_BYTES // size)
                while stop < limit and batch[stop][1] == addr and len(batch[stop][0]) == size:
                    stop += 1
                if stop < limit and batch[stop][1] == addr and 0 < len(batch[stop][0]) < size:
                    stop += 1  # a shorter last segment
            if stop - index > 1 and self._send_segments(batch[index:stop], size, addr):
                index = stop
                continue
            for data, addr in batch[index:stop]:
                self._send_one(data, addr)
            index = stop

    def _send_segments(self, run: list[tuple[bytes, Address]], size: int, addr: Address) -> bool:
        """Send ``run`` in one segmented ``sendmsg``; ``False``: send each on its own."""
        if self._send_queue:
            return False
        option = [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
        payload = [b"".join([data for data, _addr in run])]
        try:
            if addr is None:
                self._sock.sendmsg(payload, option)
            else:
                self._sock.sendmsg(payload, option, 0, addr)
        except (BlockingIOError, InterruptedError):
            return False  # the first on its own waits for the socket, the rest queue behind
        except OSError as exc:
            if exc.errno in _NO_GSO:
                log.debug("%r: segmentation offload refused (%s): one by one now", self, exc)
                self._gso = False
            else:
                self._protocol.error_received(exc)
            return False
        return True

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

    @property
    def dropped(self) -> int:
        """Datagrams dropped because the send queue was at its bound."""
        return self._dropped

    @property
    def max_queued(self) -> int:
        """The send queue's bound in bytes: ``SEND_QUEUE_FACTOR`` high-water marks."""
        return self._max_queued

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)`` water marks of the send queue."""
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the send queue's water marks (asyncio's rules: low defaults to high / 4).

        The queue's bound follows: ``SEND_QUEUE_FACTOR`` times ``high``.
        """
        high = WRITE_HIGH_WATER if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._max_queued = high * SEND_QUEUE_FACTOR
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
    max_size: int = RECEIVE_SIZE,
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    """Open a UDP socket like ``loop.create_datagram_endpoint``, with a :class:`UdpTransport`.

    Bind to ``local_addr`` (a server) or connect to ``remote_addr`` (a
    client), on any event loop, uvloop's included. Raises ``OSError`` as
    ``loop.create_datagram_endpoint`` does.
    """
    loop = asyncio.get_running_loop()
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
