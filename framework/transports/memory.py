"""An in-memory, in-process stream transport: ``memory://NAME``.

Two :class:`MemoryTransport` objects form a connected pair. They behave like
a socket's asyncio transport where it matters to a protocol: delivery is
asynchronous (one loop iteration later), reading can be paused, and a writer
whose peer does not read sees its write buffer grow and gets
``pause_writing`` past the high-water mark. Nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable
from typing import Any

from framework.errors import TransportError

__all__ = ["MemoryListener", "MemoryTransport", "connect", "listen", "memory_pair"]

_listeners: dict[str, MemoryListener] = {}
_ports = itertools.count(1)


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory byte pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__()
        self._loop = loop
        self._name = name
        self._protocol: asyncio.Protocol | None = None
        self._peer: MemoryTransport | None = None
        self._inbound: collections.deque[bytes] = collections.deque()
        self._inbound_size = 0
        self._reading = True
        self._closing = False
        self._lost = False
        self._eof_pending = False
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
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        peer = self._peer
        # Graceful: what we wrote is already in the peer's inbound queue; the
        # peer sees end-of-stream after it.
        if peer is not None and not peer._lost:
            peer._eof_pending = True
            peer._schedule()
        self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._inbound.clear()
        peer = self._peer
        if peer is not None and not peer._lost:
            peer._inbound.clear()
            peer._inbound_size = 0
            peer._closing = True
            self._loop.call_soon(peer._connection_lost, ConnectionResetError("peer aborted"))
        self._loop.call_soon(self._connection_lost, None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # -- reading ------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

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
        peer = self._peer
        return peer._inbound_size if peer is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        peer = self._peer
        if peer is None or peer._lost or not data:
            return
        peer._inbound.append(bytes(data))
        peer._inbound_size += len(data)
        peer._schedule()
        if not self._write_paused and peer._inbound_size > self._high:
            self._write_paused = True
            assert self._protocol is not None
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False

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
        if writer is not None and writer._write_paused and self._inbound_size <= writer._low:
            writer._write_paused = False
            if writer._protocol is not None and not writer._lost:
                writer._protocol.resume_writing()
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
    """Connect two protocols through an in-memory pipe; both see ``connection_made`` now."""
    loop = asyncio.get_running_loop()
    number = next(_ports)
    left = MemoryTransport(loop, f"{name}#{number}c")
    right = MemoryTransport(loop, f"{name}#{number}s")
    left._peer, right._peer = right, left
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
