"""The ``websockets`` protocol objects: making them, reading their errors, opening a connection.

:func:`server_protocol` and :func:`client_protocol` make the ``websockets``
sans-I/O protocol objects with wirekit's options (message size from the
framing, compression, subprotocol); :func:`peer_error` names, as a wirekit
error, what a protocol object refused in a peer's bytes, and
:func:`closed_error` how a closed connection ended. :func:`respond`
decides what a server answers to the HTTP request a connection opens with
(see :mod:`framework.runtime.websocket`): a request head over
``max_request_size`` is 431; a plain HTTP request gets a page
(:mod:`framework.runtime.pages`); an upgrade on another path is 404; one
from an origin not allowed is 403; else the library's own checks, and 101.
A request whose headers it cannot read (a repeated ``Upgrade``, ``Host`` or
``Origin``; a malformed value) is 400: the peer's error, never a traceback.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import attrs
from websockets.client import ClientProtocol
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from framework.core.errors import ConnectionClosed, FrameTooLarge, InvalidFrame, WirekitError
from framework.core.pipeline import Pipeline
from framework.core.websocket import CloseCode, WebSocketOptions, message_limit, origin_allowed
from framework.runtime.pages import Pages, answer

__all__ = [
    "Answer",
    "Refusal",
    "client_protocol",
    "closed_error",
    "peer_error",
    "refuse_oversize",
    "request_size",
    "respond",
    "server_protocol",
]

# The protocol objects log every connection opened and closed at INFO: one
# line per peer is what wirekit's own logs avoid. Quiet unless asked for.
PROTOCOL_LOG = logging.getLogger("wirekit.websocket.protocol")
if PROTOCOL_LOG.level == logging.NOTSET:
    PROTOCOL_LOG.setLevel(logging.WARNING)


def server_protocol(pipeline: Pipeline, options: WebSocketOptions) -> ServerProtocol:
    """A server's protocol object; the Origin check is wirekit's (:func:`respond`)."""
    return ServerProtocol(
        max_size=message_limit(pipeline),
        extensions=[ServerPerMessageDeflateFactory()] if options.compression else None,
        subprotocols=[Subprotocol(options.subprotocol)] if options.subprotocol else None,
        logger=PROTOCOL_LOG,
    )


def client_protocol(
    url: str, pipeline: Pipeline, options: WebSocketOptions, *, origin: str | None = None
) -> ClientProtocol:
    """The client protocol object for ``url`` (a ``ws://`` or ``wss://`` URL)."""
    return ClientProtocol(
        parse_uri(url),
        origin=Origin(origin) if origin is not None else None,
        extensions=[ClientPerMessageDeflateFactory()] if options.compression else None,
        subprotocols=[Subprotocol(options.subprotocol)] if options.subprotocol else None,
        max_size=message_limit(pipeline),
        logger=PROTOCOL_LOG,
    )


def peer_error(error: Exception, limit: int | None) -> WirekitError | None:
    """The wirekit error for a protocol object's ``parser_exc`` (None: the peer just left)."""
    if isinstance(error, EOFError):
        return None
    if isinstance(error, PayloadTooBig):
        most = limit or 0
        return FrameTooLarge(
            f"WebSocket message exceeds max_frame_size={most}: {error}",
            size=(error.size or 0) + (error.current_size or 0) or most + 1,
            limit=most,
        )
    return InvalidFrame(f"bad WebSocket frame: {error}")


def closed_error(
    ws: ServerProtocol | ClientProtocol, text: str, *, peer: Any, lost: bool
) -> ConnectionClosed:
    """The error for a closed connection: the peer's close code and reason, if it sent them.

    ``lost``: the connection is gone (1006 when no close frame came).
    """
    received = ws.close_rcvd
    if received is None:
        return ConnectionClosed(text, peer=peer, code=CloseCode.ABNORMAL if lost else None)
    return ConnectionClosed(
        f"{text} (close code {received.code}{': ' if received.reason else ''}{received.reason})",
        peer=peer,
        code=received.code,
        reason=received.reason,
    )


class Refusal(enum.Enum):
    """Why a request was refused, when the connection should log it."""

    TOO_LARGE = "too-large"
    ORIGIN = "origin"
    HANDSHAKE = "handshake"
    #: Headers that cannot be read (repeated, malformed): 400.
    HEADERS = "headers"


@attrs.frozen
class Answer:
    """The response to send, and why the request was refused (None: not refused, or a page)."""

    response: Response
    refusal: Refusal | None = None
    #: The request's origin (for a refusal's log line).
    origin: str | None = None
    #: What was wrong with the request's headers (Refusal.HEADERS).
    detail: str | None = None


def request_size(request: Request) -> int:
    """Bytes of an HTTP request's head, as sent (request line and headers)."""
    line = len(request.method) + len(request.path) + len(request.protocol) + 4
    headers = sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
    return line + headers + 2


def refuse_oversize(ws: ServerProtocol, limit: int) -> Response:
    """431: the request head is over ``limit`` bytes."""
    return ws.reject(431, f"Request headers over {limit} bytes.\n")


def respond(
    ws: ServerProtocol,
    request: Request,
    *,
    options: WebSocketOptions,
    path: str,
    secure: bool,
    pages: Pages | None,
) -> Answer:
    """What to answer ``request`` on a WebSocket endpoint at ``path``."""
    try:
        return _respond(ws, request, options=options, path=path, secure=secure, pages=pages)
    except (LookupError, ValueError) as exc:
        # A header the checks below did not expect to be unreadable: still
        # the peer's request, so a 400 (and a log line), not a traceback.
        detail = f"unreadable request headers: {type(exc).__name__}: {exc}"
        return Answer(ws.reject(400, "Bad request headers.\n"), Refusal.HEADERS, detail=detail)


def _respond(
    ws: ServerProtocol,
    request: Request,
    *,
    options: WebSocketOptions,
    path: str,
    secure: bool,
    pages: Pages | None,
) -> Answer:
    headers = request.headers
    if request_size(request) > options.max_request_size:
        return Answer(refuse_oversize(ws, options.max_request_size), Refusal.TOO_LARGE)
    try:
        upgrade = headers.get("Upgrade", "")
        origin = headers.get("Origin")
        host = headers.get("Host")
    except MultipleValuesError as exc:
        name = exc.args[0] if exc.args else "a"
        detail = f"repeated {name} header"
        return Answer(ws.reject(400, f"Repeated {name} header.\n"), Refusal.HEADERS, detail=detail)
    target = request.path
    if "websocket" not in upgrade.lower():
        page = answer(
            pages,
            request.method,
            target,
            websocket_path=path,
            max_page_size=options.max_page_size,
        )
        return Answer(Response(page.status, page.reason, type(headers)(page.headers()), page.body))
    asked = target.partition("?")[0]
    if asked != path:
        return Answer(ws.reject(404, f"No WebSocket endpoint at {asked}.\n"))
    if not origin_allowed(origin, host, secure=secure, allowed=options.origins):
        return Answer(
            ws.reject(403, f"Origin {origin} is not allowed here.\n"), Refusal.ORIGIN, origin
        )
    response = ws.accept(request)
    return Answer(response, None if response.status_code == 101 else Refusal.HANDSHAKE)
