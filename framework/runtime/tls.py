"""TLS settings and the ``ssl`` contexts built from them (TLS 1.2 or newer only)."""

from __future__ import annotations

import ssl

import attrs

from framework.errors import ConfigError

__all__ = ["TlsOptions"]


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
