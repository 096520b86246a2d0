"""Prometheus' text format and ``/healthz`` over HTTP: ``wirekit serve --metrics HOST:PORT``.

:class:`MetricsCollector` is a ``prometheus_client`` collector: register it
with your own registry to export wirekit's metrics through your own exporter.
:func:`serve_metrics` serves them itself on a small HTTP endpoint in a thread:

- ``/metrics``: the Prometheus text format (``prometheus_client``'s WSGI app,
  so OpenMetrics, gzip and ``name[]`` filters work as with any Python exporter);
- ``/healthz``: ``200 ok`` while every listener serves (and every registered
  backplane is connected), else ``503`` and a one-line reason.

The endpoint is bounded: at most :data:`MAX_REQUESTS` requests at once
(more wait in the listen backlog, unaccepted, for a slot), at most
:data:`HEAD_TIMEOUT` seconds for the request line and headers and
:data:`REQUEST_TIMEOUT` for a whole request, and ``http.server``'s limits
on the request line and headers. Clients that connect and send nothing
hold a slot for :data:`HEAD_TIMEOUT` at most: a scrape or a health check
behind them waits that long, and is never dropped.
``prometheus_client`` is an optional dependency (``pip install
'wirekit[metrics]'``); this module says so in one line when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from framework.core.errors import ConfigError
from framework.runtime.metrics import BUCKETS, METRICS, REGISTRY, Labels, Snapshot, enable

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_REQUESTS",
    "REQUEST_TIMEOUT",
    "MetricsCollector",
    "MetricsEndpoint",
    "families",
    "parse_address",
    "require_prometheus",
    "serve_metrics",
]

log = logging.getLogger("wirekit.metrics")

#: Requests served at once; a scrape takes milliseconds, more wait in the backlog.
MAX_REQUESTS = 16
#: Seconds from connection to the end of the request head. Scrapers and
#: probes send it in one packet; idle clients must not keep them waiting long.
HEAD_TIMEOUT = 1.0
#: Seconds a request may take, from connection to answer: a slow client cannot hold a thread.
REQUEST_TIMEOUT = 10.0
# Connections the kernel queues while every slot is taken (socketserver's default is 5).
_BACKLOG = 128
# How often a connection waiting for a slot looks whether the endpoint closes.
_POLL = 0.1

Source = Callable[[], Snapshot]


def require_prometheus() -> None:
    """Raise :class:`ConfigError` naming the extra to install without ``prometheus_client``."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "metrics need prometheus_client: pip install 'wirekit[metrics]'", option="metrics"
        ) from None


