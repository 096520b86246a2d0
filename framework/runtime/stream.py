"""The stream adapter: asyncio's stream transports (TCP, TLS, Unix, memory) to a connection.

:class:`StreamConnection` is glue around a
:class:`~framework.core.connection.StreamState`: it hands each read's bytes
and the time to the state, dispatches the values the state returns, writes
the read's replies in one call, and calls the state back at its
``wakeup_at``. Every rule (the error policy, timeouts, rate limits, why
reading is paused) is the state's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from framework.core.connection import ReadPause, ReplyBatch, Role, StreamState, TimerDecision
from framework.core.errors import WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.runtime.connection import Connection, ConnectionClosed, Encoding
from framework.runtime.dispatch import loop_clock
from framework.runtime.transport_flow import TransportConnection

__all__ = ["StreamConnection", "TimedStreamConnection"]

log = logging.getLogger("wirekit.connection")


class StreamConnection(TransportConnection, asyncio.Protocol):
    """A connection over a byte-stream transport (TCP, TLS, Unix, memory): see the module."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        router: Router | None,
        limits: Limits,
        role: Role,
        handler_errors: str = "close",
        on_made: Callable[[StreamConnection], bool] | None = None,
        on_lost: Callable[[StreamConnection], None] | None = None,
    ) -> None:
        super().__init__(pipeline, router=router, limits=limits, handler_errors=handler_errors)
        self.role = role
        self._now = loop_clock(self._loop)
        self._state = state = StreamState(
            pipeline,
            role=role,
            limits=limits,
            recover=self._can_recover,
            now=self._now(),
        )
        self.stats = state.stats
        self._init_transport()
        self._close_when_done = False
        self._on_made = on_made
        self._on_lost = on_lost
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._batch = ReplyBatch(pipeline)
        self._header = self._batch.header
        self._header_limit = self._batch.limit
        self._text_replies = self._batch.text
        self.encoding = Encoding(("stream", id(pipeline)), pipeline.framing.encode)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, though
        # they implement it: no isinstance check here.
        transport = cast(asyncio.Transport, transport)
        adopted = self._adopt_stream(transport, self._on_made)
        self._state.peer = self.peer
        if not adopted:
            return
        log.debug("%r: connected", self)
        self._arm()
        if self._router is not None:
            self._run_hooks(self._router.connect_hooks)

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        stats.bytes_in += len(data)
        state = self._state
        batch = self._batch
        replies = batch.chunks
        self._replies = replies
        try:
            values = state.receive_data(data, self._now())
            if values:
                # _deliver's usual case, inline: one call fewer per read.
                router = self._router
                if router is not None and router._handlers and not self._held:
                    stats.frames_in += len(values)
                    self._dispatch(router, values, state.uniform)
                else:
                    self._deliver(values)
        finally:
            self._replies = None
            if replies:
                transport = self._transport
                # A socket transport can have started closing during this read
                # only through a close, an abort or a send, which set
                # _watch_close (in-process transports have it set throughout).
                if transport is not None and not (self._watch_close and transport.is_closing()):
                    # The batch, taken inline (see ReplyBatch): once per read.
                    if batch.framed:
                        out = b"".join(replies)
                        count = len(replies) >> 1
                        replies.clear()
                    else:
                        out, count, failed = batch.take()
                        if failed:
                            for value, exc in failed:
                                self._encode_failed(value, exc)
                    if out:
                        transport.write(out)
                    stats.frames_out += count
                    stats.bytes_out += len(out)
                else:
                    replies.clear()
                    batch.mixed = False
            if state.wakeup_at != self._timer_at:
                # A deadline changed: a frame began, or a rate-limit pause did.
                self._arm()
                if state.paused and self._reading:
                    self._sync_reading()

    def _send_batch(self, transport: asyncio.Transport) -> None:
        """Write the replies the batch holds in one call (the transport is open)."""
        self._put(transport, *self._batch.take())

    def _put(
        self,
        transport: asyncio.Transport,
        out: bytes,
        count: int,
        failed: list[tuple[Any, WirekitError]],
    ) -> None:
        """Write ``count`` encoded replies; log those that could not be encoded."""
        for value, exc in failed:
            self._encode_failed(value, exc)
        if out:
            transport.write(out)
        self.stats.frames_out += count
        self.stats.bytes_out += len(out)

    def _add_reply(self, value: Any) -> None:
        for exc in self._batch.add(value):
            self._encode_failed(value, exc)

    # -- the state's deadlines -----------------------------------------------------

    def _arm(self) -> None:
        """Call the state back at its ``wakeup_at`` (and only then)."""
        at = self._state.wakeup_at
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and not self.closed:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        transport = self._transport
        if transport is None or self.closed:
            return
        state = self._state
        decision = state.on_timer(self._loop.time())
        if decision is TimerDecision.RESUME:
            self._sync_reading()
        elif decision is TimerDecision.FRAME_TIMEOUT:
            self.stats.errors += 1
            log.info("%r: closing: FrameTimeout: %s", self, state.close_error)
            self._close_error = state.close_error
            self.close()
        elif decision is TimerDecision.IDLE:
            idle = self._loop.time() - state.last_activity
            log.info("%r: idle for %.1f s, closing", self, idle)
            self.close()
        elif decision is TimerDecision.ABORT:
            idle = self._loop.time() - state.last_activity
            log.info("%r: peer not reading for %.1f s while closing, aborting", self, idle)
            self.abort()
        self._arm()

    def eof_received(self) -> bool | None:
        error = self._state.receive_eof()
        if error is not None:
            self.stats.errors += 1
            if self._metrics is not None:
                self._metrics.decode_errors += 1
            self._peer_warning(
                "mid-frame",
                "closed connections (peer closed mid-frame)",
                "%r: peer closed mid-frame: %s",
                self,
                error,
            )
        transport = self._transport
        if (
            (self._tasks or self._held)
            and transport is not None
            and transport.get_extra_info("sslcontext") is None
        ):
            # The peer is done sending but may still read: let the handlers
            # already running reply, then close (see _all_done). TLS cannot
            # stay half-open: asyncio closes it whatever we return.
            self._close_when_done = True
            return True
        return None  # close our side too

    def _all_done(self) -> None:
        if self._close_when_done:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_drainers()
        buffered = self._state.buffered
        if exc is not None and buffered:
            self.stats.errors += 1
            log.warning(
                "%r: connection lost mid-frame, %d bytes of a frame discarded: %s",
                self,
                buffered,
                exc,
            )
        elif exc is not None:
            log.info("%r: connection lost: %s", self, exc)
        else:
            log.debug("%r: closed", self)
        self._mark_closed(exc)
        if self._on_lost is not None:
            self._on_lost(self)

    # -- Connection ----------------------------------------------------------------

    def close(self) -> None:
        self._watch_close = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._late:
            self._flush_late()
        self._flush_gathered()  # replies produced earlier in this chunk go out first
        # The idle timer now measures how long the flush takes: a peer that
        # reads nothing for another idle period is aborted.
        self._state.start_closing(self._loop.time())
        transport.close()
        self._arm()

    def abort(self) -> None:
        self._watch_close = True
        if self._transport is not None:
            self._transport.abort()

    def _closing(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def _flush_gathered(self) -> None:
        if self._replies is None or not self._replies:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        self._send_batch(transport)

    def _start_batch(self) -> list[Any]:
        return self._batch.chunks

    def _flush_replies(self, replies: list[Any]) -> None:
        # Only ever this connection's batch (see _start_batch).
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        self._send_batch(transport)

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        self._put(transport, *self._batch.encode(values, strict=strict))

    @property
    def can_send(self) -> bool:
        # Connection.can_send's test without its three calls: a group asks
        # it of every member for every value.
        transport = self._transport
        return not (
            transport is None or transport.is_closing() or self._write_paused or self._closed.done()
        )

    def _write_encoded(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        transport.write(data)
        stats = self.stats
        stats.frames_out += 1
        stats.bytes_out += len(data)

    def _stop_reading(self) -> None:
        self._pause_reading(ReadPause.SHUTTING_DOWN)

    def _pause_reading(self, reason: ReadPause) -> None:
        self._state.pause(reason)
        self._sync_reading()

    def _resume_reading(self, reason: ReadPause) -> None:
        self._state.resume(reason)
        self._sync_reading()

    def _read_paused(self) -> bool:
        return bool(self._state.paused)

    @property
    def last_activity(self) -> float:
        """When the peer last sent bytes, on the event loop's clock."""
        return self._state.last_activity


class TimedStreamConnection(StreamConnection):
    """A served stream connection whose handlers are timed (metrics on)."""

    _dispatch = Connection._timed_dispatch
