"""The application object: a pipeline, its handlers, and ways to serve them."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from framework.core.endpoints import Endpoint
from framework.core.errors import ConfigError, WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.runtime.loop import loop_name
from framework.runtime.loop import run as run_loop
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

        ``ready``, if given, is called with the running server once it
        listens. SIGHUP reloads a TLS server's certificate
        (:meth:`Server.reload_tls`). A second SIGINT or SIGTERM during the
        shutdown does not cut it short: ``limits.shutdown_timeout`` bounds it.
        """
        server = await self.start(url, limits=limits, tls=tls, reuse_port=reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        log.info("serving %s on %s (pid %d)", server.url, loop_name(loop), os.getpid())

        def on_stop(signum: int) -> None:
            if stop.is_set():
                log.info("%s: already shutting down", signal.Signals(signum).name)
            stop.set()

        def on_hup() -> None:
            if server.endpoint.scheme != "tls":
                log.info("SIGHUP: %s has no certificate to reload", server.url)
                return
            try:
                server.reload_tls()
            except WirekitError as exc:
                log.error("SIGHUP: keeping the old TLS certificate: %s", exc)

        installed = []
        # Handlers go in before `ready` announces the server: whoever reacts
        # to the announcement with a signal must get a graceful shutdown.
        # They stay in during the shutdown, so a second signal cannot cut it
        # short (restoring the defaults then would let it kill the process).
        handlers: list[tuple[signal.Signals, Any, tuple[Any, ...]]] = [
            (signal.SIGINT, on_stop, (signal.SIGINT,)),
            (signal.SIGTERM, on_stop, (signal.SIGTERM,)),
        ]
        if hasattr(signal, "SIGHUP"):
            handlers.append((signal.SIGHUP, on_hup, ()))
        for sig, handler, args in handlers:
            try:
                loop.add_signal_handler(sig, handler, *args)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signals on this platform
        try:
            if ready is not None:
                ready(server)
            await stop.wait()
            log.info("shutting down %s", server.url)
        finally:
            try:
                await server.close()
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

    def run(
        self,
        url: str | Endpoint,
        *,
        workers: int = 1,
        uvloop: bool | None = None,
        **options: Any,
    ) -> None:
        """Blocking: serve ``url`` until SIGINT/SIGTERM, on uvloop when it is installed.

        ``workers=N`` (Linux; ``tcp://``, ``tls://``, ``udp://``) serves from
        N processes sharing the port (see :mod:`framework.runtime.workers`).
        ``uvloop``: ``None`` uses it if installed (unless ``WIREKIT_UVLOOP=0``),
        ``False`` never, ``True`` requires it. ``options`` are :meth:`serve`'s.
        """
        if workers != 1:
            from framework.runtime.workers import serve_workers

            serve_workers(self, url, workers=workers, uvloop=uvloop, **options)
            return
        run_loop(self.serve(url, **options), uvloop=uvloop)
