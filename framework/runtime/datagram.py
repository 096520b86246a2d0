"""UDP: one datagram is one frame, and each peer address is a virtual connection.

Handlers see the same :class:`~framework.runtime.connection.Connection` API
as on a stream. A datagram that is too large or fails to decode is dropped
and counted; the socket goes on serving every other peer.

What a server does with each datagram, in order, each step dropping and
counting what fails it (see :class:`DatagramStats`):

1. size: over ``Limits.max_datagram_size`` or the datagram framing's
   ``max_frame_size`` (``dropped_oversize``);
2. authentication, when the datagram framing has ``auth``: forged,
   truncated, unknown-key (``dropped_unauthenticated``) and replayed
   (``dropped_replayed``) datagrams never reach a peer, a hook or a decoder;
3. the peer's rate, when ``Limits.max_frames_per_second`` is set
   (``dropped_rate_limited``);
4. decoding (``dropped_undecodable``; the fallback handler sees the error).

On the way out, a peer whose address is not verified (no authenticated
datagram yet, no :meth:`DatagramPeer.verify_address`) is sent at most
``Limits.amplification_factor`` times the bytes received from it; replies
past that are dropped and counted (``dropped_amplification``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import attrs

from framework.core.errors import AuthenticationError, FrameTooLarge, ReplayedDatagram, WirekitError
from framework.core.framing import Datagram
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.ratelimit import TokenBucket
from framework.core.router import Router
from framework.core.security import AuthSession
from framework.runtime.connection import Connection, ConnectionClosed
from framework.runtime.dispatch import PLAIN_REPLIES, describe, loop_clock, needs_await

__all__ = ["DatagramClient", "DatagramPeer", "DatagramServer", "DatagramStats"]

log = logging.getLogger("wirekit.udp")


#: Seconds between two log lines about drops of the same kind: a flood of
#: bad datagrams must not become a flood of log lines.
LOG_INTERVAL = 1.0


@attrs.define
class DatagramStats:
    """Counters of a UDP socket, over all peers.

    ``received`` counts every datagram that arrived; each ``dropped_*``
    counts those dropped for one reason, ``dropped_amplification`` counts
    datagrams the server did not send, and ``sent`` those it sent.
    """

    received: int = 0
    dropped_oversize: int = 0
    dropped_undecodable: int = 0
    dropped_no_capacity: int = 0
    #: Forged, truncated, unknown-key or misdirected (``AuthenticationError``).
    dropped_unauthenticated: int = 0
    #: Authentic but seen before, or older than the anti-replay window.
    dropped_replayed: int = 0
    #: Over the peer's ``Limits.max_frames_per_second``.
    dropped_rate_limited: int = 0
    #: Replies not sent: over ``Limits.amplification_factor`` to an unverified peer.
    dropped_amplification: int = 0
    sent: int = 0


class _DropLog:
    """Log drops at INFO, at most one line per kind every ``LOG_INTERVAL`` seconds."""

    __slots__ = ("_held", "_next")

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, now: float, kind: str, message: str, *args: Any) -> None:
        if now < self._next.get(kind, float("-inf")):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._next[kind] = now + LOG_INTERVAL
        held = self._held.pop(kind, 0)
        if held:
            message += " (%d more dropped as %s since the last such line)"
            args = (*args, held, kind)
        log.info(message, *args)


def _sealer(
    session: AuthSession, framing: Datagram, encode: Callable[[Any], bytes]
) -> Callable[[Any], bytes]:
    """``encode`` then seal: one authenticated datagram per value, size checked after sealing."""

    def seal(value: Any) -> bytes:
        data = session.seal(encode(value))
        framing.check_size(len(data))
        return data

    return seal


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
        self._verified = False
        # The authentication session of this address's client (auth only):
        # replies are sealed for it.
        self._session: AuthSession | None = None
        self._bucket: TokenBucket | None = None
        rate = server.limits.max_frames_per_second
        if rate is not None:
            self._bucket = TokenBucket(rate, server.limits.frame_burst, now=self.last_activity)

    @property
    def address_verified(self) -> bool:
        """Whether this peer is known to receive what is sent to its address.

        True after its first authenticated datagram, or once
        :meth:`verify_address` has been called. Until then the server sends
        it at most ``Limits.amplification_factor`` times what it received.
        """
        return self._verified

    def verify_address(self) -> None:
        """Declare the peer's address verified: lift the amplification bound.

        Call it once the peer has proved it receives what is sent to its
        address: it echoed a cookie or nonce the server sent there (see
        ``docs/howto/udp-security.md``). A spoofed source address cannot
        do that.
        """
        self._verified = True

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        server = self._server
        transport = server.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        encode = server._encode
        if self._session is not None:
            encode = _sealer(self._session, self.pipeline.datagram_framing, encode)
        try:
            if len(values) == 1:
                datagrams = [encode(values[0])]  # the usual reply, without a comprehension
            else:
                datagrams = [encode(value) for value in values]
        except WirekitError:
            if strict:
                raise
            # One bad reply must not cost the others.
            datagrams = self._encode_each(values, encode)
        factor = None if self._verified else server.limits.amplification_factor
        stats = self.stats
        for data in datagrams:
            if factor is not None and stats.bytes_out + len(data) > factor * stats.bytes_in:
                # Not an error of the handler's: a spoofed source address
                # must not turn this server into an amplifier.
                server.stats.dropped_amplification += 1
                server._log_drop(
                    "amplification",
                    "%r: reply of %d bytes not sent: address not verified, %d bytes received, "
                    "%d sent (amplification_factor=%g)",
                    self,
                    len(data),
                    stats.bytes_in,
                    stats.bytes_out,
                    factor,
                )
                continue
            transport.sendto(data, self.peer)
            stats.frames_out += 1
            stats.bytes_out += len(data)
            server.stats.sent += 1

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        # A bad datagram costs only itself: count it, let the fallback see it.
        self.stats.errors += 1
        self._server.stats.dropped_undecodable += 1
        router = self._router
        if router is not None and router.fallback_handler is not None:
            self._call(router.fallback_handler, error, error)
        else:
            self._server._log_drop(
                "undecodable",
                "%r: dropped datagram: %s: %s",
                self,
                type(error).__name__,
                error,
            )

    def _handler_failed(self, subject: Any) -> None:
        # The documented policy: a UDP peer is never closed by a handler
        # error (closing would only forget its state; its next datagram
        # would make a new virtual connection anyway).
        self.stats.errors += 1
        log.exception("%r: handler for %s raised", self, describe(subject))

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
        self._watch_close = True
        if self._late:
            self._flush_late()
        # Replies returned before the close, earlier in this datagram, still
        # go out (as on a stream); nothing after it does.
        self._flush_gathered()
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
        self._decode = pipeline.datagram_decoder()
        self._encode = pipeline.datagram_encoder()
        self._now: Callable[[], float] = time.monotonic
        self._reading = True
        framing = pipeline.datagram_framing
        self._max_size = limits.max_datagram_size
        if framing.max_frame_size is not None:
            self._max_size = min(self._max_size, framing.max_frame_size)
        self._responder = framing.auth.responder() if framing.auth is not None else None
        # Stacks whose datagrams need no check before decoding (see
        # datagram_received); cleared when reading stops.
        self._plain = self._responder is None
        self._raw = pipeline._identity and not framing.packed
        self._drop_log = _DropLog()

    def _log_drop(self, kind: str, message: str, *args: Any) -> None:
        self._drop_log(asyncio.get_running_loop().time(), kind, message, *args)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._now = loop_clock(asyncio.get_running_loop())
        self._schedule_sweep()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer = self.peers.get(addr)
        payload = data
        if (
            self._plain
            and peer is not None
            and len(data) <= self._max_size
            and peer._bucket is None
            and not peer._tasks
        ):
            # The usual datagram: from a known peer, with nothing to check
            # before decoding (no auth, no rate limit, no handler running).
            self.stats.received += 1
            peer.stats.bytes_in += len(data)
            peer.last_activity = self._now()
        else:
            admitted = self._admit(data, addr, peer)
            if admitted is None:
                return
            peer, payload = admitted
        if self._raw:
            # A raw stack's value is the datagram itself (its size is
            # checked above against the framing's limit too).
            value = payload if type(payload) is bytes else bytes(payload)
        else:
            try:
                values = self._decode(payload)
            except WirekitError as exc:
                values = self._undecodable(peer, exc)
            if len(values) != 1:
                if values:  # packed framing: several values to one datagram
                    self._deliver(peer, values)
                return
            value = values[0]
        handler = self.router._resolved.get(type(value))
        if handler is None or peer._held:
            # Not yet resolved, unhandled, queued or held: the general path.
            self._deliver(peer, [value])
            return
        # _dispatch's work for one value, without its loop, its batch or
        # a call per step.
        peer.stats.frames_in += 1
        try:
            result = handler(value, peer)
        except Exception:
            peer._handler_failed(value)
            return
        if result is None:
            return
        if type(result) in PLAIN_REPLIES or not needs_await(result):
            if not peer._closed.done():
                peer._write_values([result])
        else:
            peer._run_async(result, value)

    def _deliver(self, peer: DatagramPeer, values: list[Any]) -> None:
        """Hand one datagram's values to the peer; its replies go out together."""
        replies: list[Any] = []
        peer._replies = replies
        try:
            peer._deliver(values)
        finally:
            peer._replies = None
            if replies and not peer._closed.done():
                peer._write_values(replies)

    def _admit(
        self, data: bytes, addr: Any, peer: DatagramPeer | None
    ) -> tuple[DatagramPeer, bytes] | None:
        """Every check before decoding, in order; the peer and the payload, or None if dropped."""
        if not self._reading:
            return None  # shutting down: start no new work
        stats = self.stats
        stats.received += 1
        if len(data) > self._max_size:
            stats.dropped_oversize += 1
            self._log_drop(
                "oversize",
                "dropped %d-byte datagram from %s: over max_datagram_size or max_frame_size (%d)",
                len(data),
                addr,
                self._max_size,
            )
            return None
        session: AuthSession | None = None
        payload = data
        if self._responder is not None:
            # Before any state for this address: a forgery costs one HMAC.
            try:
                session, payload = self._responder.open(data)
            except ReplayedDatagram as exc:
                stats.dropped_replayed += 1
                self._log_drop("replayed", "dropped datagram from %s: %s", addr, exc)
                return None
            except AuthenticationError as exc:
                stats.dropped_unauthenticated += 1
                self._log_drop("unauthenticated", "dropped datagram from %s: %s", addr, exc)
                return None
        if peer is None:
            if len(self.peers) >= self.limits.max_peers:
                stats.dropped_no_capacity += 1
                return None
            peer = DatagramPeer(self, addr)
            self.peers[addr] = peer
            if session is not None:
                peer._session = session
                peer._verified = True
            peer._run_hooks(self.router.connect_hooks)
        elif session is not None:
            # An authentic datagram from this address: it is verified, and
            # replies go to the session it came from (a restarted client
            # has a new one).
            peer._session = session
            peer._verified = True
        peer.stats.bytes_in += len(data)
        now = peer.last_activity = self._now()
        bucket = peer._bucket
        if bucket is not None and not bucket.take(now):
            stats.dropped_rate_limited += 1
            self._log_drop(
                "rate-limited",
                "%r: dropped datagram: over max_frames_per_second=%g",
                peer,
                bucket.rate,
            )
            return None
        if len(peer._tasks) >= self.limits.max_inflight_handlers:
            # UDP cannot push back: a peer with too much work running loses
            # the datagram, as it would to a full socket buffer.
            stats.dropped_no_capacity += 1
            return None
        return peer, payload

    def _undecodable(self, peer: DatagramPeer, exc: WirekitError) -> list[Any]:
        """Count and report a datagram that failed to decode; the values before the bad one."""
        values = exc.decoded
        exc.decoded = []
        if isinstance(exc, FrameTooLarge):
            # Over the pipeline's own datagram limit (Datagram.max_frame_size),
            # or, packed, a frame over the stream framing's: the frames
            # before it are good and are delivered, as for any other error.
            self.stats.dropped_oversize += 1
            peer.stats.errors += 1
            self._log_drop("oversize", "%r: dropped datagram: %s", peer, exc)
        else:
            # A packed datagram's good frames still count; the bad one is dropped.
            peer._bad_input(exc, fatal=False)
        return values

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
        self._plain = False

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


