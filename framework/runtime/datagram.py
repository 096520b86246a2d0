"""UDP: one datagram is one frame, and each peer address is a virtual connection.

Handlers see the same :class:`~framework.runtime.connection.Connection` API
as on a stream. The rules (which datagrams get in, in what order they are
checked, what a bad one costs, what may be sent to an unverified address)
are the core's: :mod:`framework.core.datagrams`. This module is the asyncio
glue: it hands each datagram to a :class:`~framework.core.datagrams.DatagramGate`
and a peer's :class:`~framework.core.datagrams.PeerState`, counts and logs
what they drop, and dispatches the rest.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from framework.core.connection import BadInput, ReadPause
from framework.core.datagrams import (
    DatagramGate,
    DatagramStats,
    Drop,
    Dropped,
    PeerState,
    datagram_framer,
    max_datagram_size,
    seal,
    sealer,
    undecodable,
)
from framework.core.errors import DecodeError, FrameTooLarge, FramingError, WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.runtime.connection import Connection, ConnectionClosed, Encoding
from framework.runtime.dispatch import PLAIN_REPLIES, describe, loop_clock, needs_await
from framework.runtime.logs import LogLimiter
from framework.runtime.metrics import BUCKETS, REGISTRY, ListenerMetrics
from framework.runtime.transports.udp import SendQueueFull

__all__ = ["DatagramConnection", "DatagramPeer", "DatagramServer", "DatagramStats"]

log = logging.getLogger("wirekit.udp")


#: Seconds between two log lines about drops of the same kind: a flood of
#: bad datagrams must not become a flood of log lines.
LOG_INTERVAL = 1.0


class DatagramConnection(Connection):
    """What a UDP peer and a UDP client (:mod:`framework.runtime.datagram_client`) give the
    Connection as its adapter side."""

    _writing_paused = False  # a client's socket: set by its transport

    def _drop_stats(self) -> DatagramStats:
        """The socket's counters, where a dropped value is counted."""
        raise NotImplementedError

    def _pause_inbox(self) -> None:
        # UDP cannot push back, and nobody may ever call receive() on a
        # server's peer: keep the newest max_queued values, drop and count the rest.
        while len(self._inbox) > self._limits.max_queued:
            self._inbox.popleft()
            self._drop_stats().count(Drop.NO_CAPACITY)

    def _resume_inbox(self) -> None:
        return None  # nothing was paused: _pause_inbox dropped the oldest values

    def _backed_up(self) -> bool:
        # The socket's send queue is over its high-water mark: what is sent
        # now waits in it, or is dropped at its bound. send() never waits.
        return self._writing_paused

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    async def _drain(self) -> None:
        return None  # a datagram is handed to the socket at once: nothing to wait for

    def _pause_reading(self, reason: ReadPause) -> None:
        # One peer of a shared socket cannot be paused: the gate drops its
        # datagrams instead while max_inflight_handlers are running.
        return None

    def _resume_reading(self, reason: ReadPause) -> None:
        return None

    def _stop_reading(self) -> None:
        return None  # a server stops reading the whole socket (stop_reading)

    def _all_done(self) -> None:
        return None  # no half-closed stream to finish closing


