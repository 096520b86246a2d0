"""Clients: ``connect(url, pipeline)`` to any endpoint, same API on every transport."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from framework.core.connection import Role
from framework.core.endpoints import Endpoint, parse_url
from framework.core.errors import TransportError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.websocket import WebSocketOptions
from framework.runtime.connection import Connection
from framework.runtime.datagram_client import DatagramClient
from framework.runtime.stream import StreamConnection
from framework.runtime.tls import TlsOptions, not_tls_error
from framework.runtime.transports import open_datagram, open_stream

__all__ = ["connect"]


async def _open(
    url: str | Endpoint,
    pipeline: Pipeline,
    limits: Limits,
    tls: TlsOptions | None,
    timeout: float | None,
    websocket: WebSocketOptions | None,
) -> Connection:
    endpoint = parse_url(url) if isinstance(url, str) else url
    if endpoint.is_websocket:
        return await _open_websocket(endpoint, pipeline, limits, tls, timeout, websocket)
    if endpoint.is_stream:
        ssl_context = None
        if endpoint.scheme == "tls":
            ssl_context = (tls or TlsOptions()).client_context()
        opening = open_stream(
            endpoint,
            lambda: StreamConnection(pipeline, router=None, limits=limits, role=Role.CLIENT),
            ssl_context=ssl_context,
            server_hostname=tls.server_hostname if tls is not None else None,
            handshake_timeout=limits.handshake_timeout,
        )
    else:
        opening = open_datagram(endpoint, lambda: DatagramClient(pipeline, limits=limits))  # type: ignore[assignment]
    try:
        _transport, protocol = await asyncio.wait_for(opening, timeout)
    except TimeoutError:
        raise TransportError(f"connecting to {endpoint.url} timed out", peer=endpoint.url) from None
    except TransportError as exc:
        clearer = not_tls_error(endpoint.url, exc.__cause__) if endpoint.scheme == "tls" else None
        if clearer is None:
            raise
        raise clearer from exc.__cause__
    assert isinstance(protocol, Connection)
    return protocol


async def _open_websocket(
    endpoint: Endpoint,
    pipeline: Pipeline,
    limits: Limits,
    tls: TlsOptions | None,
    timeout: float | None,
    options: WebSocketOptions | None,
) -> Connection:
    # Imported here: only WebSocket clients need the websockets library.
    from framework.runtime.websocket import WebSocketConnection, client_protocol

    options = options if options is not None else WebSocketOptions()
    secure = endpoint.scheme == "wss"
    # An in-process stream's name is no host to put in the request.
    uri = endpoint.url if endpoint.scheme != "memory+ws" else f"ws://localhost{endpoint.path}"
    client = client_protocol(uri, pipeline, options, origin=options.origin)
    if endpoint.scheme == "memory+ws":
        underneath = Endpoint("memory", path=endpoint.host)
    else:
        underneath = Endpoint("tls" if secure else "tcp", host=endpoint.host, port=endpoint.port)

    def factory() -> WebSocketConnection:
        return WebSocketConnection(
            pipeline,
            router=None,
            limits=limits,
            role=Role.CLIENT,
            options=options,
            path=endpoint.path or "/",
            secure=secure,
            client=client,
        )

    async def opening() -> WebSocketConnection:
        transport, protocol = await open_stream(
            underneath,
            factory,
            ssl_context=(tls or TlsOptions()).client_context() if secure else None,
            server_hostname=tls.server_hostname if tls is not None else None,
            handshake_timeout=limits.handshake_timeout,
        )
        assert isinstance(protocol, WebSocketConnection)
        try:
            await protocol.handshake
        except BaseException:
            transport.abort()
            raise
        return protocol

    try:
        return await asyncio.wait_for(opening(), timeout)
    except TimeoutError:
        raise TransportError(f"connecting to {endpoint.url} timed out", peer=endpoint.url) from None


class _Connecting:
    """``await connect(...)`` or ``async with connect(...) as conn``."""

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._conn: Connection | None = None

    def __await__(self) -> Generator[Any, None, Connection]:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> Connection:
        self._conn = await _open(*self._args)
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()


def connect(
    url: str | Endpoint,
    pipeline: Pipeline,
    *,
    limits: Limits | None = None,
    tls: TlsOptions | None = None,
    timeout: float | None = 10.0,
    websocket: WebSocketOptions | None = None,
) -> _Connecting:
    """Connect to ``url``; use as ``async with connect(...) as conn`` or ``await connect(...)``.

    ``conn.send(value)`` encodes and sends; ``await conn.receive()`` returns
    the next decoded value. Over UDP the same calls send and receive
    datagrams, and over a WebSocket (``ws://``, ``wss://``) messages, with
    ``websocket``'s options.
    """
    return _Connecting(
        url, pipeline, limits if limits is not None else Limits(), tls, timeout, websocket
    )