def families(snap: Snapshot) -> list[Any]:
    """The ``prometheus_client`` metric families of a snapshot, in :data:`METRICS` order."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    grouped: dict[str, list[tuple[Labels, Any]]] = {name: [] for name in METRICS}
    every: list[dict[Any, Any]] = [snap.counters, snap.gauges, snap.histograms]
    for table in every:
        for (name, labels), value in table.items():
            if name in grouped:
                grouped[name].append((labels, value))
    found: list[Any] = []
    for name, (kind, label_names, meaning) in METRICS.items():
        found_samples = sorted(grouped[name], key=lambda item: item[0])
        if not found_samples:
            continue
        family: Any
        if kind == "counter":
            family = CounterMetricFamily(name, meaning, labels=label_names)
        elif kind == "gauge":
            family = GaugeMetricFamily(name, meaning, labels=label_names)
        else:
            family = HistogramMetricFamily(name, meaning, labels=label_names)
        for labels, value in found_samples:
            values = [dict(labels).get(label, "") for label in label_names]
            if kind == "histogram":
                counts, total = value
                family.add_metric(values, _cumulative(counts), sum_value=total)
            else:
                family.add_metric(values, value)
        found.append(family)
    return found


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return buckets


class MetricsCollector:
    """A ``prometheus_client`` collector of this process's wirekit metrics.

    ``registry.register(MetricsCollector())`` adds them to your own registry
    (``prometheus_client.REGISTRY`` for its default exporter). Making one
    turns on handler timing for the listeners started from then on.
    ``source`` is where snapshots come from (the workers' parent passes
    its sum over the workers).
    """

    def __init__(self, source: Source | None = None) -> None:
        require_prometheus()
        enable()
        self._source = source if source is not None else REGISTRY.snapshot

    def collect(self) -> Iterator[Any]:
        """The metric families now (``prometheus_client`` calls it at each scrape)."""
        yield from families(self._source())

    def describe(self) -> list[Any]:
        """Nothing: the families depend on what is listening when a scrape comes."""
        return []


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100``, ``0.0.0.0:9100``, ``127.0.0.1:0``) as a host and a port."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"metrics: expected HOST:PORT (e.g. 127.0.0.1:9100), got {address!r}",
            option="metrics",
            value=address,
        )
    return host, int(port)


# The endpoints of this process: a forked child (a --workers worker) closes
# its copies of their sockets, or it would keep the port bound, and accept
# connections nobody answers, after the parent is gone.
_ENDPOINTS: weakref.WeakSet[MetricsEndpoint] = weakref.WeakSet()


def _forget_in_child() -> None:
    for endpoint in list(_ENDPOINTS):
        endpoint._forget()
    _ENDPOINTS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def parse_request(self) -> bool:
        complete = super().parse_request()
        if complete and isinstance(self.server, _Server):
            self.server.head_received(self.request)
        return complete

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = _BACKLOG

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self.closing = False
        # Each request's socket: when it was accepted, and the timer that cuts it.
        self.requests: dict[socket.socket, tuple[float, threading.Timer]] = {}
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        # While every slot is taken this thread accepts nothing: the next
        # connections wait in the listen backlog, in order, and none is
        # closed unanswered (a health check behind idle clients is late, not lost).
        while not self.slots.acquire(timeout=_POLL):
            if self.closing:
                self.shutdown_request(request)
                return
        # The head comes first, and soon; its end extends the bound to the
        # whole request (_Handler.parse_request).
        self._cut_at(request, time.monotonic(), min(HEAD_TIMEOUT, REQUEST_TIMEOUT))
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget_request(request)
            raise

    def head_received(self, request: socket.socket) -> None:
        """The head of ``request`` is in: it has until the whole-request bound."""
        accepted, head_timer = self.requests[request]
        head_timer.cancel()
        self._cut_at(request, accepted, REQUEST_TIMEOUT - (time.monotonic() - accepted))

    def _cut_at(self, request: socket.socket, accepted: float, seconds: float) -> None:
        # A timer, not the socket timeout: that bounds each read, this the
        # total, so a client that trickles a byte at a time cannot hold a slot.
        timer = threading.Timer(max(seconds, 0.0), _cut, args=(request,))
        timer.daemon = True
        self.requests[request] = (accepted, timer)
        timer.start()

    def _forget_request(self, request: socket.socket) -> None:
        _accepted, timer = self.requests.pop(request)
        timer.cancel()
        self.slots.release()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget_request(request)

    def forget(self) -> None:
        """In a forked child: close this process's copies of every socket, nothing more."""
        for request in list(self.requests):
            request.close()  # the parent's copy still answers
        self.requests.clear()
        self.socket.close()


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _server_class(host: str) -> type[_Server]:
    if ":" in host:

        class _Server6(_Server):
            address_family = socket.AF_INET6

        return _Server6
    return _Server


class MetricsEndpoint:
    """The HTTP endpoint :func:`serve_metrics` runs in a thread; ``url`` is where it listens."""

    def __init__(self, host: str, port: int, source: Source) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app

        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(source))
        self._metrics_app = make_wsgi_app(registry)
        self._source = source
        try:
            self._httpd = make_server(
                host, port, self._app, server_class=_server_class(host), handler_class=_Handler
            )
        except OSError as exc:
            raise ConfigError(
                f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}",
                option="metrics",
            ) from exc
        bound_port = self._httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        #: ``http://HOST:PORT`` (port 0 resolved).
        self.url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="wirekit-metrics", daemon=True
        )
        self._thread.start()
        _ENDPOINTS.add(self)

    def _forget(self) -> None:
        # The serving thread did not come with the fork: only the sockets did.
        self._httpd.forget()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            try:
                snap = self._source()
            except Exception as exc:  # the check itself failed: that is unhealthy too
                log.exception("health check failed")
                ok, reason = False, f"health check failed: {type(exc).__name__}"
            else:
                ok, reason = snap.healthy, snap.health_reason()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _text(start_response, status, reason)
        return _text(start_response, "404 Not Found", "not found: try /metrics or /healthz")

    def close(self) -> None:
        """Stop serving and close the socket."""
        _ENDPOINTS.discard(self)
        self._httpd.closing = True  # a connection waiting for a slot gives up
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _text(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def serve_metrics(address: str, *, source: Source | None = None) -> MetricsEndpoint:
    """Serve ``/metrics`` and ``/healthz`` on ``address`` (``HOST:PORT``) from a thread.

    Turns on handler timing for the listeners started from then on: start
    it before serving. ``source`` defaults to this process's listeners.
    """
    require_prometheus()
    host, port = parse_address(address)
    return MetricsEndpoint(host, port, source if source is not None else REGISTRY.snapshot)