class DatagramPeer(DatagramConnection):
    """The virtual connection of one remote address on a UDP server."""

    def __init__(self, server: DatagramServer, addr: Any) -> None:
        super().__init__(
            server.pipeline,
            router=server.router,
            limits=server.limits,
            handler_errors=server.handler_errors,
        )
        self.peer = addr
        self.listener = server.listener
        self._server = server
        metrics = server.metrics
        if metrics is not None:
            self._metrics = metrics
            self._timing = metrics.times
        self._peer = PeerState(server.limits, now=self._loop.time())
        self.encoding = server.encoding  # one datagram, sealed for this peer if need be
        self.stats = self._peer.stats

    @property
    def last_activity(self) -> float:
        """When the peer's last datagram arrived, on the event loop's clock."""
        return self._peer.last_activity

    @property
    def address_verified(self) -> bool:
        """Whether this peer is known to receive what is sent to its address.

        True after its first authenticated datagram, or once
        :meth:`verify_address` has been called. Until then the server sends
        it at most ``Limits.amplification_factor`` times what it received.
        """
        return self._peer.verified

    def verify_address(self) -> None:
        """Declare the peer's address verified: lift the amplification bound.

        Call it once the peer has proved it receives what is sent to its
        address: it echoed a cookie or nonce the server sent there (see
        ``docs/howto/udp-security.md``). A spoofed source address cannot
        do that.
        """
        self._peer.verified = True

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        server = self._server
        transport = server.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        encode = server._encode
        state = self._peer
        if state.session is not None:
            encode = sealer(state.session, self.pipeline.datagram_framing, encode)
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
        for data in datagrams:
            self._sendto(transport, data)

    def _write_encoded(self, data: bytes) -> None:
        transport = self._server.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        session = self._peer.session
        if session is not None:
            data = seal(session, self.pipeline.datagram_framing, data)
        self._sendto(transport, data)

    def _sendto(self, transport: asyncio.DatagramTransport, data: bytes) -> None:
        state, stats, server = self._peer, self.stats, self._server
        if not state.may_send(len(data)):
            # Not an error of the handler's: a spoofed source address
            # must not turn this server into an amplifier.
            server.stats.count(Drop.AMPLIFICATION)
            server._log_drop(
                Drop.AMPLIFICATION,
                "%r: reply of %d bytes not sent: address not verified, %d bytes received, "
                "%d sent (amplification_factor=%g)",
                self,
                len(data),
                stats.bytes_in,
                stats.bytes_out,
                state.factor,
            )
            return
        # Counted first: a datagram the transport drops (its send queue
        # full) is taken back off in error_received, during sendto.
        stats.frames_out += 1
        stats.bytes_out += len(data)
        server.stats.sent += 1
        transport.sendto(data, self.peer)

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        # A bad datagram costs only itself: count it, let the fallback see it.
        self.stats.errors += 1
        server = self._server
        if self._metrics is not None and not isinstance(error, FrameTooLarge):
            self._metrics.decode_errors += 1
        if isinstance(error, FrameTooLarge):
            # Over the pipeline's own datagram limit (Datagram.max_frame_size),
            # or, packed, a frame over the stream framing's: the frames
            # before it were good and were delivered.
            server.stats.count(Drop.OVERSIZE)
            server._log_drop(Drop.OVERSIZE, "%r: dropped datagram: %s", self, error)
            return
        server.stats.count(Drop.UNDECODABLE)
        router = self._router
        if router is not None and router.fallback_handler is not None:
            self._call(router.fallback_handler, error, error)
        else:
            server._log_drop(
                Drop.UNDECODABLE,
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
        if self._metrics is not None:
            self._metrics.handler_failed(subject)
        log.exception("%r: handler for %s raised", self, describe(subject))

    def _closing(self) -> bool:
        return self.closed

    def _backed_up(self) -> bool:
        return self._server.writing_paused  # the socket is shared: the server's flag

    def _drop_stats(self) -> DatagramStats:
        return self._server.stats

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


class TimedDatagramPeer(DatagramPeer):
    """A UDP peer whose handlers are timed (metrics on)."""

    _dispatch = Connection._timed_dispatch


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
        #: The URL this socket serves on, once bound (for the peers' log lines).
        self.listener: str | None = None
        #: The listener's counters, once a Server serves this socket.
        self.metrics: ListenerMetrics | None = None
        self.peers: dict[Any, DatagramPeer] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._decode = pipeline.datagram_decoder()
        self._encode = pipeline.datagram_encoder()
        #: What its peers' ``encoding`` is: one for all of them.
        self.encoding = Encoding(("datagram", id(pipeline)), datagram_framer(pipeline))
        self._now: Callable[[], float] = time.monotonic
        self._reading = True
        framing = pipeline.datagram_framing
        responder = framing.auth.responder() if framing.auth is not None else None
        self._gate = DatagramGate.for_server(max_datagram_size(pipeline, limits), responder)
        # Stacks whose datagrams need no check before decoding but their size
        # (see datagram_received); cleared when reading stops.
        self._plain = self._gate.plain
        self._raw = pipeline.passthrough and not framing.packed
        self._drop_log: LogLimiter | None = None  # made on the first drop, with the loop
        #: Over the send queue's high-water mark: peers' ``can_send`` is false.
        self.writing_paused = False

    def _log_drop(self, kind: Drop, message: str, *args: Any) -> None:
        if self._drop_log is None:
            loop = asyncio.get_running_loop()
            self._drop_log = LogLimiter(log, interval=LOG_INTERVAL, schedule=loop.call_at)
        self._drop_log.log(
            asyncio.get_running_loop().time(),
            kind.value,
            f"dropped datagrams ({kind.value})",
            logging.INFO,
            message,
            *args,
        )

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
            and len(data) <= self._gate.max_size
            and peer._peer.bucket is None
            and not peer._slots.running
        ):
            # The usual datagram: from a known peer, with nothing to check
            # before decoding (no auth, no rate limit, no handler running).
            self.stats.received += 1
            peer.stats.bytes_in += len(data)
            peer._peer.last_activity = self._now()
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
            except (DecodeError, FramingError) as exc:
                values = undecodable(exc)
            if len(values) != 1 or type(values[0]) is BadInput:
                if values:  # packed framing, or a datagram that did not decode
                    self._deliver(peer, values)
                return
            value = values[0]
        handler = self.router._resolved.get(type(value))
        if handler is None or peer._held:
            # Not yet resolved, unhandled, queued or held: the general path.
            self._deliver(peer, [value])
            return
        # Connection._call's work for the usual datagram, inline: this is the
        # per-datagram path, and a call or two is a tenth of its cost.
        peer.stats.frames_in += 1
        timing = peer._timing
        start = _perf() if timing is not None else 0.0
        try:
            result = handler(value, peer)
        except Exception:
            if timing is not None:
                timing.observe(_perf() - start)
            peer._handler_failed(value)
            return
        if result is None or type(result) in PLAIN_REPLIES or not needs_await(result):
            if timing is not None:  # HandlerTimes.observe, inline (async: see _finish)
                elapsed = _perf() - start
                timing.counts[_bucket(BUCKETS, elapsed)] += 1
                timing.total += elapsed
            # The handler may have closed its peer.
            if result is not None and not peer._closed.done():
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
            if replies and not peer.closed:
                peer._write_values(replies)

    def _admit(
        self, data: bytes, addr: Any, peer: DatagramPeer | None
    ) -> tuple[DatagramPeer, bytes] | None:
        """Every check before decoding, in order; the peer and the payload, or None if dropped."""
        if not self._reading:
            return None  # shutting down: start no new work
        stats = self.stats
        stats.received += 1
        opened = self._gate.check(data)
        if isinstance(opened, Dropped):
            stats.count(opened.reason)
            if opened.error is not None:
                self._log_drop(opened.reason, "dropped datagram from %s: %s", addr, opened.error)
            else:
                self._log_drop(
                    opened.reason,
                    "dropped %d-byte datagram from %s: "
                    "over max_datagram_size or max_frame_size (%d)",
                    len(data),
                    addr,
                    self._gate.max_size,
                )
            return None
        session, payload = opened
        if peer is None:
            if len(self.peers) >= self.limits.max_peers:
                stats.count(Drop.NO_CAPACITY)
                return None
            timed = self.metrics is not None and self.metrics.times is not None
            peer = (TimedDatagramPeer if timed else DatagramPeer)(self, addr)
            with REGISTRY.lock:  # a scrape in another thread sees it live, or not yet
                self.peers[addr] = peer
                if self.metrics is not None:
                    self.metrics.accepted += 1
            if session is not None:
                peer._peer.authenticated(session)
            peer._run_hooks(self.router.connect_hooks)
        elif session is not None:
            # An authentic datagram from this address: it is verified, and
            # replies go to the session it came from (a restarted client
            # has a new one).
            peer._peer.authenticated(session)
        state = peer._peer
        busy = peer._slots.full
        dropped = state.admit(self._now(), size=len(data), busy=busy)
        if dropped is not None:
            stats.count(dropped)
            if dropped is Drop.RATE_LIMITED:
                assert state.bucket is not None
                self._log_drop(
                    dropped,
                    "%r: dropped datagram: over max_frames_per_second=%g",
                    peer,
                    state.bucket.rate,
                )
            return None
        return peer, payload

    def flush_log(self) -> None:
        """Log the counts of drops not reported yet (the socket is closing)."""
        if self._drop_log is not None:
            self._drop_log.flush(float("inf"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, SendQueueFull):  # counted as sent, then dropped
            peer = self.peers.get(exc.addr)
            self.stats.not_sent(exc.size, peer.stats if peer is not None else None)
            self._log_drop(Drop.SEND_QUEUE, "dropped datagram to %s: %s", exc.addr, exc)
            return
        # ICMP errors (port unreachable) for a datagram we sent: not fatal.
        log.debug("UDP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for peer in list(self.peers.values()):
            self._forget(peer, exc)

    def _forget(self, peer: DatagramPeer, exc: Exception | None = None) -> None:
        if self.peers.get(peer.peer) is peer:
            with REGISTRY.lock:  # counted live or folded in, never both
                del self.peers[peer.peer]
                if self.metrics is not None:
                    self.metrics.fold(peer.stats)
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


_perf = time.perf_counter
_bucket = bisect.bisect_left
