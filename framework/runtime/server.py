"""Servers: listen on an endpoint and run an app's router for every peer."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from framework.core.connection import Role
from framework.core.datagrams import DatagramStats
from framework.core.endpoints import Endpoint, parse_url
from framework.core.errors import ConfigError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.core.websocket import WebSocketOptions
from framework.runtime.connection import Connection
from framework.runtime.datagram import DatagramServer
from framework.runtime.logs import LogLimiter
from framework.runtime.metrics import (
    REGISTRY,
    ListenerMetrics,
    Snapshot,
    connections_sample,
    datagram_sample,
)
from framework.runtime.pages import Pages
from framework.runtime.shutdown import finish_handlers, linger_close
from framework.runtime.stream import StreamConnection, TimedStreamConnection
from framework.runtime.tls import TlsAcceptor, TlsOptions
from framework.runtime.transports import StreamListener, serve_datagrams, serve_stream

__all__ = ["Server", "start_server"]

log = logging.getLogger("wirekit.server")


class Server:
    """A running server. ``url`` is the address it actually bound (port 0 resolved).

    ``close()`` shuts down gracefully: it stops accepting, lets in-flight
    handlers finish within ``limits.shutdown_timeout``, flushes every reply
    already produced, then closes each connection without losing them (see
    :func:`framework.runtime.shutdown.linger_close`).
    """

    def __init__(
        self, endpoint: Endpoint, limits: Limits, pipeline: Pipeline | None = None
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        #: What this listener counts for :mod:`framework.runtime.metrics`.
        self.metrics = ListenerMetrics(endpoint.url, pipeline.messages if pipeline else None)
        self.connections: set[Connection] = set()
        self.refused = 0
        # Open connections per peer address (see _peer_key), for
        # max_connections_per_peer; an address leaves the dict at zero.
        self._per_peer: dict[str, int] = {}
        #: TLS handshakes that failed or never started (plaintext clients, bad certificates).
        self.handshake_failures = 0
        self._tls: TlsOptions | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._listener: StreamListener | None = None
        self._datagrams: DatagramServer | None = None
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._closing = False
        # Run once every connection has closed (the app's groups: their
        # backplane outlives the connections, whose leaves it carries).
        self._after_close_steps: list[Callable[[], Awaitable[None]]] = []
        # Refusals are a peer's to cause: one line per kind per interval.
        self._log = LogLimiter(log, schedule=loop.call_at)
        self._now = loop.time

    def after_close(self, step: Callable[[], Awaitable[None]]) -> None:
        """Await ``step()`` at the end of :meth:`close`, once every connection has closed."""
        self._after_close_steps.append(step)

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

    @property
    def serving(self) -> bool:
        """Whether the listener is up: not closing, its socket open."""
        if self._closing:
            return False
        if self._datagrams is not None:
            transport = self._datagrams.transport
            return transport is not None and not transport.is_closing()
        is_serving = getattr(self._listener, "is_serving", None)
        return bool(is_serving()) if is_serving is not None else self._listener is not None

    def listener_sample(self, snap: Snapshot) -> None:
        """Add this listener's metric samples to ``snap`` (the registry's lock is held)."""
        metrics = self.metrics
        up = self.serving
        snap.gauges["wirekit_listener_up", metrics.labels] = 1.0 if up else 0.0
        if up:
            snap.listeners += 1
        else:
            snap.problems.append(f"listener {metrics.listener} is not serving")
        datagrams = self._datagrams
        if datagrams is not None:
            peers = datagrams.peers
            live = [peer.stats for peer in peers.values()]
            connections_sample(metrics, live, len(live), snap)
            datagram_sample(metrics, datagrams.stats, snap)
            return
        connections_sample(
            metrics, [c.stats for c in self.connections], len(self.connections), snap
        )
        if self.endpoint.scheme in ("tls", "wss"):
            snap.count(
                "wirekit_tls_handshake_failures_total", metrics.labels, self.handshake_failures
            )

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self.metrics.rejected[reason] += 1

    def _admit(self, conn: Connection) -> bool:
        limit = self.limits.max_connections
        if self._closing:
            self._refuse("shutting_down")
            log.info("refusing %s: shutting down", conn.peer)
            return False
        if limit is not None and len(self.connections) >= limit:
            self._refuse("max_connections")
            self._log.log(
                self._now(),
                "max_connections",
                "refused connections (max_connections)",
                logging.WARNING,
                "refusing %s: %d connections open",
                conn.peer,
                len(self.connections),
            )
            return False
        key = _peer_key(self.endpoint.scheme, conn.peer)
        open_from_peer = self._per_peer.get(key, 0)
        per_peer = self.limits.max_connections_per_peer
        if per_peer is not None and open_from_peer >= per_peer:
            self._refuse("max_connections_per_peer")
            self._log.log(
                self._now(),
                "max_connections_per_peer",
                "refused connections (max_connections_per_peer)",
                logging.WARNING,
                "refusing %s: %d connections open from %s (max_connections_per_peer)",
                conn.peer,
                open_from_peer,
                key,
            )
            return False
        self._per_peer[key] = open_from_peer + 1
        with REGISTRY.lock:  # a scrape in another thread sees it live, or not yet
            self.connections.add(conn)
            self.metrics.accepted += 1
        conn._served(self._log, self.metrics)
        return True

    def _release(self, conn: Connection) -> None:
        if conn not in self.connections:
            return  # refused: never counted
        with REGISTRY.lock:  # counted live or folded in, never both
            self.connections.discard(conn)
            self.metrics.fold(conn.stats)
        key = _peer_key(self.endpoint.scheme, conn.peer)
        left = self._per_peer.get(key, 1) - 1
        if left > 0:
            self._per_peer[key] = left
        else:
            self._per_peer.pop(key, None)

    def connections_from(self, peer: Any) -> int:
        """Open stream connections from ``peer``'s address (an IP, or a peer tuple)."""
        if isinstance(peer, str) and self.endpoint.scheme in _IP_SCHEMES:
            return self._per_peer.get(_normalise_ip(peer), 0)
        return self._per_peer.get(_peer_key(self.endpoint.scheme, peer), 0)

    def reload_tls(self, tls: TlsOptions | None = None) -> None:
        """Load the TLS certificate, key and CA files again (or from ``tls``).

        New connections get the new certificate; connections already open
        keep the one they were set up with. The files are checked first: on
        any error (a :class:`~framework.core.errors.ConfigError` naming the file)
        the server goes on with what it had. ``wirekit serve`` calls this on
        SIGHUP.
        """
        if self._ssl_context is None:
            raise ConfigError(
                f"{self.url} is not a tls:// or wss:// server: nothing to reload", option="tls"
            )
        options = tls if tls is not None else self._tls
        assert options is not None
        self._ssl_context = options.server_context()
        self._tls = options
        log.info("%s: TLS certificate reloaded from %s", self.url, options.certfile)

    def _handshake_failed(self) -> None:
        self.handshake_failures += 1

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
        await asyncio.gather(*(finish_handlers(conn, timeout) for conn in peers))
        for conn in peers:
            if isinstance(conn, StreamConnection):
                linger_close(conn)
            else:
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
        # Counts of refusals not reported yet: the server will not be there
        # when their interval ends.
        self._log.flush(float("inf"))
        if self._datagrams is not None:
            self._datagrams.flush_log()
        REGISTRY.remove_listener(self)
        try:
            for after in self._after_close_steps:
                await after()
        finally:
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
            log.warning(
                "%r: not closed by the peer within %s s of the shutdown (unread replies?), "
                "aborting",
                conn,
                timeout,
            )
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


