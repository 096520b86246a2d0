"""The application object: a pipeline, its handlers, and ways to serve them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framework.core.endpoints import Endpoint
from framework.core.errors import ConfigError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.runtime.lifecycle import serve_until_stopped
from framework.runtime.loop import run as run_loop
from framework.runtime.metrics_http import serve_metrics
from framework.runtime.metrics_workers import WorkerMetrics
from framework.runtime.server import Server, start_server
from framework.runtime.tls import TlsOptions
from framework.runtime.workers import serve_workers

__all__ = ["App"]


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
        ready: Callable[[Server], None] | None = None,
    ) -> None:
        """Serve ``url`` until SIGINT/SIGTERM or cancellation, then shut down gracefully.

        ``ready``, if given, is called with the running server once it
        listens. SIGHUP reloads a TLS server's certificate
        (:meth:`Server.reload_tls`). A second SIGINT or SIGTERM during the
        shutdown does not cut it short: ``limits.shutdown_timeout`` bounds it.
        The signals are :mod:`framework.runtime.lifecycle`'s.
        """
        server = await self.start(url, limits=limits, tls=tls, reuse_port=reuse_port)
        await serve_until_stopped(server, ready)

    def run(
        self,
        url: str | Endpoint,
        *,
        workers: int = 1,
        uvloop: bool | None = None,
        metrics: str | None = None,
        **options: Any,
    ) -> None:
        """Blocking: serve ``url`` until SIGINT/SIGTERM, on uvloop when it is installed.

        ``workers=N`` (Linux; ``tcp://``, ``tls://``, ``udp://``) serves from
        N processes sharing the port (see :mod:`framework.runtime.workers`).
        ``uvloop``: ``None`` uses it if installed (unless ``WIREKIT_UVLOOP=0``),
        ``False`` never, ``True`` requires it. ``metrics="HOST:PORT"`` serves
        Prometheus ``/metrics`` and ``/healthz`` there, summed over the workers
        (needs ``wirekit[metrics]``). ``options`` are :meth:`serve`'s.
        """
        reporter = WorkerMetrics(workers) if metrics is not None and workers != 1 else None
        endpoint = (
            serve_metrics(metrics, source=reporter.snapshot if reporter is not None else None)
            if metrics is not None
            else None
        )
        try:
            if workers != 1:
                serve_workers(
                    self, url, workers=workers, uvloop=uvloop, metrics=reporter, **options
                )
                return
            run_loop(self.serve(url, **options), uvloop=uvloop)
        finally:
            if endpoint is not None:
                endpoint.close()
