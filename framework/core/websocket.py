"""The WebSocket rules wirekit adds to the protocol itself, without I/O.

The WebSocket protocol (handshake, frames, masking, fragments, close
handshake) is the ``websockets`` library's sans-I/O protocol objects'; the
runtime adapter (:mod:`framework.runtime.websocket`) drives them. What is
wirekit's own, and decided here with bytes and strings only:

- :class:`WebSocketOptions`: origins, subprotocol, compression, keepalive,
  the bounds on the HTTP request that opens a connection;
- :func:`origin_allowed`: the Origin policy (no ``Origin`` header, the
  page's own origin, or one named in ``origins``);
- :class:`MessageDecoder`: one message is one frame: its payload goes
  through the codec stack, with no stream framing; a text message that is
  not UTF-8, or a payload that does not decode, becomes a
  :class:`~framework.core.connection.BadInput` as on every transport; a
  fragmented message is assembled in one buffer, in at most
  ``max_message_frames`` frames;
- :class:`CloseCode` and :func:`close_code_for`: which close code an error
  sends (a decode error 1007, an oversize message 1009, a handler error
  1011, a shutdown 1001);
- :class:`WebSocketClock`: the deadlines of one connection (the opening
  handshake, keepalive pings and their pongs, the idle timeout, the close
  handshake), driven by a number for the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from framework.core._registry import check_limit
from framework.core.connection import BadInput
from framework.core.errors import (
    ConfigError,
    DecodeError,
    FrameTooLarge,
    FramingError,
    WirekitError,
)
from framework.core.pipeline import Pipeline

__all__ = [
    "CloseCode",
    "Due",
    "MessageDecoder",
    "WebSocketClock",
    "WebSocketOptions",
    "close_code_for",
    "message_limit",
    "origin_allowed",
]


class CloseCode(enum.IntEnum):
    """The close codes wirekit sends and names (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    #: The server is shutting down.
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    #: The peer closed the TCP connection without a close frame (never sent).
    ABNORMAL = 1006
    #: A message that is not UTF-8 text, or does not decode.
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    #: A message over the framing's ``max_frame_size``.
    MESSAGE_TOO_BIG = 1009
    #: A handler raised and the error policy closes; a keepalive ping timed out.
    INTERNAL_ERROR = 1011


def close_code_for(error: WirekitError) -> CloseCode:
    """The close code a connection ended by ``error`` (the peer's bad input) sends."""
    if isinstance(error, FrameTooLarge):
        return CloseCode.MESSAGE_TOO_BIG
    if isinstance(error, DecodeError | FramingError):
        return CloseCode.INVALID_DATA
    return CloseCode.INTERNAL_ERROR


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise ConfigError(
            f"origins must be a list of origins such as 'https://example.com', got {value!r}",
            option="origins",
            value=value,
        )
    return tuple(item.rstrip("/").lower() for item in value)


def _seconds_or_none(_instance: Any, attribute: Any, value: Any) -> None:
    if value is None and attribute.name == "ping_interval":
        return
    if type(value) not in (int, float) or not value > 0:
        raise ConfigError(
            f"{attribute.name} must be a positive number of seconds, got {value!r}",
            option=attribute.name,
            value=value,
        )


def _boolean(_instance: Any, attribute: Any, value: Any) -> None:
    if type(value) is not bool:
        raise ConfigError(
            f"{attribute.name} must be true or false, got {value!r}",
            option=attribute.name,
            value=value,
        )


def _required_limit(_instance: Any, attribute: Any, value: Any) -> None:
    check_limit(attribute.name, value, allow_none=False)


def _subprotocol(_instance: Any, _attribute: Any, value: Any) -> None:
    # A token (RFC 7230): what Sec-WebSocket-Protocol can carry.
    if value is None:
        return
    if (
        not isinstance(value, str)
        or not value
        or not value.isascii()
        or any(not c.isprintable() or c.isspace() or c in '()<>@,;:\\"/[]?={}' for c in value)
    ):
        raise ConfigError(
            f"subprotocol must be a token such as 'wirekit.chat', got {value!r}",
            option="subprotocol",
            value=value,
        )


@attrs.frozen(kw_only=True)
class WebSocketOptions:
    """How a ``ws://`` or ``wss://`` endpoint accepts and keeps connections.

    The ``[websocket]`` table of a config file; pass it as ``websocket=`` to
    :func:`~framework.runtime.server.start_server`, ``App.serve`` or
    :func:`~framework.runtime.client.connect`. Message size is the framing's
    ``max_frame_size``; the other limits are :class:`~framework.core.limits.Limits`.
    """

    #: Origins (``"https://game.example"``) whose pages may connect, besides
    #: requests without an ``Origin`` header (programs, not browsers) and
    #: pages served by this very listener (same origin), which always may.
    #: ``"*"`` lets every page connect. A browser sends its page's origin, so
    #: this keeps other sites' pages from using a visitor's browser to
    #: connect (cross-site WebSocket hijacking).
    origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    #: A subprotocol name: a server then accepts only clients that offer it
    #: (``Sec-WebSocket-Protocol``) and a client offers it. None: none asked.
    subprotocol: str | None = attrs.field(default=None, validator=_subprotocol)
    #: Per-message compression (permessage-deflate). Off by default: each
    #: compressed connection keeps zlib state of tens of KiB, a compressed
    #: message costs CPU, and small game or chat messages gain little.
    compression: bool = attrs.field(default=False, validator=_boolean)
    #: Seconds between keepalive pings (None: no pings). 20 s is what
    #: websockets and browsers' proxies expect; it keeps NAT and proxy
    #: mappings alive and finds dead peers.
    ping_interval: float | None = attrs.field(default=20.0, validator=_seconds_or_none)
    #: Seconds to wait for the pong before closing with 1011.
    ping_timeout: float = attrs.field(default=20.0, validator=_seconds_or_none)
    #: Bytes of the HTTP request that opens a connection (request line and
    #: headers). 16 KiB is more than browsers send (cookies included) and
    #: what many HTTP servers allow (h11's 16 KiB incomplete-event limit).
    max_request_size: int = attrs.field(default=16 * 1024, validator=_required_limit)
    #: Bytes of a static page served from ``App.pages``; larger files are 404.
    max_page_size: int = attrs.field(default=4 * 1024 * 1024, validator=_required_limit)
    #: Frames one message may come in (its first frame and continuations);
    #: past it the connection closes with 1009. ``max_frame_size`` bounds a
    #: message's bytes, but an empty continuation frame costs none of them:
    #: this bounds a flood of them. Browsers send a message in one frame.
    max_message_frames: int = attrs.field(default=1024, validator=_required_limit)
    #: Clients only: the ``Origin`` header to send (None: none, as programs
    #: do; a browser always sends its page's).
    origin: str | None = None


def origin_allowed(
    origin: str | None, host: str | None, *, secure: bool, allowed: tuple[str, ...]
) -> bool:
    """Whether a handshake with ``Origin: origin`` on ``Host: host`` may open.

    No ``Origin`` (not a browser), the page's own origin (``http://`` or,
    over TLS, ``https://`` then the request's ``Host``), or one in
    ``allowed`` (``"*"``: any).
    """
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    scheme = "https" if secure else "http"
    own = f"{scheme}://{host.lower()}"
    # A default port may be left out of either header.
    default = ":443" if secure else ":80"
    return origin.removesuffix(default) == own.removesuffix(default)


def message_limit(pipeline: Pipeline) -> int | None:
    """The largest message a connection accepts: the framing's ``max_frame_size``."""
    return pipeline.framing.max_frame_size


class MessageDecoder:
    """One WebSocket message to the values to dispatch, as one datagram is on UDP.

    ``recover`` (asked at each bad message): whether a message that does not
    decode may cost only itself (a fallback handler sees it); otherwise its
    :class:`BadInput` is fatal and the connection closes with 1007. A text
    message that is not UTF-8 is always fatal: RFC 6455 (section 8.1) says
    so. A fragmented message in more than ``max_frames`` frames is fatal
    :class:`FrameTooLarge` (1009).
    """

    __slots__ = ("_decode", "_frames", "_max_frames", "_message", "_recover", "_text")

    def __init__(
        self, pipeline: Pipeline, recover: Callable[[], bool], *, max_frames: int = 1024
    ) -> None:
        self._decode = pipeline.decode_frame
        self._recover = recover
        self._max_frames = max_frames
        # A fragmented message being assembled, in one buffer: memory is its
        # bytes (the protocol object bounds them by max_frame_size), not a
        # bytes object per frame. ``_frames`` counts its frames; 0: none
        # being assembled, -1: one refused, ignored until a new one starts.
        self._message = bytearray()
        self._frames = 0
        self._text = False

    def fragment(self, payload: bytes, *, text: bool | None, fin: bool) -> list[Any]:
        """A frame of a fragmented message (``text`` None: continued); values once it ends."""
        if text is not None:
            self._message = bytearray(payload)
            self._frames = 1
            self._text = text
        elif self._frames < 0:
            return []
        else:
            self._frames += 1
            if self._frames > self._max_frames:
                self.reset()
                self._frames = -1
                error = FrameTooLarge(
                    f"WebSocket message in more than max_message_frames={self._max_frames} "
                    "frames (fragments)",
                    size=self._max_frames + 1,
                    limit=self._max_frames,
                )
                return [BadInput(error, fatal=True)]
            self._message += payload
        if not fin:
            return []
        message = bytes(self._message)
        self.reset()
        return self.decode(message, text=self._text)

    def reset(self) -> None:
        """Drop a message left unfinished (the connection is closing)."""
        self._message = bytearray()
        self._frames = 0

    def decode(self, payload: bytes, *, text: bool) -> list[Any]:
        """The values of one message; a :class:`BadInput` in the place of a bad one."""
        if text:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                error = DecodeError(
                    f"text message is not UTF-8: {exc.reason} at offset {exc.start}",
                    codec="websocket",
                    offset=exc.start,
                )
                return [BadInput(error, fatal=True)]
        try:
            return [self._decode(payload)]
        except (DecodeError, FramingError) as exc:
            values = exc.decoded
            exc.decoded = []
            return [*values, BadInput(exc, fatal=not self._recover())]


class Due(enum.Enum):
    """What :meth:`WebSocketClock.on_timer` asks the adapter to do."""

    NOTHING = "nothing"
    #: The opening handshake (or the HTTP request) did not finish in time: abort.
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    #: Our close frame got no answer in time: abort.
    CLOSE_TIMEOUT = "close-timeout"
    #: Send a ping with :attr:`WebSocketClock.ping` as its payload.
    PING = "ping"
    #: The last ping got no pong within ``ping_timeout``: fail with 1011.
    PONG_TIMEOUT = "pong-timeout"
    #: Nothing from the peer for ``idle_timeout``: close.
    IDLE = "idle"


class WebSocketClock:
    """The deadlines of one WebSocket connection; the adapter calls :meth:`on_timer` at ``due()``.

    ``handshake_timeout`` bounds the opening handshake and, once we have
    sent a close frame, the close handshake; ``idle_timeout`` is None on a
    client; ``ping_interval`` None turns keepalive off. ``make_ping`` gives
    a ping's payload (random bytes, so a late pong is not mistaken).
    """

    __slots__ = (
        "closing_at",
        "handshake_timeout",
        "idle_timeout",
        "last_activity",
        "make_ping",
        "open",
        "ping",
        "ping_at",
        "ping_interval",
        "ping_timeout",
        "started",
    )

    def __init__(
        self,
        *,
        now: float,
        handshake_timeout: float,
        idle_timeout: float | None,
        ping_interval: float | None,
        ping_timeout: float,
        make_ping: Callable[[], bytes],
    ) -> None:
        self.started = self.last_activity = self.ping_at = now
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.make_ping = make_ping
        self.open = False
        #: The payload of the ping waiting for its pong, or None.
        self.ping: bytes | None = None
        #: When we sent our close frame, or None.
        self.closing_at: float | None = None

    def opened(self, now: float) -> None:
        """The handshake succeeded: keepalive starts counting from now."""
        self.open = True
        self.ping_at = now

    def pong(self, payload: bytes) -> None:
        """A pong arrived; the one for our ping clears it."""
        if payload == self.ping:
            self.ping = None

    def due(self) -> float | None:
        """The earliest deadline, or None."""
        if not self.open:
            return self.started + self.handshake_timeout
        if self.closing_at is not None:
            return self.closing_at + self.handshake_timeout
        due: list[float] = []
        if self.ping is not None:
            due.append(self.ping_at + self.ping_timeout)
        elif self.ping_interval is not None:
            due.append(self.ping_at + self.ping_interval)
        if self.idle_timeout is not None:
            due.append(self.last_activity + self.idle_timeout)
        return min(due) if due else None

    def on_timer(self, now: float) -> Due:
        """The deadline that has passed by ``now`` and what it asks for (one at a time)."""
        if not self.open:
            ended = now >= self.started + self.handshake_timeout
            return Due.HANDSHAKE_TIMEOUT if ended else Due.NOTHING
        if self.closing_at is not None:
            ended = now >= self.closing_at + self.handshake_timeout
            return Due.CLOSE_TIMEOUT if ended else Due.NOTHING
        if self.ping is not None:
            if now >= self.ping_at + self.ping_timeout:
                return Due.PONG_TIMEOUT
        elif self.ping_interval is not None and now >= self.ping_at + self.ping_interval:
            self.ping = self.make_ping()
            self.ping_at = now
            return Due.PING
        if self.idle_timeout is not None and now >= self.last_activity + self.idle_timeout:
            return Due.IDLE
        return Due.NOTHING
