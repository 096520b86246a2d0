"""The application object: a pipeline, its handlers, and ways to serve them."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from framework.endpoints import Endpoint
from framework.errors import ConfigError
from framework.limits import Limits
from framework.pipeline import Pipeline
from framework.router import Router
from framework.runtime.server import Server, start_server
from framework.runtime.tls import TlsOptions

__all__ = ["App"]

log = logging.getLogger("wirekit.app")


class App(Router):
    """A protocol: a :class:`Pipeline` plus handlers, servable on any endpoint.

    ::

        app = App(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position]))

        @app.on(Position)
        async def moved(msg, conn):
            return msg          # a returned value is the reply

        await app.serve("tcp://127.0.0.1:9000")   # or udp://, unix:///path, tls://

    ``handler_errors`` is the policy when a handler raises: ``"close"`` (the
    default: the error is logged and that connection closed, since its state
    may be inconsistent) or ``"keep"`` (logged, counted, the connection goes on).
    UDP peers are never closed by a handler error.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        handler_errors: str = "close",
        default_url: str | None = None,
    ) -> None:
        super().__init__()
        if handler_errors not in ("close", "keep"):
            raise ConfigError(
                f"handler_errors must be 'close' or 'keep', got {handler_errors!r}",
                option="handler_errors",
            )
        self.pipeline = pipeline if pipeline is not None else Pipeline()
        self.handler_errors = handler_errors
        #: Where ``wirekit serve`` listens when neither --url nor the config names one.
        self.default_url = default_url

    def with_pipeline(self, pipeline: Pipeline) -> App:
        """A copy of this app with the same handlers and another pipeline."""
        other = App(pipeline, handler_errors=self.handler_errors, default_url=self.default_url)
        other._handlers = dict(self._handlers)
        other.connect_hooks = list(self.connect_hooks)
        other.disconnect_hooks = list(self.disconnect_hooks)
        other.fallback_handler = self.fallback_handler
        return other

    async def start(
        self,
        url: str | Endpoint,
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        reuse_port: bool = False,
    ) -> Server:
        """Start serving ``url`` and return the running :class:`Server`."""
        return await start_server(
            self.pipeline,
            self,
            url,
            limits=limits,
            tls=tls,
            handler_errors=self.handler_errors,
            reuse_port=reuse_port,
        )

    async def serve(
        self,
        url: str | Endpoint,
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        reuse_port: bool = False,
        ready: Any = None,
    ) -> None:
        """Serve ``url`` until SIGINT/SIGTERM or cancellation, then shut down gracefully.

        ``ready``, if given, is called with the running server once it listens.
        """
        server = await self.start(url, limits=limits, tls=tls, reuse_port=reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        # Handlers go in before `ready` announces the server: whoever reacts
        # to the announcement with a signal must get a graceful shutdown.
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signals on this platform
        try:
            if ready is not None:
                ready(server)
            await stop.wait()
            log.info("shutting down %s", server.url)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await server.close()

    def run(self, url: str | Endpoint, **options: Any) -> None:
        """Blocking: ``asyncio.run(self.serve(url, ...))``."""
        asyncio.run(self.serve(url, **options))
