"""Serve one app from several processes that share a port (Linux ``SO_REUSEPORT``).

The parent process binds nothing it serves: it resolves the port (port 0
becomes a real port, held by a placeholder socket until the workers listen),
forks ``workers`` processes that each run :meth:`App.serve` on that port with
``reuse_port=True``, and then only supervises:

- SIGINT or SIGTERM: every worker gets SIGTERM and shuts down gracefully
  (handlers finish within ``Limits.shutdown_timeout``, replies are flushed).
  A worker still running after twice that, plus a margin, is killed, and the
  parent reports it. The same holds whenever the signal comes, while the
  workers are still starting too: no worker outlives the parent. (The
  handlers, and how a fork holds signals back, are
  :mod:`framework.runtime.lifecycle`'s.)
- A parent that dies without stopping them (SIGKILL): every worker gets
  SIGTERM from the kernel (``PR_SET_PDEATHSIG``) and shuts down the same way.
- SIGHUP is passed on: each TLS worker reloads its certificate.
- A worker that dies while serving is logged and replaced. A worker that
  fails before it listens (a bad certificate, a port taken by another user)
  stops them all, with its error; so does a crash loop (more than
  ``MAX_RESTARTS`` replacements within ``RESTART_WINDOW`` seconds).

The kernel spreads new TCP connections, and UDP peers (by address and port),
across the workers; a connection or a UDP peer stays with one worker.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, ForkProcess
from typing import Any, Protocol

import attrs

from framework.core.endpoints import Endpoint, parse_url
from framework.core.errors import ConfigError, TransportError, WirekitError, WorkerError
from framework.core.limits import Limits
from framework.runtime import lifecycle
from framework.runtime import loop as loops
from framework.runtime.metrics_workers import WorkerMetrics, report_to_parent
from framework.runtime.tls import TlsOptions

__all__ = [
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "Servable",
    "WorkerError",
    "check_workers",
    "serve_workers",
]

log = logging.getLogger("wirekit.workers")

#: Replacements of dead workers tolerated within ``RESTART_WINDOW`` seconds;
#: past that, a worker is crashing in a loop and the server stops.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# Seconds a stopping worker gets beyond 2 x shutdown_timeout (handlers, then
# flushing) before it is killed: time to run its shutdown and exit.
_STOP_MARGIN = 5.0
# How often the supervisor looks at its flags between events.
_POLL = 0.1


class Servable(Protocol):
    """What a worker runs: an app's ``serve`` (:meth:`framework.runtime.app.App.serve`)."""

    def serve(
        self,
        url: str | Endpoint | Sequence[str | Endpoint],
        *,
        limits: Limits | None = ...,
        tls: TlsOptions | None = ...,
        reuse_port: bool = ...,
        ready: Callable[[Any], None] | None = ...,
    ) -> Coroutine[Any, Any, None]: ...


# The schemes whose port several processes can share (SO_REUSEPORT).
_SHAREABLE = ("tcp", "tls", "udp", "ws", "wss")


def check_workers(endpoint: Endpoint, workers: int) -> None:
    """Raise :class:`ConfigError` unless ``workers`` processes can share ``endpoint``."""
    if type(workers) is not int or workers < 1:
        raise ConfigError(
            f"workers must be a positive integer, got {workers!r}", option="workers", value=workers
        )
    if workers == 1:
        return
    if endpoint.scheme not in _SHAREABLE:
        raise ConfigError(
            f"workers: {endpoint.scheme}:// cannot be shared between processes; "
            "several workers need tcp://, tls://, udp://, ws:// or wss://",
            option="workers",
            value=workers,
        )
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(
            "workers: several processes on one port need Linux's SO_REUSEPORT "
            f"load balancing, which {sys.platform} does not have",
            option="workers",
            value=workers,
        )


def _placeholder(endpoint: Endpoint) -> socket.socket:
    """Bind (not listen on) the endpoint with SO_REUSEPORT: resolves port 0, fails early."""
    kind = socket.SOCK_DGRAM if endpoint.scheme == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(endpoint.host or None, endpoint.port, type=kind)
        family, _type, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise TransportError(f"cannot listen on {endpoint.url}: {exc}", peer=endpoint.url) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot listen on {endpoint.url}: {exc.strerror or exc}", peer=endpoint.url
        ) from exc
    return sock


class _Reports:
    """What workers tell the parent ("ready", "error"): one pipe, workers write, the parent reads.

    A pipe's reading end is a public ``multiprocessing`` connection, which
    :func:`multiprocessing.connection.wait` watches along with the workers'
    sentinels: the parent wakes for a report or a death, whichever comes first.
    """

    def __init__(self, context: ForkContext) -> None:
        self.reader, self._writer = context.Pipe(duplex=False)
        # Several workers write to the one pipe: the lock keeps each report whole.
        self._lock = context.Lock()

    def send(self, kind: str, index: int, text: str) -> None:
        """Report from a worker (``index``) to the parent."""
        with self._lock:
            self._writer.send((kind, index, text))

    def received(self) -> list[tuple[str, int, str]]:
        """Every report that has arrived, without waiting."""
        reports = []
        while self.reader.poll():
            reports.append(self.reader.recv())
        return reports


