"""TLS settings, the ``ssl`` contexts built from them (TLS 1.2 or newer only),
and how a TLS server accepts a connection.

A TLS server does not hand its context to ``loop.create_server``: it listens
on plain TCP and looks at the first byte each peer sends. A TLS client opens
with a handshake record (``0x16``); anything else is a plaintext client on a
TLS port, which gets one clear log line and a TLS alert instead of a
handshake failure that asyncio reports only in debug mode. The handshake
itself then runs over the same socket with the server's *current* context,
which is what lets ``Server.reload_tls()`` give new connections a new
certificate while existing ones keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

import attrs

from framework.core.errors import ConfigError, TransportError
from framework.runtime.transports.tls_layer import ServerTls

__all__ = ["TlsOptions", "not_tls_error"]

log = logging.getLogger("wirekit.tls")

# A TLS record: content type handshake (22), then the major version 3.
_HANDSHAKE = 0x16
# A fatal unexpected_message alert (RFC 8446, section 6), what a TLS peer
# answers to bytes that are not a TLS record. A wirekit length-prefix client
# reads its first bytes as an absurd length and says "this looks like TLS".
_ALERT_UNEXPECTED_MESSAGE = bytes.fromhex("15 03 03 00 02 02 0a")
# Reasons OpenSSL gives when the other side answers a handshake with bytes
# that are not TLS (an HTTP error page, a banner, a wirekit frame).
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNEXPECTED_EOF_WHILE_READING",
    }
)


@attrs.frozen(kw_only=True)
class TlsOptions:
    """Certificates and policy for ``tls://`` endpoints.

    A server needs ``certfile`` and ``keyfile``; ``cafile`` with
    ``require_client_cert=True`` makes it demand client certificates (mutual
    TLS). A client verifies the server against ``cafile`` (or the system's
    roots) and checks the host name unless ``check_hostname=False``; its own
    ``certfile``/``keyfile`` are sent when a server asks.
    """

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    require_client_cert: bool = False
    check_hostname: bool = True
    server_hostname: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` for a server."""
        if not self.certfile:
            raise ConfigError("a TLS server needs certfile (and keyfile)", option="certfile")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context, self.certfile, self.keyfile, "certfile")
        if self.cafile:
            self._verify_locations(context)
        if self.require_client_cert:
            if not self.cafile:
                raise ConfigError(
                    "require_client_cert needs cafile: the CA that signs client certificates",
                    option="cafile",
                )
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` for a client."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cafile:
            self._verify_locations(context)
        context.check_hostname = self.check_hostname
        if self.certfile:
            self._load(context, self.certfile, self.keyfile, "certfile")
        return context

    @staticmethod
    def _load(context: ssl.SSLContext, certfile: str, keyfile: str | None, option: str) -> None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load certificate {certfile!r} / key {keyfile!r}: {exc}",
                option=option,
                value=certfile,
            ) from exc

    def _verify_locations(self, context: ssl.SSLContext) -> None:
        try:
            context.load_verify_locations(self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load CA file {self.cafile!r}: {exc}", option="cafile", value=self.cafile
            ) from exc


def not_tls_error(url: str, error: BaseException | None) -> TransportError | None:
    """The clear error for a TLS client whose server does not speak TLS, or ``None``.

    ``error`` is what the handshake failed with. A reset or an end of stream
    during the handshake, or OpenSSL's "wrong version number" (the server
    answered with something that is not a TLS record), means a plain port.
    """
    if isinstance(error, ssl.SSLError):
        if getattr(error, "reason", None) not in _NOT_TLS_REASONS and not isinstance(
            error, ssl.SSLEOFError | ssl.SSLZeroReturnError
        ):
            return None
    elif not isinstance(error, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return None
    detail = str(error) or type(error).__name__
    return TransportError(
        f"TLS handshake with {url} failed: the server does not seem to speak TLS "
        f"(is {url.replace('tls://', 'tcp://', 1)} a plain port?): {detail}",
        peer=url,
    )


class TlsAcceptor(asyncio.Protocol):
    """The first protocol of every connection to a TLS port (see the module docstring).

    ``context`` is called per connection, so a reloaded context applies to
    new connections only. A peer that sends nothing within
    ``handshake_timeout`` is cut off, like one that stalls the handshake.
    """

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        context: Callable[[], ssl.SSLContext],
        handshake_timeout: float,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._factory = factory
        self._context = context
        self._timeout = handshake_timeout
        self._on_failure = on_failure
        self._transport: asyncio.Transport | None = None
        self._peer: Any = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not
        # subclasses of asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout, self._silent)

    def _silent(self) -> None:
        log.info("%s: sent nothing within %s s on a TLS port, closing", self._peer, self._timeout)
        self._failed()
        if self._transport is not None:
            self._transport.abort()

    def _failed(self) -> None:
        if self._on_failure is not None:
            self._on_failure()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        assert transport is not None
        if data[0] != _HANDSHAKE:
            log.warning(
                "%s: plaintext client on a TLS port (it sent %r), closing", self._peer, data[:8]
            )
            self._failed()
            transport.write(_ALERT_UNEXPECTED_MESSAGE)
            transport.close()
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(self._handshake_done)
        # asyncio's own TLS-over-a-transport machinery (what start_tls uses),
        # fed the bytes this protocol has already read.
        tls = ServerTls(
            loop,
            self._factory(),
            self._context(),
            waiter,
            server_side=True,
            # typeshed says int; asyncio takes any number of seconds.
            ssl_handshake_timeout=self._timeout,  # type: ignore[arg-type]
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)
        view = memoryview(data)
        while view:
            buffer = tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls.buffer_updated(size)
            view = view[size:]

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            return
        error = waiter.exception()
        if error is None:
            return
        self._failed()
        if isinstance(error, ssl.SSLError):
            log.info("%s: TLS handshake failed: %s", self._peer, error)
        else:
            log.info("%s: TLS handshake failed: %s", self._peer, str(error) or type(error).__name__)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