def _normalise_ip(host: str) -> str:
    # An IPv4 client of a dual-stack socket shows up as ::ffff:a.b.c.d: the
    # same address as a.b.c.d, so it shares that address's budget.
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# Schemes over TCP: their peers are counted by IP address.
_IP_SCHEMES = ("tcp", "tls", "ws", "wss")


def _peer_key(scheme: str, peer: Any) -> str:
    """The address ``max_connections_per_peer`` counts by.

    TCP, TLS and WebSocket: the IP address, port ignored. A Unix socket's clients are
    unnamed and a memory pipe's are all in this process: each counts as one
    address, the whole scheme.
    """
    if scheme in _IP_SCHEMES and isinstance(peer, tuple) and peer:
        return _normalise_ip(str(peer[0]))
    return f"{scheme}:"


async def start_server(
    pipeline: Pipeline,
    router: Router,
    url: str | Endpoint,
    *,
    limits: Limits | None = None,
    tls: TlsOptions | None = None,
    handler_errors: str = "close",
    reuse_port: bool = False,
    websocket: WebSocketOptions | None = None,
    pages: Pages | None = None,
) -> Server:
    """Listen on ``url`` and serve it with ``pipeline`` and ``router``.

    ``websocket`` (``ws://``, ``wss://``): the handshake's options; ``pages``:
    the static files plain HTTP requests on a WebSocket listener get
    (:mod:`framework.runtime.pages`).
    """
    endpoint = parse_url(url) if isinstance(url, str) else url
    limits = limits if limits is not None else Limits()
    server = Server(endpoint, limits, pipeline)
    if endpoint.is_websocket:
        return await _start_websocket(
            server, pipeline, router, tls, handler_errors, reuse_port, websocket, pages
        )
    if not endpoint.is_stream:
        datagrams = DatagramServer(pipeline, router, limits, handler_errors)
        datagrams.metrics = server.metrics
        _transport, _protocol, bound = await serve_datagrams(
            endpoint, lambda: datagrams, reuse_port=reuse_port
        )
        server._datagrams = datagrams
        _listening(server, endpoint, bound)
        datagrams.listener = server.metrics.listener
        return server
    # Fail now, not on the first connection, if the framing cannot cut a stream.
    pipeline.decoder()

    # Handlers timed (metrics on) through the class: see Connection._timed_dispatch.
    kind = StreamConnection if server.metrics.times is None else TimedStreamConnection

    def factory() -> Any:
        return kind(
            pipeline,
            router=router,
            limits=limits,
            handler_errors=handler_errors,
            on_made=server._admit,
            on_lost=server._release,
            role=Role.SERVER,
        )

    return await _listen(server, factory, tls, reuse_port)