@attrs.define
class _Worker:
    index: int
    process: ForkProcess
    started: float
    ready: bool = False


class _Supervisor:
    def __init__(
        self,
        app: Servable,
        endpoints: list[Endpoint],
        workers: int,
        options: dict[str, Any],
        uvloop: bool | None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        # The worker's end of its metrics pipe, for the child about to be forked.
        self.metrics_pipe: Connection | None = None
        self.endpoints = endpoints
        self.count = workers
        self.options = options
        self.uvloop = uvloop
        self.context = multiprocessing.get_context("fork")
        self.reports = _Reports(self.context)
        self.workers: dict[int, _Worker] = {}
        self.placeholders: list[socket.socket] = []
        self.stopping = False
        self.restarts: collections.deque[float] = collections.deque()
        self.pid = os.getpid()

    # -- signals -----------------------------------------------------------------------

    def _on_stop(self, signum: int) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.stopping = True

    def _on_hup(self) -> None:
        self._signal_all(signal.SIGHUP)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers.values():
            pid = worker.process.pid
            if pid is not None and worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        parent_end = None
        if self.metrics is not None:
            parent_end, self.metrics_pipe = self.context.Pipe()
        process = self.context.Process(
            target=_worker_main,
            args=(self, index),
            name=f"wirekit-worker-{index}",
            daemon=False,
        )
        # A stop signal during the fork waits until the worker is on record
        # (so _stop_all reaches it) and the child has its own handlers.
        with lifecycle.signals_held():
            process.start()
            self.workers[index] = _Worker(index, process, time.monotonic())
        if self.metrics is not None and parent_end is not None and self.metrics_pipe is not None:
            self.metrics_pipe.close()  # the child's end is the child's
            self.metrics_pipe = None
            self.metrics.add(index, process, parent_end)
        log.debug("worker %d started, pid %s", index, process.pid)

    def run(self, announce: Callable[[str, list[int]], None] | None) -> None:
        with lifecycle.supervisor_signals(self._on_stop, self._on_hup):
            try:
                self._serve(announce)
            except BaseException:
                self._stop_all()
                raise
            finally:
                self._close_placeholders()
            # Every way out of _serve comes here, a stop signal in the middle
            # of the start-up included: no worker outlives this process.
            killed = self._stop_all()
        if killed:
            raise WorkerError(f"workers {killed} did not stop in time and were killed")

    def _close_placeholders(self) -> None:
        for placeholder in self.placeholders:
            placeholder.close()
        self.placeholders = []

    def _serve(self, announce: Callable[[str, list[int]], None] | None) -> None:
        """Start the workers, announce them, supervise; return once asked to stop."""
        resolved = []
        for endpoint in self.endpoints:
            placeholder = _placeholder(endpoint)
            self.placeholders.append(placeholder)
            resolved.append(attrs.evolve(endpoint, port=placeholder.getsockname()[1]))
        self.endpoints = resolved
        for index in range(self.count):
            if self._stopped():
                return
            self._spawn(index)
        self._wait_ready()
        # Every worker listens: the placeholders have done their job (and a
        # UDP placeholder would otherwise get its share of datagrams).
        self._close_placeholders()
        if self._stopped():
            return
        if announce is not None:
            pids = [w.process.pid or 0 for w in self.workers.values()]
            for endpoint in self.endpoints:
                announce(endpoint.url, pids)
        self._supervise()

    def _events(self) -> list[Any]:
        sentinels = [w.process.sentinel for w in self.workers.values()]
        watched: list[Connection | int] = [self.reports.reader, *sentinels]
        return wait(watched, timeout=_POLL)

    def _drain_messages(self) -> None:
        for kind, index, text in self.reports.received():
            worker = self.workers.get(index)
            if kind == "ready" and worker is not None:
                worker.ready = True
                log.info("worker %d (pid %s) serving %s", index, worker.process.pid, text)
            elif kind == "error":
                self.stopping = True
                raise WorkerError(f"worker {index} could not start: {text}")

    def _wait_ready(self) -> None:
        while not self.stopping and not all(w.ready for w in self.workers.values()):
            self._events()
            self._drain_messages()
            if self._stopped():
                return  # a worker a stop signal ended (Ctrl-C reaches them all) is no error
            for worker in self.workers.values():
                if not worker.ready and not worker.process.is_alive():
                    self._drain_messages()  # its error, if it managed to send one
                    raise WorkerError(
                        f"worker {worker.index} exited with status "
                        f"{worker.process.exitcode} before it was serving"
                    )

    def _stopped(self) -> bool:
        # Set by a signal handler between two checks: read it through a call.
        return self.stopping

    def _supervise(self) -> None:
        while not self.stopping:
            self._events()
            self._drain_messages()
            if self._stopped():
                return
            for index, worker in list(self.workers.items()):
                if worker.process.is_alive():
                    continue
                worker.process.join()
                self._replace(index, worker)

    def _replace(self, index: int, worker: _Worker) -> None:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        log.error(
            "worker %d (pid %s) died with status %s after %.1f s; starting another",
            index,
            worker.process.pid,
            worker.process.exitcode,
            now - worker.started,
        )
        if len(self.restarts) >= MAX_RESTARTS:
            self.stopping = True
            raise WorkerError(
                f"workers died {len(self.restarts) + 1} times within {RESTART_WINDOW:.0f} s; "
                f"last: worker {index}, status {worker.process.exitcode}"
            )
        self.restarts.append(now)
        self._spawn(index)

    def _stop_all(self) -> list[int]:
        """SIGTERM every worker, wait for them; return the indexes that had to be killed."""
        self._signal_all(signal.SIGTERM)
        limits: Limits = self.options.get("limits") or Limits()
        deadline = time.monotonic() + 2 * limits.shutdown_timeout + _STOP_MARGIN
        killed = []
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                killed.append(worker.index)
                log.error(
                    "worker %d (pid %s) did not stop; killing it", worker.index, worker.process.pid
                )
                worker.process.kill()
                worker.process.join()
        self.workers.clear()
        return killed


def _worker_main(supervisor: _Supervisor, index: int) -> None:
    """The body of a worker process (forked: it shares the parent's app)."""
    try:
        _worker_serve(supervisor, index)
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the terminal's group, this one
        # perhaps before App.serve has its handlers: a plain exit, no traceback.
        sys.exit(130)


def _worker_serve(supervisor: _Supervisor, index: int) -> None:
    # The parent's handlers came with the fork; this process has its own
    # shutdown, installed by App.serve. Until then a signal ends it plainly.
    lifecycle.worker_signals()
    _stop_with_parent(supervisor.pid)
    for placeholder in supervisor.placeholders:
        placeholder.close()  # the parent's copy is the one that matters
    reports = supervisor.reports

    def ready(server: Any) -> None:
        reports.send("ready", index, server.url)
        user_ready = supervisor.options.get("ready")
        if user_ready is not None:
            user_ready(server)

    options = {key: value for key, value in supervisor.options.items() if key != "ready"}
    serve = supervisor.app.serve(supervisor.endpoints, reuse_port=True, ready=ready, **options)
    pipe = supervisor.metrics_pipe
    if supervisor.metrics is not None and pipe is not None:
        supervisor.metrics.forget_in_child()
        serve = report_to_parent(serve, pipe)
    try:
        loops.run(serve, uvloop=supervisor.uvloop)
    except (WirekitError, OSError) as exc:
        reports.send("error", index, str(exc))
        sys.exit(1)


# prctl(2): the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this worker (a graceful stop) when its parent dies, even of SIGKILL.

    Without it a worker whose parent was killed outright serves on, holding
    the port, with nobody to stop or replace it.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "worker: cannot ask to stop with the parent: %s", os.strerror(ctypes.get_errno())
        )
    if os.getppid() != parent:  # it died before the request: nobody signals us now
        os.kill(os.getpid(), signal.SIGTERM)


