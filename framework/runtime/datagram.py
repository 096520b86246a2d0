"""UDP: one datagram is one frame, and each peer address is a virtual connection.

Handlers see the same :class:`~framework.runtime.connection.Connection` API
as on a stream. A datagram that is too large or fails to decode is dropped
and counted; the socket goes on serving every other peer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import attrs

from framework.errors import FrameTooLarge, WirekitError
from framework.limits import Limits
from framework.pipeline import Pipeline
from framework.router import Router
from framework.runtime.connection import Connection, ConnectionClosed, _kind

__all__ = ["DatagramClient", "DatagramPeer", "DatagramServer", "DatagramStats"]

log = logging.getLogger("wirekit.udp")


@attrs.define
class DatagramStats:
    """Counters of a UDP socket, over all peers."""

    received: int = 0
    dropped_oversize: int = 0
    dropped_undecodable: int = 0
    dropped_no_capacity: int = 0
    sent: int = 0


class DatagramPeer(Connection):
    """The virtual connection of one remote address on a UDP server."""

    def __init__(self, server: DatagramServer, addr: Any) -> None:
        super().__init__(
            server.pipeline,
            router=server.router,
            limits=server.limits,
            handler_errors=server.handler_errors,
        )
        self.peer = addr
        self._server = server
        self.last_activity = self._loop.time()

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self._server.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        encode = self.pipeline.encode_datagram
        if strict:
            datagrams = [encode(value) for value in values]
        else:
            datagrams = self._encode_each(values, encode)
        for data in datagrams:
            transport.sendto(data, self.peer)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(data)
            self._server.stats.sent += 1

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        # A bad datagram costs only itself: count it, let the fallback see it.
        self.stats.errors += 1
        self._server.stats.dropped_undecodable += 1
        router = self._router
        if router is not None and router.fallback_handler is not None:
            self._call(router.fallback_handler, error, error)
        else:
            log.info("%r: dropped datagram: %s: %s", self, type(error).__name__, error)

    def _handler_failed(self, subject: Any) -> None:
        # The documented policy: a UDP peer is never closed by a handler
        # error (closing would only forget its state; its next datagram
        # would make a new virtual connection anyway).
        self.stats.errors += 1
        log.exception("%r: handler for %s raised", self, _kind(subject))

    def _pause_inbox(self) -> None:
        # Nobody may ever call receive() on a server's peer: keep the newest
        # max_queued values, drop and count the rest.
        while len(self._inbox) > self._limits.max_queued:
            self._inbox.popleft()
            self._server.stats.dropped_no_capacity += 1

    def _closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        """Forget this peer (its next datagram makes a new virtual connection)."""
        self._server._forget(self)

    def abort(self) -> None:
        """Same as :meth:`close`: there is nothing to flush on UDP."""
        self.close()


class DatagramServer(asyncio.DatagramProtocol):
    """A UDP socket serving many peers through a pipeline and a router."""

    def __init__(
        self, pipeline: Pipeline, router: Router, limits: Limits, handler_errors: str = "close"
    ) -> None:
        self.pipeline = pipeline
        self.router = router
        self.limits = limits
        self.handler_errors = handler_errors
        self.stats = DatagramStats()
        self.peers: dict[Any, DatagramPeer] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._decode = pipeline.decode_datagram
        self._reading = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._schedule_sweep()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self._reading:
            return  # shutting down: start no new work
        stats = self.stats
        stats.received += 1
        if len(data) > self.limits.max_datagram_size:
            stats.dropped_oversize += 1
            log.info("dropped %d-byte datagram from %s: over max_datagram_size", len(data), addr)
            return
        peer = self.peers.get(addr)
        if peer is None:
            if len(self.peers) >= self.limits.max_peers:
                stats.dropped_no_capacity += 1
                return
            peer = DatagramPeer(self, addr)
            self.peers[addr] = peer
            peer._run_hooks(self.router.connect_hooks)
        peer.stats.bytes_in += len(data)
        peer.last_activity = peer._loop.time()
        if len(peer._tasks) >= self.limits.max_inflight_handlers:
            # UDP cannot push back: a peer with too much work running loses
            # the datagram, as it would to a full socket buffer.
            stats.dropped_no_capacity += 1
            return
        try:
            values = self._decode(data)
        except FrameTooLarge as exc:
            # Over the pipeline's own datagram limit (Datagram.max_frame_size).
            stats.dropped_oversize += 1
            peer.stats.errors += 1
            log.info("%r: dropped datagram: %s", peer, exc)
            return
        except WirekitError as exc:
            # A packed datagram's good frames still count; the bad one is dropped.
            values = exc.decoded
            exc.decoded = []
            peer._bad_input(exc, fatal=False)
            if not values:
                return
        replies: list[Any] = []
        peer._replies = replies
        try:
            peer._deliver(values)
        finally:
            peer._replies = None
            if replies and not peer.closed:
                peer._write_values(replies)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) for a datagram we sent: not fatal.
        log.debug("UDP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for peer in list(self.peers.values()):
            self._forget(peer, exc)

    def _forget(self, peer: DatagramPeer, exc: Exception | None = None) -> None:
        if self.peers.get(peer.peer) is peer:
            del self.peers[peer.peer]
        peer._mark_closed(exc)

    def _schedule_sweep(self) -> None:
        timeout = self.limits.idle_timeout
        if timeout is not None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(max(timeout / 2, 0.05), self._sweep)

    def _sweep(self) -> None:
        timeout = self.limits.idle_timeout
        assert timeout is not None
        now = asyncio.get_running_loop().time()
        for peer in [p for p in self.peers.values() if now - p.last_activity >= timeout]:
            log.debug("%r: idle, forgotten", peer)
            self._forget(peer)
        self._schedule_sweep()

    def stop_reading(self) -> None:
        """Ignore further datagrams (graceful shutdown)."""
        self._reading = False

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


class DatagramClient(Connection, asyncio.DatagramProtocol):
    """A client's UDP socket, connected to one server address."""

    def __init__(self, pipeline: Pipeline, *, limits: Limits) -> None:
        super().__init__(pipeline, router=None, limits=limits)
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.peer = transport.get_extra_info("peername")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.bytes_in += len(data)
        if len(data) > self._limits.max_datagram_size:
            self.dropped += 1
            return
        try:
            values = self.pipeline.decode_datagram(data)
        except WirekitError as exc:
            self.dropped += 1
            self.stats.errors += 1
            log.info("%r: dropped datagram: %s", self, exc)
            values = exc.decoded
        if values:
            self._deliver(values)

    def error_received(self, exc: Exception) -> None:
        log.debug("%r: UDP error: %s", self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed(exc)

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        encode = self.pipeline.encode_datagram
        datagrams = (
            [encode(value) for value in values] if strict else self._encode_each(values, encode)
        )
        for data in datagrams:
            transport.sendto(data)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(data)

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _pause_inbox(self) -> None:
        # UDP cannot push back; beyond max_queued, datagrams are dropped and counted.
        while len(self._inbox) > self._limits.max_queued:
            self._inbox.popleft()
            self.dropped += 1

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.abort()
