"""Servers: listen on an endpoint and run an app's router for every peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from framework.endpoints import Endpoint, parse_url
from framework.limits import Limits
from framework.pipeline import Pipeline
from framework.router import Router
from framework.runtime.connection import Connection, StreamConnection
from framework.runtime.datagram import DatagramServer, DatagramStats
from framework.runtime.tls import TlsOptions
from framework.transports import StreamListener, serve_datagrams, serve_stream

__all__ = ["Server", "start_server"]

log = logging.getLogger("wirekit.server")


class Server:
    """A running server. ``url`` is the address it actually bound (port 0 resolved).

    ``close()`` shuts down gracefully: it stops accepting, lets in-flight
    handlers finish within ``limits.shutdown_timeout``, flushes every reply
    already produced, then closes each connection.
    """

    def __init__(self, endpoint: Endpoint, limits: Limits) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.connections: set[Connection] = set()
        self.refused = 0
        self._listener: StreamListener | None = None
        self._datagrams: DatagramServer | None = None
        self._closed = asyncio.get_running_loop().create_future()
        self._closing = False

    @property
    def url(self) -> str:
        """The bound endpoint as a URL."""
        return self.endpoint.url

    @property
    def datagram_stats(self) -> DatagramStats | None:
        """Counters of a UDP server (``None`` for stream servers)."""
        return self._datagrams.stats if self._datagrams is not None else None

    def __repr__(self) -> str:
        return f"<Server {self.url} connections={len(self.connections)}>"

    def _admit(self, conn: StreamConnection) -> bool:
        limit = self.limits.max_connections
        if self._closing or (limit is not None and len(self.connections) >= limit):
            self.refused += 1
            log.warning("refusing %s: %d connections open", conn.peer, len(self.connections))
            return False
        self.connections.add(conn)
        return True

    def _release(self, conn: StreamConnection) -> None:
        self.connections.discard(conn)

    async def close(self) -> None:
        """Stop accepting, finish in-flight work, close every connection.

        Reading stops first, so no new handler starts; handlers already
        running get ``limits.shutdown_timeout`` seconds to finish (then they
        are cancelled), and the replies they produced get as long again to be
        flushed to peers that read them; a peer that does not read by then is
        cut off.
        """
        if self._closing:
            await self.wait_closed()
            return
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        peers: list[Connection] = list(self.connections)
        if self._datagrams is not None:
            self._datagrams.stop_reading()
            peers += list(self._datagrams.peers.values())
        for conn in peers:
            conn._stop_reading()
        timeout = self.limits.shutdown_timeout
        await asyncio.gather(*(conn._wait_handlers(timeout) for conn in peers))
        for conn in peers:
            conn.close()
        if self._datagrams is not None:
            self._datagrams.close()
        await self._flush(timeout)
        if self._listener is not None:
            await self._listener.wait_closed()
        if self.endpoint.scheme == "unix" and not self.endpoint.path.startswith("@"):
            # asyncio before 3.13 leaves the socket file behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint.path)
        if not self._closed.done():
            self._closed.set_result(None)

    async def _flush(self, timeout: float) -> None:
        """Wait for closing connections to flush their writes; abort the laggards."""
        waits = {asyncio.ensure_future(conn.wait_closed()): conn for conn in self.connections}
        if not waits:
            return
        _done, late = await asyncio.wait(waits, timeout=timeout)
        for future in late:
            conn = waits[future]
            log.warning("%r: unsent data not flushed within %s s, aborting", conn, timeout)
            conn.abort()
        if late:
            await asyncio.wait(late)

    async def wait_closed(self) -> None:
        """Wait until the server has shut down."""
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_server(
    pipeline: Pipeline,
    router: Router,
    url: str | Endpoint,
    *,
    limits: Limits | None = None,
    tls: TlsOptions | None = None,
    handler_errors: str = "close",
    reuse_port: bool = False,
) -> Server:
    """Listen on ``url`` and serve it with ``pipeline`` and ``router``."""
    endpoint = parse_url(url) if isinstance(url, str) else url
    limits = limits if limits is not None else Limits()
    server = Server(endpoint, limits)
    if not endpoint.is_stream:
        datagrams = DatagramServer(pipeline, router, limits, handler_errors)
        _transport, _protocol, bound = await serve_datagrams(
            endpoint, lambda: datagrams, reuse_port=reuse_port
        )
        server._datagrams = datagrams
        server.endpoint = bound
        return server
    # Fail now, not on the first connection, if the framing cannot cut a stream.
    pipeline.decoder()

    def factory() -> Any:
        return StreamConnection(
            pipeline,
            router=router,
            limits=limits,
            handler_errors=handler_errors,
            on_made=server._admit,
            on_lost=server._release,
            idle_timeout=limits.idle_timeout,
        )

    ssl_context = tls.server_context() if tls is not None and endpoint.scheme == "tls" else None
    listener, bound = await serve_stream(
        endpoint,
        factory,
        ssl_context=ssl_context,
        handshake_timeout=limits.handshake_timeout,
        reuse_port=reuse_port,
    )
    server._listener = listener
    server.endpoint = bound
    return server
