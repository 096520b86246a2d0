"""In-memory, in-process transports: ``memory://NAME`` streams and ``memory+udp://NAME`` datagrams.

Two :class:`MemoryTransport` objects form a connected pair. They behave like
a socket's asyncio transport where it matters to a protocol: delivery is
asynchronous (one loop iteration later), reading can be paused, a writer
whose peer does not read sees its write buffer grow and gets
``pause_writing`` past the high-water mark, ``write_eof`` half-closes, and
``close`` ends the connection once what was written has left. Nothing
leaves the process.

:class:`MemoryDatagramTransport` is a UDP socket's asyncio transport in the
same way: a server binds ``memory+udp://NAME``, clients are connected to it,
addresses are ``(host, port)`` tuples (``("memory+udp://NAME", 0)`` for the
server, another port for each client), and a datagram is delivered whole,
one loop iteration later, or lost when nobody is bound to its address.

What carries bytes between two ends is a :class:`Link` (streams) or a
:class:`Route` (datagrams). The plain ones deliver at once;
:mod:`framework.testing.faults` installs ones that cut, delay, stall, drop,
duplicate, reorder and reset, with :func:`install_links` and
:func:`install_routes`.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
from collections.abc import Callable
from typing import Any

from framework.core.errors import ConfigError, TransportError
from framework.core.limits import MAX_UDP_PAYLOAD

__all__ = [
    "MAX_DATAGRAM_SIZE",
    "Link",
    "LinkFactory",
    "MemoryDatagramTransport",
    "MemoryListener",
    "MemoryTransport",
    "Route",
    "RouteFactory",
    "bind_datagrams",
    "connect",
    "install_links",
    "install_routes",
    "listen",
    "memory_pair",
    "open_datagrams",
]

_listeners: dict[str, MemoryListener] = {}
_ports = itertools.count(1)


class Link:
    """Carries one direction of a ``memory://`` connection, from ``writer`` to ``receiver``.

    The contract: ``send`` takes the bytes the writer wrote and hands them,
    in order, to ``receiver.feed`` (now or later); ``send_eof`` is handed
    on as ``receiver.feed_eof`` after them. ``pending`` is the number of
    bytes the link holds: they count in the writer's write buffer, and when
    the link has handed on everything it held it calls
    ``writer.link_drained()``. ``cancel`` drops what it holds (the
    connection was aborted). This plain link delivers at once.
    """

    def __init__(self, writer: MemoryTransport, receiver: MemoryTransport) -> None:
        self.writer = writer
        self.receiver = receiver
        self.pending = 0

    def send(self, data: bytes) -> None:
        """Carry ``data`` to the receiver."""
        self.receiver.feed(data)

    def send_eof(self) -> None:
        """Carry the end of the writer's stream, after every byte sent before."""
        self.receiver.feed_eof()

    def cancel(self) -> None:
        """Drop whatever the link holds."""


#: Makes the link of one direction: ``(writer, receiver, direction)``, where
#: ``direction`` is ``"to_server"`` or ``"to_client"``.
LinkFactory = Callable[["MemoryTransport", "MemoryTransport", str], Link]
_link_factories: dict[str, LinkFactory] = {}