async def _listen(
    server: Server, factory: Callable[[], Any], tls: TlsOptions | None, reuse_port: bool
) -> Server:
    """Listen for a stream server's connections, through a TLS acceptor for tls:// and wss://."""
    endpoint = server.endpoint
    if endpoint.scheme == "memory+ws":
        # A WebSocket over an in-process stream (tests, fault injection).
        listener, _bound = await serve_stream(
            Endpoint("memory", path=endpoint.host), factory, reuse_port=reuse_port
        )
        server._listener = listener
        _listening(server, endpoint, endpoint)
        return server
    if endpoint.scheme not in ("tls", "wss"):
        plain = endpoint if endpoint.scheme != "ws" else attrs.evolve(endpoint, scheme="tcp")
        listener, bound = await serve_stream(plain, factory, reuse_port=reuse_port)
        server._listener = listener
        _listening(server, endpoint, bound)
        return server
    if tls is None:
        raise ConfigError(
            f"{endpoint.scheme}:// needs a certificate: set certfile and keyfile", option="tls"
        )
    limits = server.limits
    server._tls = tls
    server._ssl_context = tls.server_context()

    def context() -> ssl.SSLContext:
        assert server._ssl_context is not None
        return server._ssl_context

    def acceptor() -> TlsAcceptor:
        return TlsAcceptor(factory, context, limits.handshake_timeout, server._handshake_failed)

    # Plain TCP underneath: the acceptor sniffs the first byte, then runs the
    # handshake with the server's current context (see framework.runtime.tls).
    listener, bound = await serve_stream(
        attrs.evolve(endpoint, scheme="tcp"), acceptor, reuse_port=reuse_port
    )
    server._listener = listener
    _listening(server, endpoint, bound)
    return server


def _listening(server: Server, configured: Endpoint, bound: Endpoint) -> None:
    """The server listens on ``bound``: name it as configured (port 0 resolved), register it.

    ``bound`` is the socket's address; the server keeps the configured
    scheme and path (``ws://`` over a TCP socket, a WebSocket's path).
    """
    server.endpoint = attrs.evolve(bound, scheme=configured.scheme, path=configured.path)
    if configured.port == 0 and bound.port:
        configured = attrs.evolve(configured, port=bound.port)
    server.metrics.rename(configured.url)
    REGISTRY.add_listener(server)


async def _start_websocket(
    server: Server,
    pipeline: Pipeline,
    router: Router,
    tls: TlsOptions | None,
    handler_errors: str,
    reuse_port: bool,
    options: WebSocketOptions | None,
    pages: Pages | None,
) -> Server:
    # Imported here: the websockets library (and the socket module it
    # loads) is needed only by WebSocket endpoints.
    from framework.runtime.websocket import TimedWebSocketConnection, WebSocketConnection

    endpoint = server.endpoint
    options = options if options is not None else WebSocketOptions()
    limits = server.limits
    # Handlers timed (metrics on) through the class, as for a stream.
    kind = WebSocketConnection if server.metrics.times is None else TimedWebSocketConnection

    def factory() -> Any:
        return kind(
            pipeline,
            router=router,
            limits=limits,
            role=Role.SERVER,
            options=options,
            path=endpoint.path or "/",
            secure=endpoint.scheme == "wss",
            pages=pages,
            handler_errors=handler_errors,
            on_made=server._admit,
            on_lost=server._release,
        )

    return await _listen(server, factory, tls, reuse_port)
