"""The WebSocket adapter: ``ws://`` and ``wss://`` connections on the websockets sans-I/O protocol.

:class:`WebSocketConnection` is a :class:`~framework.runtime.connection.Connection`
over a TCP (or TLS) transport driving a ``websockets`` ``ServerProtocol`` or
``ClientProtocol``. Each message is one frame of the pipeline (no stream
framing), decoded by :class:`~framework.core.websocket.MessageDecoder` and
handed to the shared dispatch; a read's replies go out in one write, as
text frames when the codec stack writes text, binary otherwise. A server
connection opens with an HTTP request, answered as
:mod:`framework.runtime.websocket_handshake` says (an upgrade, a page, or a
refusal). Limits apply as over TCP; the deadlines (handshake, keepalive,
idle, close) are :class:`~framework.core.websocket.WebSocketClock`'s. Close
codes: ``close()`` 1000, a shutdown 1001, bad input 1007 or 1009, a handler
error that closes 1011; the peer's are on ``ConnectionClosed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol

from framework.core.connection import ReadPause, Role
from framework.core.errors import (
    ConnectionClosed,
    TransportError,
    WirekitError,
)
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.ratelimit import TokenBucket
from framework.core.router import Router
from framework.core.websocket import (
    CloseCode,
    Due,
    MessageDecoder,
    WebSocketClock,
    WebSocketOptions,
    close_code_for,
    message_limit,
)
from framework.runtime.connection import Connection, Encoding, unframed
from framework.runtime.dispatch import loop_clock
from framework.runtime.pages import Pages
from framework.runtime.transport_flow import TransportConnection
from framework.runtime.websocket_handshake import (
    Refusal,
    client_protocol,
    closed_error,
    peer_error,
    refuse_oversize,
    respond,
    server_protocol,
)

__all__ = ["TimedWebSocketConnection", "WebSocketConnection", "client_protocol"]

log = logging.getLogger("wirekit.connection")

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE


class WebSocketConnection(TransportConnection, asyncio.Protocol):
    """A connection over a WebSocket (``ws://``, ``wss://``): see the module.

    ``subprotocol`` is the one agreed in the handshake (or None);
    ``request_path`` the path a server connection's client asked for.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        router: Router | None,
        limits: Limits,
        role: Role,
        options: WebSocketOptions,
        path: str = "/",
        secure: bool = False,
        pages: Pages | None = None,
        client: ClientProtocol | None = None,
        handler_errors: str = "close",
        on_made: Callable[[Connection], bool] | None = None,
        on_lost: Callable[[Connection], None] | None = None,
    ) -> None:
        super().__init__(pipeline, router=router, limits=limits, handler_errors=handler_errors)
        self.role = role
        self._options = options
        self._path = path
        self._secure = secure
        self._pages = pages
        self._on_made = on_made
        self._on_lost = on_lost
        self.subprotocol: str | None = None
        self.request_path: str | None = None
        self._ws: ServerProtocol | ClientProtocol
        self._ws = client if client is not None else server_protocol(pipeline, options)
        self._open = False
        #: Set once the handshake ends: None when it succeeded, else why not.
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        self._decoder = MessageDecoder(
            pipeline, self._can_recover, max_frames=options.max_message_frames
        )
        self._encode = pipeline.encode_frame
        self.encoding = Encoding(("websocket", id(pipeline)), unframed)  # one message
        self._text = pipeline.writes_text
        self._now = loop_clock(self._loop)
        self._init_transport()
        self._paused = ReadPause(0)
        self._request_bytes = 0
        self._close_code = CloseCode.NORMAL
        self._close_reason = ""
        # Deadlines, on the loop's clock: one timer for them all.
        now = self._now()
        self._clock = WebSocketClock(
            now=now,
            handshake_timeout=limits.handshake_timeout,
            # A client keeps its connection however quiet, as over TCP.
            idle_timeout=limits.idle_timeout if role is Role.SERVER else None,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            make_ping=lambda: os.urandom(4),
        )
        self._timer: asyncio.TimerHandle | None = None
        # max_frames_per_second (servers): every WebSocket frame counts.
        rate = limits.max_frames_per_second if role is Role.SERVER else None
        self._bucket = TokenBucket(rate, limits.frame_burst, now=now) if rate is not None else None
        self._rate_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<WebSocketConnection #{self.id} peer={self.peer!r}>"

    @property
    def last_activity(self) -> float:
        """When the peer last sent bytes, on the event loop's clock."""
        return self._clock.last_activity

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        if not self._adopt_stream(transport, self._on_made):
            return
        if isinstance(self._ws, ClientProtocol):
            self._ws.send_request(self._ws.connect())
            self._flush_ws()
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        self._clock.last_activity = self._now()
        ws = self._ws
        if not self._open:
            self._handshake_data(data)
            return
        ws.receive_data(data)
        self._frames(ws.events_received())

    def _frames(self, events: list[Any]) -> None:
        """Hand the messages among ``events`` to the dispatch; reply in one write."""
        values: list[Any] = []
        decoder = self._decoder
        closing = self._clock.closing_at is not None or self._paused & ReadPause.SHUTTING_DOWN
        for frame in events:
            opcode = frame.opcode
            if opcode is _BINARY or opcode is _TEXT:
                if frame.fin:  # the usual case: a whole message in one frame
                    values += decoder.decode(frame.data, text=opcode is _TEXT)
                else:
                    decoder.fragment(frame.data, text=opcode is _TEXT, fin=False)
            elif opcode is _CONT:
                values += decoder.fragment(frame.data, text=None, fin=frame.fin)
            elif opcode is _PONG:
                self._clock.pong(frame.data)
            elif opcode is _CLOSE:
                decoder.reset()
        if self._bucket is not None and events and not closing:
            # Every frame (data, continuation, ping, pong), not only whole
            # messages: a flood of fragments or pings is paced as well.
            self._charge(len(events))
        if values and not closing:
            replies: list[Any] = []
            self._replies = replies
            try:
                self._deliver(values)
            finally:
                self._replies = None
                if replies and not self._closing():
                    self._write_values(replies)
        self._after_receive()

    def _charge(self, frames: int) -> None:
        """Count frames against ``max_frames_per_second``; over it, pause until refilled."""
        bucket = self._bucket
        assert bucket is not None
        wait = bucket.charge(self._clock.last_activity, frames)
        if wait > 0 and self._rate_timer is None and self._clock.closing_at is None:
            # Nothing is lost: reading pauses until the bucket has refilled.
            self.stats.rate_limited += 1
            self._pause_reading(ReadPause.RATE_LIMITED)
            self._rate_timer = self._loop.call_later(wait, self._rate_refilled)

    def _rate_refilled(self) -> None:
        self._rate_timer = None
        self._resume_reading(ReadPause.RATE_LIMITED)

    def _after_receive(self) -> None:
        ws = self._ws
        error = ws.parser_exc
        if error is not None and self._close_error is None:
            self._protocol_failed(error)
        self._flush_ws()
        if ws.close_expected() and self._clock.closing_at is None:
            self._clock.closing_at = self._now()
            self._arm()

    def _protocol_failed(self, error: Exception) -> None:
        """The protocol object refused the peer's bytes (and sent its close frame)."""
        wrapped = peer_error(error, message_limit(self.pipeline))
        if wrapped is None:
            return  # the peer closed without a close frame: connection_lost follows
        self.stats.errors += 1
        self._close_error = wrapped
        kind = type(wrapped).__name__
        self._peer_warning(
            kind, f"closed connections ({kind})", "%r: closing: %s: %s", self, kind, wrapped
        )

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush_ws()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._rate_timer = None
        self._wake_drainers()
        if not self.handshake.done():
            why = exc or "end of stream"
            lost = TransportError(f"connection closed during the WebSocket handshake: {why}")
            self.handshake.set_exception(lost)
            self.handshake.exception()  # retrieved: nobody may be waiting
        if not self._open:
            # An HTTP request, or a handshake that failed: the application
            # never saw this connection, so no disconnect hook runs for it.
            self._router = None
        if exc is not None:
            log.info("%r: connection lost: %s", self, exc)
        error = self._close_error or exc
        self._mark_closed(error)
        if self._on_lost is not None:
            self._on_lost(self)

    # -- the opening handshake ----------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        events = ws.events_received()
        if isinstance(ws, ClientProtocol):
            self._client_handshake(ws, events)
            return
        if not events:
            self._request_bytes += len(data)
            if ws.state is State.CONNECTING and not ws.eof_sent:
                if self._request_bytes > self._options.max_request_size:
                    log.info("%r: refusing the HTTP request: headers over the limit", self)
                    ws.send_response(refuse_oversize(ws, self._options.max_request_size))
            else:
                self._handshake_failed(ws.handshake_exc)
                writes = ws.data_to_send()
                if writes == [SEND_EOF]:  # not HTTP the library could read: say so all the same
                    writes.insert(0, ws.reject(400, "Not a valid HTTP request.\n").serialize())
                self._write_out(writes)
                return
            self._flush_ws()
            return
        request = events[0]
        assert isinstance(request, Request)
        self.request_path = request.path.partition("?")[0]
        reply = respond(
            ws,
            request,
            options=self._options,
            path=self._path,
            secure=self._secure,
            pages=self._pages,
        )
        response = reply.response
        if reply.refusal is Refusal.ORIGIN:
            self._peer_warning(
                "origin",
                "refused WebSocket handshakes (Origin not allowed)",
                "%r: refusing a WebSocket from origin %r (not in [websocket] origins)",
                self,
                reply.origin,
            )
        elif reply.refusal is Refusal.TOO_LARGE:
            log.info("%r: refusing the HTTP request: headers over the limit", self)
        elif reply.refusal is Refusal.HANDSHAKE:
            self._handshake_failed(ws.handshake_exc)
        elif reply.refusal is Refusal.HEADERS:
            log.info("%r: refusing the HTTP request: %s", self, reply.detail)
        ws.send_response(response)
        if response.status_code != 101:
            self._flush_ws()
            return
        self._opened(ws.subprotocol)
        if self._router is not None:
            self._run_hooks(self._router.connect_hooks)
        # Frames the client sent right behind its request.
        self._frames(events[1:])

    def _handshake_failed(self, error: Exception | None) -> None:
        if error is not None:
            log.info("%r: WebSocket handshake failed: %s", self, error)

    def _client_handshake(self, ws: ClientProtocol, events: list[Any]) -> None:
        if not events and ws.handshake_exc is None:
            return
        if ws.handshake_exc is not None:
            error = TransportError(
                f"WebSocket handshake failed: {ws.handshake_exc}", peer=self.peer
            )
            error.__cause__ = ws.handshake_exc
            if not self.handshake.done():
                self.handshake.set_exception(error)
            self._flush_ws()
            if self._transport is not None:
                self._transport.close()
            return
        self._opened(ws.subprotocol)
        self._frames(events[1:])

    def _opened(self, subprotocol: str | None) -> None:
        self._open = True
        self.subprotocol = subprotocol
        self._clock.opened(self._now())
        if not self.handshake.done():
            self.handshake.set_result(None)
        self._arm()

    # -- deadlines (the clock's rules) ----------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self._clock.due()
        if at is not None and not self.closed:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self.closed:
            return
        clock = self._clock
        now = self._now()
        due = clock.on_timer(now)
        if due is Due.HANDSHAKE_TIMEOUT:
            what = "handshake" if self.role is Role.CLIENT else "HTTP request"
            log.info(
                "%r: no complete %s within handshake_timeout=%s s, closing",
                self,
                what,
                clock.handshake_timeout,
            )
            self.stats.errors += 1
            transport.abort()
            return
        if due is Due.CLOSE_TIMEOUT:
            log.info("%r: the close handshake did not finish, aborting", self)
            transport.abort()
            return
        if due is Due.PING:
            assert clock.ping is not None
            self._ws.send_ping(clock.ping)
            self._flush_ws()
        elif due is Due.PONG_TIMEOUT:
            log.info("%r: no pong within ping_timeout=%s s, closing", self, clock.ping_timeout)
            self._close_code = CloseCode.INTERNAL_ERROR
            self._close_reason = "keepalive ping timeout"
            # An unresponsive peer will not answer a close frame either.
            self._close_error = TransportError(
                f"no pong within ping_timeout={clock.ping_timeout} s", peer=self.peer
            )
            self.close()
        elif due is Due.IDLE:
            log.info("%r: idle for %.1f s, closing", self, now - clock.last_activity)
            self.close()
        self._arm()

    # -- writing -----------------------------------------------------------------------

    def _flush_ws(self) -> None:
        """Write what the protocol object has to send; end the stream when it says so."""
        self._write_out(self._ws.data_to_send())

    def _write_out(self, writes: list[bytes]) -> None:
        if not writes:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if writes[-1] is SEND_EOF or writes[-1] == SEND_EOF:
            data = b"".join(writes[:-1])
            if data:
                transport.write(data)
                self.stats.bytes_out += len(data)
            # Once open, a half-close: frames still coming are read and dropped, so
            # no reset costs the peer the close frame; its end or the deadline closes.
            if self._open and transport.can_write_eof():
                transport.write_eof()
                if self._clock.closing_at is None:
                    self._clock.closing_at = self._now()
                    self._arm()
            else:
                transport.close()
            return
        data = writes[0] if len(writes) == 1 else b"".join(writes)
        transport.write(data)
        self.stats.bytes_out += len(data)

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self._transport
        if transport is None or self._closing():
            raise self._ended(f"connection #{self.id} is closed")
        encode = self._encode
        if strict:
            payloads = [encode(value) for value in values]
        else:
            try:
                payloads = [encode(value) for value in values]
            except WirekitError:
                payloads = self._encode_each(values, encode)
        ws = self._ws
        send = ws.send_text if self._text else ws.send_binary
        for payload in payloads:
            send(payload)
        self.stats.frames_out += len(payloads)
        self._flush_ws()

    def _write_encoded(self, data: bytes) -> None:
        if self._transport is None or self._closing():
            raise self._ended(f"connection #{self.id} is closed")
        if self._text:
            self._ws.send_text(data)
        else:
            self._ws.send_binary(data)
        self.stats.frames_out += 1
        self._flush_ws()

    # -- Connection ----------------------------------------------------------------

    def _ended(self, text: str) -> ConnectionClosed:
        return closed_error(self._ws, text, peer=self.peer, lost=self.closed)

    def close(self) -> None:
        """Close gracefully: replies already produced go first, then a close frame."""
        self._watch_close = True
        transport = self._transport
        if transport is None or transport.is_closing() or self._clock.closing_at is not None:
            return
        if self._late:
            self._flush_late()
        if self._replies:
            pending = self._replies[:]
            self._replies.clear()
            self._write_values(pending)
        ws = self._ws
        if ws.state is not State.OPEN:
            transport.close()
            return
        if self._close_error is not None:
            # The peer broke the protocol or sent bad data: fail the
            # connection (RFC 6455, 7.1.7): the close frame, then (a server)
            # the end of the stream, without waiting for its answer. A
            # client waits for the server to close, within the close deadline.
            ws.fail(self._close_code, self._close_reason)
        else:
            ws.send_close(self._close_code, self._close_reason)
        self._flush_ws()
        self._clock.closing_at = self._now()
        # The peer's close frame must be read, whatever paused reading.
        self._paused = ReadPause(0)
        self._sync_reading()
        self._arm()

    def abort(self) -> None:
        self._watch_close = True
        if self._transport is not None:
            self._transport.abort()

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        self._close_code = close_code_for(error)
        self._close_reason = type(error).__name__
        super()._bad_input(error, fatal=fatal)

    def _handler_failed(self, subject: Any) -> None:
        self._close_code = CloseCode.INTERNAL_ERROR
        self._close_reason = "handler error"
        super()._handler_failed(subject)

    def _closing(self) -> bool:
        transport = self._transport
        return (
            transport is None
            or transport.is_closing()
            or self._clock.closing_at is not None
            or self._ws.state is not State.OPEN
        )

    def _stop_reading(self) -> None:
        # A shutdown: the close that follows says "going away".
        self._close_code = CloseCode.GOING_AWAY
        self._close_reason = "server shutting down"
        self._pause_reading(ReadPause.SHUTTING_DOWN)

    def _all_done(self) -> None:
        pass  # nothing half-closed to finish: the close handshake ends a WebSocket

    def _pause_reading(self, reason: ReadPause) -> None:
        if self._clock.closing_at is not None:
            return  # the close handshake reads to the end
        self._paused |= reason
        self._sync_reading()

    def _resume_reading(self, reason: ReadPause) -> None:
        self._paused &= ~reason
        self._sync_reading()

    def _read_paused(self) -> bool:
        return bool(self._paused)


class TimedWebSocketConnection(WebSocketConnection):
    """A served WebSocket connection whose handlers are timed (metrics on)."""

    _dispatch = Connection._timed_dispatch