def install_links(name: str, factory: LinkFactory | None) -> None:
    """Carry new connections to ``memory://name`` over links from ``factory`` (``None``: plain)."""
    if factory is None:
        _link_factories.pop(name, None)
        return
    if name in _link_factories:
        raise ConfigError(f"memory://{name} already has links installed", option="url")
    _link_factories[name] = factory


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory byte pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__()
        self._loop = loop
        self._name = name
        self._protocol: asyncio.Protocol | None = None
        self._peer: MemoryTransport | None = None
        self._out: Link | None = None
        self._inbound: collections.deque[bytes] = collections.deque()
        self._inbound_size = 0
        self._reading = True
        self._closing = False
        self._lost = False
        self._eof_pending = False
        self._eof_sent = False
        self._reset: Exception | None = None
        self._scheduled = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._write_paused = False

    # -- asyncio.BaseTransport --------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return f"memory://{self._name}"
        if name == "peername" and self._peer is not None:
            return f"memory://{self._peer._name}"
        return default

    def is_closing(self) -> bool:
        return self._closing or self._reset is not None

    def close(self) -> None:
        if self.is_closing():
            return
        self._closing = True
        # Graceful: the peer sees end-of-stream after what we wrote, and we
        # are gone once it has all left (as a socket flushes before closing).
        self._send_eof()
        if self._out is None or not self._out.pending:
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._drop_everything()
        peer = self._peer
        if peer is not None and not peer._lost:
            peer._closing = True
            peer._drop_everything()
            self._loop.call_soon(peer._connection_lost, ConnectionResetError("peer aborted"))
        self._loop.call_soon(self._connection_lost, None)

    def _drop_everything(self) -> None:
        self._inbound.clear()
        self._inbound_size = 0
        if self._out is not None:
            self._out.cancel()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # -- reading ------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self.is_closing()

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._schedule()

    # -- writing ------------------------------------------------------------------------

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        self._high, self._low = high, low

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet read by the peer's protocol (in the link or its inbox)."""
        peer = self._peer
        held = self._out.pending if self._out is not None else 0
        return held + (peer._inbound_size if peer is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_sent and not self._closing:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.is_closing() or not data:
            return
        peer, link = self._peer, self._out
        if peer is None or peer._lost or link is None:
            return
        link.send(bytes(data))
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            assert self._protocol is not None
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: the peer sees end-of-stream after what was written; reading goes on."""
        if not self.is_closing():
            self._send_eof()

    def _send_eof(self) -> None:
        if not self._eof_sent and self._out is not None:
            self._eof_sent = True
            self._out.send_eof()

    def _maybe_resume_writing(self) -> None:
        if self._write_paused and not self._lost and self.get_write_buffer_size() <= self._low:
            self._write_paused = False
            if self._protocol is not None:
                self._protocol.resume_writing()

    def link_drained(self) -> None:
        """Called by this end's outgoing link once it holds nothing more."""
        self._maybe_resume_writing()
        if self._closing and not self._lost:
            self._loop.call_soon(self._connection_lost, None)

    # -- what links hand us -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the peer, for this end's protocol (in a later loop iteration)."""
        if self._lost or self._reset is not None:
            return
        self._inbound.append(data)
        self._inbound_size += len(data)
        self._schedule()

    def feed_eof(self) -> None:
        """The peer's end of stream, after every byte fed before it."""
        if not self._lost:
            self._eof_pending = True
            self._schedule()

    def feed_reset(self, exc: Exception) -> None:
        """A reset: what was fed is handed on (if reading), then the connection is lost."""
        if self._lost or self._reset is not None:
            return
        self._reset = exc
        if self._out is not None:
            self._out.cancel()
        self._schedule()

    # -- delivery -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self._lost:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        protocol = self._protocol
        if self._lost or protocol is None:
            return
        # Like a socket transport, a closing end reads nothing more: a
        # protocol that closes in data_received gets no further chunks.
        while self._inbound and self._reading and not self._closing:
            data = self._inbound.popleft()
            self._inbound_size -= len(data)
            protocol.data_received(data)
            if self._lost:  # data_received may close us; mypy cannot see that
                return  # type: ignore[unreachable]
        writer = self._peer
        if writer is not None:
            writer._maybe_resume_writing()
        if self._reset is not None:
            # A reset discards what the protocol has not read yet.
            self._closing = True
            self._drop_everything()
            self._connection_lost(self._reset)
            return
        if not self._inbound and self._eof_pending and not self._closing:
            self._eof_pending = False
            keep_open = protocol.eof_received()
            if not keep_open:
                self.close()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self._protocol is not None:
            self._protocol.connection_lost(exc)


def memory_pair(
    client: asyncio.Protocol, server: asyncio.Protocol, *, name: str = "pair"
) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect two protocols through an in-memory pipe; both see ``connection_made`` now.

    Links installed for ``name`` (see :func:`install_links`) carry the bytes.
    """
    loop = asyncio.get_running_loop()
    number = next(_ports)
    left = MemoryTransport(loop, f"{name}#{number}c")
    right = MemoryTransport(loop, f"{name}#{number}s")
    left._peer, right._peer = right, left
    factory = _link_factories.get(name)
    if factory is None:
        left._out, right._out = Link(left, right), Link(right, left)
    else:
        left._out, right._out = factory(left, right, "to_server"), factory(right, left, "to_client")
    left.set_protocol(client)
    right.set_protocol(server)
    server.connection_made(right)
    client.connection_made(left)
    return left, right


class MemoryListener:
    """A named in-process listener that ``memory://NAME`` clients connect to."""

    def __init__(self, name: str, factory: Callable[[], asyncio.Protocol]) -> None:
        self.name = name
        self._factory = factory
        self._closed = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        """Stop accepting new connections."""
        if _listeners.get(self.name) is self:
            del _listeners[self.name]
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has been called."""
        await asyncio.shield(self._closed)


def listen(name: str, factory: Callable[[], asyncio.Protocol]) -> MemoryListener:
    """Accept ``memory://name`` connections with protocols from ``factory``."""
    if name in _listeners:
        raise TransportError(f"memory://{name} is already in use", peer=f"memory://{name}")
    listener = MemoryListener(name, factory)
    _listeners[name] = listener
    return listener


def connect(
    name: str, factory: Callable[[], asyncio.Protocol]
) -> tuple[MemoryTransport, asyncio.Protocol]:
    """Connect to the ``memory://name`` listener."""
    listener = _listeners.get(name)
    if listener is None:
        raise TransportError(f"nothing listens on memory://{name}", peer=f"memory://{name}")
    client = factory()
    transport, _server_side = memory_pair(client, listener._factory(), name=name)
    return transport, client


# -- datagrams -------------------------------------------------------------------------------

#: The largest datagram a ``memory+udp://`` socket sends: what IPv4 UDP carries.
MAX_DATAGRAM_SIZE = MAX_UDP_PAYLOAD

#: A memory+udp socket's address, as a UDP socket's is (host, port).
Address = tuple[str, int]
_sockets: dict[Address, MemoryDatagramTransport] = {}


class Route:
    """Carries datagrams from one ``memory+udp://`` socket to one address.

    ``send`` takes one datagram; the route calls :meth:`arrive` with it (or
    with a changed copy, more than once, or never) when it should reach the
    address. This plain route delivers every datagram, unchanged, one loop
    iteration later.
    """

    def __init__(self, sender: MemoryDatagramTransport, target: Address) -> None:
        self.sender = sender
        self.target = target

    def send(self, data: bytes) -> None:
        """Carry one datagram."""
        self.sender._loop.call_soon(self.arrive, data)

    def arrive(self, data: bytes) -> bool:
        """Hand ``data`` to whoever is bound to the target address now; ``False`` if nobody is."""
        receiver = _sockets.get(self.target)
        if receiver is not None and not receiver.is_closing():
            receiver._receive(data, self.sender.address)
            return True
        if self.sender.remote == self.target:
            # A connected UDP socket learns of it (ICMP port unreachable).
            self.sender._error(ConnectionRefusedError(f"nothing is bound to {self.target[0]}"))
        return False


#: Makes the route from a socket to an address: ``(sender, target, direction)``,
#: where ``direction`` is ``"to_server"`` or ``"to_client"``.
RouteFactory = Callable[["MemoryDatagramTransport", Address, str], Route]
_route_factories: dict[str, RouteFactory] = {}
# Bumped whenever routes are installed or removed: sockets then make new
# ones, so faults apply to what is sent while they are installed. A route
# replaced this way still delivers what it holds.
_route_generation = 0


def install_routes(name: str, factory: RouteFactory | None) -> None:
    """Carry datagrams to and from ``memory+udp://name`` over routes from ``factory``."""
    global _route_generation
    _route_generation += 1
    if factory is None:
        _route_factories.pop(name, None)
        return
    if name in _route_factories:
        raise ConfigError(f"memory+udp://{name} already has routes installed", option="url")
    _route_factories[name] = factory


class MemoryDatagramTransport(asyncio.DatagramTransport):
    """An in-memory UDP socket: bound to ``address``, connected to ``remote`` or not."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        network: str,
        address: Address,
        protocol: asyncio.DatagramProtocol,
        remote: Address | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self.network = network
        self.address = address
        self.remote = remote
        self._protocol = protocol
        self._routes: dict[Address, Route] = {}
        self._routes_generation = _route_generation
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.address
        if name == "peername" and self.remote is not None:
            return self.remote
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if _sockets.get(self.address) is self:
            del _sockets[self.address]
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        target = self.remote if addr is None else _address(addr)
        if target is None:
            raise ValueError("an unconnected socket needs an address to send to")
        if self.remote is not None and target != self.remote:
            raise ValueError(f"Invalid address: must be None or {self.remote}")
        if self._closing:
            return
        if len(data) > MAX_DATAGRAM_SIZE:
            # What a socket's sendto() reports, and asyncio hands to error_received.
            self._error(OSError(errno.EMSGSIZE, "Message too long"))
            return
        if self._routes_generation != _route_generation:
            self._routes.clear()
            self._routes_generation = _route_generation
        route = self._routes.get(target)
        if route is None:
            route = self._routes[target] = self._make_route(target)
        route.send(bytes(data))

    def _make_route(self, target: Address) -> Route:
        factory = _route_factories.get(self.network)
        if factory is None:
            return Route(self, target)
        direction = "to_server" if self.remote is not None else "to_client"
        return factory(self, target, direction)

    def _receive(self, data: bytes, sender: Address) -> None:
        if not self._closing:
            self._protocol.datagram_received(data, sender)

    def _error(self, exc: Exception) -> None:
        if not self._closing:
            self._loop.call_soon(self._protocol.error_received, exc)


def _address(addr: Any) -> Address:
    if (
        not isinstance(addr, tuple)
        or len(addr) != 2
        or not isinstance(addr[0], str)
        or not isinstance(addr[1], int)
    ):
        raise ValueError(f"a memory+udp address is a (host, port) tuple, got {addr!r}")
    return addr[0], addr[1]


def bind_datagrams(
    name: str, factory: Callable[[], asyncio.DatagramProtocol]
) -> tuple[MemoryDatagramTransport, asyncio.DatagramProtocol]:
    """Bind ``memory+udp://name`` with a protocol from ``factory``."""
    address = (f"memory+udp://{name}", 0)
    if address in _sockets:
        raise TransportError(f"memory+udp://{name} is already in use", peer=address[0])
    loop = asyncio.get_running_loop()
    protocol = factory()
    transport = MemoryDatagramTransport(loop, name, address, protocol)
    _sockets[address] = transport
    protocol.connection_made(transport)
    return transport, protocol


def open_datagrams(
    name: str, factory: Callable[[], asyncio.DatagramProtocol]
) -> tuple[MemoryDatagramTransport, asyncio.DatagramProtocol]:
    """A socket connected to ``memory+udp://name`` (bound or not, as with UDP)."""
    loop = asyncio.get_running_loop()
    host = f"memory+udp://{name}"
    address = (host, next(_ports))
    protocol = factory()
    transport = MemoryDatagramTransport(loop, name, address, protocol, remote=(host, 0))
    _sockets[address] = transport
    protocol.connection_made(transport)
    return transport, protocol