def serve_workers(
    app: Servable,
    url: str | Endpoint | Sequence[str | Endpoint],
    *,
    workers: int,
    limits: Limits | None = None,
    tls: TlsOptions | None = None,
    uvloop: bool | None = None,
    ready: Callable[[Any], None] | None = None,
    announce: Callable[[str, list[int]], None] | None = None,
    metrics: WorkerMetrics | None = None,
    **serve_options: Any,
) -> None:
    """Serve ``app`` on ``url`` (or every URL of a list) from ``workers`` processes.

    Blocks until SIGINT or SIGTERM. Each worker serves every URL, with one
    app state per worker. ``ready(server)`` runs in each worker for each
    server once it listens; ``announce(url, pids)`` runs in this process for
    each URL once they all do (port 0 resolved). Raises
    :class:`WorkerError` when a worker cannot start, when workers crash in a
    loop, or when one had to be killed at shutdown. ``metrics``: the parent's
    sum over the workers (see :mod:`framework.runtime.metrics_workers`), which
    this fills as workers start.
    """
    urls = [url] if isinstance(url, str | Endpoint) else list(url)
    endpoints = [parse_url(each) if isinstance(each, str) else each for each in urls]
    if not endpoints:
        raise ConfigError("no endpoint URL to serve", option="url")
    for endpoint in endpoints:
        check_workers(endpoint, workers)
        if endpoint.scheme in ("tls", "wss") and tls is None:
            raise ConfigError(
                f"{endpoint.scheme}:// needs a certificate: set certfile and keyfile", option="tls"
            )
    if tls is not None and any(e.scheme in ("tls", "wss") for e in endpoints):
        tls.server_context()  # a bad certificate is one error here, not one per worker
    options: dict[str, Any] = {"limits": limits, "tls": tls, "ready": ready, **serve_options}
    try:
        _Supervisor(app, endpoints, workers, options, uvloop, metrics).run(announce)
    finally:
        if metrics is not None:
            metrics.close()
