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
  :class:`~framework.core.connection.BadInput` as on every transport;
- :class:`CloseCode` and :func:`close_code_for`: which close code an error
  sends (a decode error 1007, an oversize message 1009, a handler error
  1011, a shutdown 1001).
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
    "MessageDecoder",
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
    so.
    """

    __slots__ = ("_decode", "_recover")

    def __init__(self, pipeline: Pipeline, recover: Callable[[], bool]) -> None:
        self._decode = pipeline.decode_frame
        self._recover = recover

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
