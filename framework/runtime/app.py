"""The application object: a pipeline, its handlers, and ways to serve them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from framework.core.endpoints import Endpoint
from framework.core.errors import ConfigError
from framework.core.groups import DEFAULT_TTL
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.core.websocket import WebSocketOptions
from framework.runtime.backplane import SCHEMES, Backplane
from framework.runtime.groups import Groups
from framework.runtime.lifecycle import serve_until_stopped
from framework.runtime.loop import run as run_loop
from framework.runtime.metrics_workers import open_metrics
from framework.runtime.pages import Pages
from framework.runtime.server import Server, start_server
from framework.runtime.tls import TlsOptions
from framework.runtime.workers import serve_workers

__all__ = ["App", "Urls", "urls_of"]

#: One endpoint, or several served together by one app (one state, one room).
Urls = str | Endpoint | Sequence[str | Endpoint]


class App(Router):
    """A protocol: a :class:`Pipeline` plus handlers, servable on any endpoint.

    ::

        app = App(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position]))

        @app.on(Position)
        async def moved(msg, conn):
            return msg          # a returned value is the reply

        await app.serve("tcp://127.0.0.1:9000")   # or udp://, unix:///path, tls://, ws://
        await app.serve(["tcp://127.0.0.1:9000", "ws://127.0.0.1:8000"])  # both at once

    ``handler_errors`` is the policy when a handler raises: ``"close"`` (the
    default: the error is logged and that connection closed, since its state
    may be inconsistent) or ``"keep"`` (logged, counted, the connection goes on).
    UDP peers are never closed by a handler error.

    ``pages`` is ``None`` or a directory of static files (a
    :class:`pathlib.Path`, or an :mod:`importlib.resources` ``Traversable``
    for files shipped in a package): on a ``ws://`` or ``wss://`` listener, a
    plain HTTP GET that is not a WebSocket upgrade is answered from it
    (``/`` is ``index.html``; see :mod:`framework.runtime.pages`).

    Groups (:attr:`groups`) span every node of the app: ``backplane`` is the
    broker that carries them between nodes (``"memory://"``, in-process, by
    default; ``"redis://HOST:PORT"``, ``"nats://HOST:PORT"``, or a
    :class:`~framework.runtime.backplane.Backplane`), ``namespace`` prefixes
    the app's channels on it, and ``presence_ttl`` is how long a silent node
    stays in presence. The app starts the backplane before it listens and
    closes it once its connections have drained.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        handler_errors: str = "close",
        default_url: str | None = None,
        pages: Pages | None = None,
        backplane: str | Backplane = "memory://",
        namespace: str = "default",
        presence_ttl: float = DEFAULT_TTL,
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
        #: Static files for plain HTTP requests on WebSocket listeners (or None).
        self.pages = pages
        self._backplane = _check_backplane(backplane)
        #: The prefix of the app's channels: ``wirekit.<namespace>.<group>``.
        self.namespace = namespace
        #: Seconds a node that stopped refreshing its members stays in presence.
        self.presence_ttl = presence_ttl
        self._groups: Groups | None = None

    @property
    def backplane(self) -> str | Backplane:
        """The backplane of the app's groups (a URL or a Backplane), read when serving starts."""
        return self._backplane

    @backplane.setter
    def backplane(self, backplane: str | Backplane) -> None:
        self._backplane = _check_backplane(backplane)

    @property
    def groups(self) -> Groups:
        """The app's groups (see :class:`~framework.runtime.groups.Groups`).

        Ask for it when the protocol is set up, before serving: from then on
        the app uses groups (:attr:`uses_groups`), and serving starts their
        backplane.
        """
        if self._groups is None:
            self._groups = Groups()
        return self._groups

    @property
    def uses_groups(self) -> bool:
        """Whether the protocol asked for :attr:`groups`."""
        return self._groups is not None

    def check_workers(self, workers: int) -> None:
        """Raise :class:`ConfigError` if ``workers`` processes would split the app's groups.

        Each worker's ``memory://`` backplane is its own: a protocol that
        uses groups needs a broker to be served by several workers.
        """
        if workers == 1 or not self.uses_groups:
            return
        url = self.backplane if isinstance(self.backplane, str) else self.backplane.url
        if urlsplit(url).scheme == "memory":
            raise ConfigError(
                f"this protocol uses groups, and {workers} workers on {url} would each have "
                "groups of their own: pass --backplane redis://HOST:PORT or nats://HOST:PORT "
                '(backplane = "..." in a config file)',
                option="backplane",
            )

    def with_pipeline(self, pipeline: Pipeline) -> App:
        """A copy of this app with the same handlers, groups and options, another pipeline."""
        other = App(
            pipeline,
            handler_errors=self.handler_errors,
            default_url=self.default_url,
            pages=self.pages,
            backplane=self.backplane,
            namespace=self.namespace,
            presence_ttl=self.presence_ttl,
        )
        other._handlers = dict(self._handlers)
        other.connect_hooks = list(self.connect_hooks)
        other.disconnect_hooks = list(self.disconnect_hooks)
        other.fallback_handler = self.fallback_handler
        # The handlers hold the original's groups: the copy shares them.
        other._groups = self._groups
        return other

    async def start(
        self,
        url: str | Endpoint,
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        reuse_port: bool = False,
        websocket: WebSocketOptions | None = None,
    ) -> Server:
        """Start serving ``url`` and return the running :class:`Server`.

        An app that uses groups starts their backplane first (once for all
        its servers) and closes it after its last server has closed.
        """
        groups = self._groups
        if groups is None:
            return await self._start_server(url, limits, tls, reuse_port, websocket)
        # Connections leave their groups after the protocol's own disconnect
        # hooks, which may still want to know where they were.
        if groups.leave_all in self.disconnect_hooks:
            self.disconnect_hooks.remove(groups.leave_all)
        self.disconnect_hooks.append(groups.leave_all)
        await groups.start(
            self.backplane, self.namespace, self.presence_ttl, self.pipeline.messages
        )
        try:
            server = await self._start_server(url, limits, tls, reuse_port, websocket)
        except BaseException:
            await groups.stop()
            raise
        server.after_close(groups.stop)
        return server

    async def _start_server(
        self,
        url: str | Endpoint,
        limits: Limits | None,
        tls: TlsOptions | None,
        reuse_port: bool,
        websocket: WebSocketOptions | None,
    ) -> Server:
        return await start_server(
            self.pipeline,
            self,
            url,
            limits=limits,
            tls=tls,
            handler_errors=self.handler_errors,
            reuse_port=reuse_port,
            websocket=websocket,
            pages=self.pages,
        )

    async def start_all(
        self,
        urls: Sequence[str | Endpoint],
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        reuse_port: bool = False,
        websocket: WebSocketOptions | None = None,
    ) -> list[Server]:
        """Start serving every URL of ``urls``; all or none (a failure closes those started)."""
        servers: list[Server] = []
        try:
            for url in urls:
                servers.append(
                    await self.start(
                        url, limits=limits, tls=tls, reuse_port=reuse_port, websocket=websocket
                    )
                )
        except BaseException:
            for server in servers:
                await server.close()
            raise
        return servers

    async def serve(
        self,
        url: Urls,
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        reuse_port: bool = False,
        ready: Callable[[Server], None] | None = None,
        websocket: WebSocketOptions | None = None,
    ) -> None:
        """Serve ``url`` until SIGINT/SIGTERM or cancellation, then shut down gracefully.

        ``url`` may be a list: every endpoint is served by this one app, with
        one state (a chat room reachable over ``tcp://`` and ``ws://`` at
        once). ``ready``, if given, is called with each running server once
        they all listen. SIGHUP reloads the TLS certificate of ``tls://`` and
        ``wss://`` servers (:meth:`Server.reload_tls`). A second SIGINT or
        SIGTERM during the shutdown does not cut it short:
        ``limits.shutdown_timeout`` bounds it. The signals are
        :mod:`framework.runtime.lifecycle`'s.
        """
        servers = await self.start_all(
            urls_of(url), limits=limits, tls=tls, reuse_port=reuse_port, websocket=websocket
        )
        await serve_until_stopped(servers, ready)

    def run(
        self,
        url: Urls,
        *,
        workers: int = 1,
        uvloop: bool | None = None,
        metrics: str | None = None,
        **options: Any,
    ) -> None:
        """Blocking: serve ``url`` (or several) until SIGINT/SIGTERM, on uvloop when installed.

        ``workers=N`` (Linux; ``tcp://``, ``tls://``, ``udp://``, ``ws://``,
        ``wss://``) serves from N processes sharing the port, or every port
        of a list (see :mod:`framework.runtime.workers`).
        ``uvloop``: ``None`` uses it if installed (unless ``WIREKIT_UVLOOP=0``),
        ``False`` never, ``True`` requires it. ``metrics="HOST:PORT"`` serves
        Prometheus ``/metrics`` and ``/healthz`` there, summed over the workers
        (needs ``wirekit[metrics]``). ``options`` are :meth:`serve`'s.
        """
        if workers != 1:
            self.check_workers(workers)
        endpoint, reporter = open_metrics(metrics, workers)
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


def urls_of(url: Urls) -> list[str | Endpoint]:
    """``url`` as a list of endpoints (one URL is a list of one); an empty list is an error."""
    urls = [url] if isinstance(url, str | Endpoint) else list(url)
    if not urls:
        raise ConfigError("no endpoint URL to serve", option="url")
    return urls


def _check_backplane(backplane: str | Backplane) -> str | Backplane:
    if isinstance(backplane, Backplane):
        return backplane
    if not isinstance(backplane, str) or urlsplit(backplane).scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(
            f"backplane must be a URL starting with one of {known}, or a Backplane; "
            f"got {backplane!r}",
            option="backplane",
        )
    return backplane