class DatagramClient(Connection, asyncio.DatagramProtocol):
    """A client's UDP socket, connected to one server address."""

    def __init__(self, pipeline: Pipeline, *, limits: Limits) -> None:
        super().__init__(pipeline, router=None, limits=limits)
        self.transport: asyncio.DatagramTransport | None = None
        #: Datagrams from the server dropped, for any reason (see ``datagram_stats``).
        self.dropped = 0
        #: Counters of this socket, by reason (``dropped_rate_limited`` and
        #: ``dropped_amplification`` are the server's and stay 0 here).
        self.datagram_stats = DatagramStats()
        framing = pipeline.datagram_framing
        self._max_size = limits.max_datagram_size
        if framing.max_frame_size is not None:
            self._max_size = min(self._max_size, framing.max_frame_size)
        #: The authentication session (a fresh random session id per client), or None.
        self.session: AuthSession | None = (
            framing.auth.session() if framing.auth is not None else None
        )
        self._encode: Callable[[Any], bytes] = pipeline.encode_datagram
        if self.session is not None:
            self._encode = _sealer(self.session, framing, pipeline.encode_datagram)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.peer = transport.get_extra_info("peername")

    @property
    def address_verified(self) -> bool:
        """Always true: a client chose its server's address."""
        return True

    def verify_address(self) -> None:
        """Nothing to do on a client (see :meth:`DatagramPeer.verify_address`)."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.bytes_in += len(data)
        stats = self.datagram_stats
        stats.received += 1
        if len(data) > self._max_size:
            self.dropped += 1
            stats.dropped_oversize += 1
            return
        payload = data
        if self.session is not None:
            try:
                payload = self.session.open(data)
            except AuthenticationError as exc:
                self.dropped += 1
                self.stats.errors += 1
                if isinstance(exc, ReplayedDatagram):
                    stats.dropped_replayed += 1
                else:
                    stats.dropped_unauthenticated += 1
                log.debug("%r: dropped datagram: %s", self, exc)
                return
        try:
            values = self.pipeline.decode_datagram(payload)
        except WirekitError as exc:
            self.dropped += 1
            stats.dropped_undecodable += 1
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
        encode = self._encode
        datagrams = (
            [encode(value) for value in values] if strict else self._encode_each(values, encode)
        )
        for data in datagrams:
            transport.sendto(data)
            self.stats.frames_out += 1
            self.stats.bytes_out += len(data)
            self.datagram_stats.sent += 1

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _pause_inbox(self) -> None:
        # UDP cannot push back; beyond max_queued, datagrams are dropped and counted.
        while len(self._inbox) > self._limits.max_queued:
            self._inbox.popleft()
            self.dropped += 1
            self.datagram_stats.dropped_no_capacity += 1

    def close(self) -> None:
        """Close the socket."""
        self._watch_close = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close the socket."""
        self._watch_close = True
        if self.transport is not None:
            self.transport.abort()
