"""Open servers and client connections for each endpoint scheme."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
from collections.abc import Callable
from typing import Any, Protocol

from framework.core.endpoints import Endpoint
from framework.core.errors import ConfigError, TransportError
from framework.runtime.transports import memory
from framework.runtime.transports.tls_layer import app_transport, client_tls
from framework.runtime.transports.udp import create_udp_endpoint

__all__ = [
    "DatagramFactory",
    "StreamFactory",
    "StreamListener",
    "open_datagram",
    "open_stream",
    "serve_datagrams",
    "serve_stream",
]

StreamFactory = Callable[[], asyncio.Protocol]
DatagramFactory = Callable[[], asyncio.DatagramProtocol]


class StreamListener(Protocol):
    """What a listening stream transport offers: stop accepting, and wait."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


def _bound(endpoint: Endpoint, sockname: Any) -> Endpoint:
    if endpoint.scheme == "unix":
        return endpoint
    host, port = sockname[0], sockname[1]
    return Endpoint(endpoint.scheme, host=host, port=port)


def _os_error(action: str, endpoint: Endpoint, exc: OSError) -> TransportError:
    return TransportError(
        f"cannot {action} {endpoint.url}: {exc.strerror or exc}", peer=endpoint.url
    )


async def serve_stream(
    endpoint: Endpoint,
    factory: StreamFactory,
    *,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
    reuse_port: bool = False,
    backlog: int = 1024,
) -> tuple[StreamListener, Endpoint]:
    """Listen on a stream endpoint; return the listener and the bound endpoint."""
    loop = asyncio.get_running_loop()
    if endpoint.scheme == "tls" and ssl_context is None:
        raise ConfigError("tls:// needs a certificate: set certfile and keyfile", option="tls")
    tls = ssl_context if endpoint.scheme == "tls" else None
    timeout = handshake_timeout if tls is not None else None
    try:
        if endpoint.scheme in ("tcp", "tls"):
            server = await loop.create_server(
                factory,
                endpoint.host or None,
                endpoint.port,
                ssl=tls,
                ssl_handshake_timeout=timeout,
                reuse_port=reuse_port or None,
                backlog=backlog,
            )
            return server, _bound(endpoint, server.sockets[0].getsockname())
        if endpoint.scheme == "unix":
            _remove_stale_socket(endpoint)
            if endpoint.path.startswith("@"):
                server = await loop.create_unix_server(
                    factory, sock=_abstract_socket(endpoint), backlog=backlog
                )
            else:
                server = await loop.create_unix_server(
                    factory, _unix_path(endpoint), backlog=backlog
                )
            return server, endpoint
        if endpoint.scheme == "memory":
            return memory.listen(endpoint.path, factory), endpoint
    except OSError as exc:
        raise _os_error("listen on", endpoint, exc) from exc
    raise ConfigError(f"{endpoint.scheme}:// does not carry a byte stream", option="url")


def _unix_path(endpoint: Endpoint) -> str:
    # unix://@name is Linux's abstract namespace: no file, gone with the socket.
    path = endpoint.path
    return "\0" + path[1:] if path.startswith("@") else path


def _abstract_socket(endpoint: Endpoint) -> socket.socket:
    # Bound here rather than by the loop: uvloop refuses a path that starts
    # with a NUL byte, and asyncio takes a bound socket just as well.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_unix_path(endpoint))
    except OSError:
        sock.close()
        raise
    return sock


async def _connect_abstract(endpoint: Endpoint) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, _unix_path(endpoint))
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(endpoint: Endpoint) -> None:
    # A socket file left by a crashed server blocks bind(); remove it only if
    # it is a socket nobody answers on. asyncio's create_unix_server removes
    # any socket file it finds, so a live one must be refused here, or a
    # second server would silently take the path from the first.
    path = endpoint.path
    if path.startswith("@"):
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live server with a full backlog must not block us
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except BlockingIOError:
        pass  # alive, its backlog full
    except OSError:
        return  # cannot tell; let bind() report the problem
    finally:
        probe.close()
    raise TransportError(
        f"cannot listen on {endpoint.url}: another server is listening there", peer=endpoint.url
    )


async def _open_tls(
    endpoint: Endpoint,
    factory: StreamFactory,
    context: ssl.SSLContext,
    server_hostname: str,
    handshake_timeout: float | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    # asyncio's own TLS layer over the loop's TCP transport, as TLS servers
    # use (framework.runtime.tls), on every loop: uvloop's built-in TLS
    # client drops data it has received when the server closes while the
    # client's reading is paused, losing the server's last replies.
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    protocol = factory()
    tls = client_tls(protocol, context, waiter, server_hostname, handshake_timeout)
    tcp, _ = await loop.create_connection(lambda: tls, endpoint.host, endpoint.port)
    try:
        await waiter
    except BaseException:
        tcp.close()
        raise
    return app_transport(tls), protocol


async def open_stream(
    endpoint: Endpoint,
    factory: StreamFactory,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Connect to a stream endpoint."""
    loop = asyncio.get_running_loop()
    try:
        if endpoint.scheme in ("tcp", "tls"):
            tls = None
            if endpoint.scheme == "tls":
                tls = ssl_context if ssl_context is not None else ssl.create_default_context()
            if tls is None:
                transport, protocol = await loop.create_connection(
                    factory, endpoint.host, endpoint.port
                )
            else:
                transport, protocol = await _open_tls(
                    endpoint, factory, tls, server_hostname or endpoint.host, handshake_timeout
                )
        elif endpoint.scheme == "unix":
            if endpoint.path.startswith("@"):
                sock = await _connect_abstract(endpoint)
                transport, protocol = await loop.create_unix_connection(factory, sock=sock)
            else:
                transport, protocol = await loop.create_unix_connection(
                    factory, _unix_path(endpoint)
                )
        elif endpoint.scheme == "memory":
            transport, protocol = memory.connect(endpoint.path, factory)
        else:
            raise ConfigError(f"{endpoint.scheme}:// does not carry a byte stream", option="url")
    except ssl.SSLError as exc:
        raise TransportError(
            f"TLS handshake with {endpoint.url} failed: {exc}", peer=endpoint.url
        ) from exc
    except OSError as exc:
        raise _os_error("connect to", endpoint, exc) from exc
    # No isinstance check: uvloop's transports implement asyncio.Transport
    # without subclassing it.
    return transport, protocol


async def serve_datagrams(
    endpoint: Endpoint, factory: DatagramFactory, *, reuse_port: bool = False
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol, Endpoint]:
    """Bind a UDP endpoint; return the transport, the protocol and the bound endpoint."""
    if endpoint.scheme == "memory+udp":
        bound, protocol = memory.bind_datagrams(endpoint.path, factory)
        return bound, protocol, endpoint
    try:
        transport, protocol = await create_udp_endpoint(
            factory, local_addr=(endpoint.host, endpoint.port), reuse_port=reuse_port
        )
    except OSError as exc:
        raise _os_error("bind", endpoint, exc) from exc
    return transport, protocol, _bound(endpoint, transport.get_extra_info("sockname"))


async def open_datagram(
    endpoint: Endpoint, factory: DatagramFactory
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    """Open a UDP socket connected to a remote endpoint."""
    if endpoint.scheme == "memory+udp":
        return memory.open_datagrams(endpoint.path, factory)
    try:
        return await create_udp_endpoint(factory, remote_addr=(endpoint.host, endpoint.port))
    except OSError as exc:
        raise _os_error("connect to", endpoint, exc) from exc
