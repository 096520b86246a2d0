"""asyncio's TLS layer (``asyncio.sslproto``), the one place wirekit uses its internals.

asyncio has no public way to run TLS over a transport that already exists
(what a TLS port does after sniffing the first byte, see
:mod:`framework.runtime.tls`) with a say in how the TLS connection closes,
nor to open a TLS client with asyncio's own TLS on uvloop. Both need
``asyncio.sslproto.SSLProtocol``, which is not public API: every name of it
used below is listed in :data:`INTERNALS`, and
``tests/runtime/test_tls_layer.py`` fails with a message naming what is
gone when a Python release changes them. Nothing else in wirekit touches
``sslproto``.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any, cast

from framework.runtime.transports.queued import when_delivered

__all__ = ["INTERNALS", "ServerTls", "app_transport", "client_tls", "missing_internals"]

#: What this module uses of ``asyncio.sslproto`` beyond its public constructor.
INTERNALS: dict[str, tuple[str, ...]] = {
    "SSLProtocol": (
        "_app_transport",
        "_on_shutdown_complete",
        "_shutdown_timeout_handle",
        "_start_shutdown",
        "_state",
        "_transport",
        "buffer_updated",
        "connection_made",
        "get_buffer",
    ),
    "SSLProtocolState": ("SHUTDOWN",),
}


def missing_internals() -> list[str]:
    """The names of :data:`INTERNALS` that this Python's ``asyncio.sslproto`` lacks."""
    missing = []
    for owner, names in INTERNALS.items():
        cls = getattr(sslproto, owner, None)
        if cls is None:
            missing.append(f"asyncio.sslproto.{owner}")
            continue
        # Instance attributes are set in __init__: look for them in its code.
        init_names = cls.__init__.__code__.co_names if owner == "SSLProtocol" else ()
        missing += [
            f"asyncio.sslproto.{owner}.{name}"
            for name in names
            if not hasattr(cls, name) and name not in init_names
        ]
    return missing


class _Discard(asyncio.Protocol):
    """The TCP side of a TLS connection being closed: drops what the peer still sends."""

    def __init__(self, tls: ServerTls) -> None:
        self._tls = tls

    def data_received(self, data: bytes) -> None:
        self._tls.peer_spoke = True

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls.connection_lost(exc)


class ServerTls(sslproto.SSLProtocol):
    """asyncio's TLS layer for a server, with a lingering close.

    Closing sends ``close_notify`` after the data and waits for the peer's.
    Two cases do better:

    - A peer that has sent nothing since the close began and has
      everything, ``close_notify`` included (the kernel reports every byte
      acknowledged, see
      :func:`~framework.runtime.transports.queued.when_delivered`): TCP
      closes without waiting for an answer the peer may never send (an
      idle client), which TLS does not require of the side that closes
      first.
    - A peer that pipelines requests sends more data before its
      ``close_notify``, which OpenSSL reports as an error, and asyncio then
      aborts the TCP connection: the reset throws away replies the peer has
      not read yet. Here that case half-closes TCP instead (``close_notify``
      and everything before it stay queued), drops the peer's late bytes,
      and closes once the peer has closed too, as
      :mod:`framework.runtime.shutdown` does for plain TCP.
    """

    #: Whether the peer has sent anything since the close began.
    peer_spoke = False
    _close_began = False

    def buffer_updated(self, nbytes: int) -> None:
        if self._close_began:
            self.peer_spoke = True
        super().buffer_updated(nbytes)

    def _start_shutdown(self) -> None:
        self._close_began = True
        super()._start_shutdown()
        tcp: Any = self._transport
        # Private state, which typeshed does not describe (see INTERNALS).
        state = cast(Any, self)._state
        if state is sslproto.SSLProtocolState.SHUTDOWN and tcp is not None:
            # close_notify is written; asyncio now waits for the peer's.
            when_delivered(tcp, self._delivered, quiet=lambda: not self.peer_spoke)

    def _on_shutdown_complete(self, shutdown_exc: BaseException | None) -> None:
        tcp: Any = self._transport
        late_data = getattr(shutdown_exc, "reason", None) == "APPLICATION_DATA_AFTER_CLOSE_NOTIFY"
        if not late_data or tcp is None or tcp.is_closing() or not tcp.can_write_eof():
            super()._on_shutdown_complete(shutdown_exc)  # type: ignore[misc]
            return
        # ssl_shutdown_timeout no longer applies: the server's own shutdown
        # deadline aborts a peer that never closes.
        self._stop_shutdown_timer()
        tcp.set_protocol(_Discard(self))
        tcp.write_eof()
        tcp.resume_reading()

    def _delivered(self) -> None:
        """The peer has everything, close_notify included: no need to wait for its answer."""
        self._stop_shutdown_timer()
        tcp: Any = self._transport
        if tcp is not None and not tcp.is_closing():
            tcp.close()

    def _stop_shutdown_timer(self) -> None:
        handle: Any = getattr(self, "_shutdown_timeout_handle", None)
        if handle is not None:
            handle.cancel()
            self._shutdown_timeout_handle = None


def client_tls(
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    waiter: asyncio.Future[None],
    server_hostname: str,
    handshake_timeout: float | None,
) -> sslproto.SSLProtocol:
    """asyncio's TLS layer for a client, to be given a TCP transport by ``create_connection``."""
    return sslproto.SSLProtocol(
        asyncio.get_running_loop(),
        protocol,
        context,
        waiter,
        server_side=False,
        server_hostname=server_hostname,
        # typeshed says int; asyncio takes any number of seconds.
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
    )


def app_transport(tls: sslproto.SSLProtocol) -> asyncio.Transport:
    """The application's end of a TLS layer once its handshake is done."""
    transport: asyncio.Transport = tls._app_transport
    return transport
