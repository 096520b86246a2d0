"""Signals: what stop and reload mean for each kind of process that serves.

One place installs and restores the handlers, for the three kinds of
process wirekit runs:

- **One process** (``App.serve``, ``wirekit serve``): :func:`serve_until_stopped`
  puts SIGINT and SIGTERM (graceful stop) and SIGHUP (reload a ``tls://``
  certificate) on the event loop, runs the server until a stop signal, shuts it
  down and takes the handlers off again. They stay in during the shutdown,
  so a second signal is logged instead of killing the process mid-flush.
- **The workers' parent** (:mod:`framework.runtime.workers`) runs no event
  loop: :func:`supervisor_signals` installs plain :func:`signal.signal`
  handlers for the time it supervises, and :func:`signals_held` blocks the
  signals while it forks, so one that comes during a fork waits until the
  parent knows the new worker (and can stop it) and the child has its own
  handlers (and cannot swallow it with a copy of the parent's).
- **A worker** starts with :func:`worker_signals`: the parent's handlers came
  with the fork and mean nothing there, so the defaults come back (a stop
  signal ends a worker that does not serve yet) before the held signals are
  let through; ``App.serve`` then installs its own.

Closing each connection without losing replies (the lingering close) is a
server's business, not a signal's: it stays in :mod:`framework.runtime.shutdown`,
which :class:`~framework.runtime.server.Server` uses whoever asked it to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence

from framework.core.errors import WirekitError
from framework.runtime.loop import loop_name
from framework.runtime.server import Server

__all__ = [
    "STOP_SIGNALS",
    "serve_until_stopped",
    "signals_held",
    "supervisor_signals",
    "worker_signals",
]

log = logging.getLogger("wirekit.app")

#: The signals that ask a server to shut down gracefully.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
# SIGHUP reloads a TLS certificate; platforms without it have no reload signal.
_RELOAD: tuple[signal.Signals, ...] = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()


async def serve_until_stopped(
    server: Server | Sequence[Server], ready: Callable[[Server], None] | None
) -> None:
    """Run ``server`` (or several) until SIGINT or SIGTERM (or cancellation), then close them.

    ``ready(server)`` runs for each server once the handlers are in. SIGHUP
    reloads the certificate of each TLS (``tls://``, ``wss://``) server.
    Off the main thread, or on a platform without signals, only
    cancellation stops it. Several servers shut down together, each as
    :meth:`Server.close` says.
    """
    servers = [server] if isinstance(server, Server) else list(server)
    urls = ", ".join(each.url for each in servers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("serving %s on %s (pid %d)", urls, loop_name(loop), os.getpid())

    def on_stop(signum: int) -> None:
        if stop.is_set():
            log.info("%s: already shutting down", signal.Signals(signum).name)
        stop.set()

    def on_reload() -> None:
        secure = [each for each in servers if each.endpoint.scheme in ("tls", "wss")]
        if not secure:
            log.info("SIGHUP: %s has no certificate to reload", urls)
        for each in secure:
            try:
                each.reload_tls()
            except WirekitError as exc:
                log.error("SIGHUP: %s: keeping the old TLS certificate: %s", each.url, exc)

    installed: list[signal.Signals] = []
    # Handlers go in before `ready` announces the server: whoever reacts to
    # the announcement with a signal must get a graceful shutdown.
    for sig in (*STOP_SIGNALS, *_RELOAD):
        try:
            if sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, on_stop, sig)
            else:
                loop.add_signal_handler(sig, on_reload)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or no signals on this platform
        installed.append(sig)
    try:
        if ready is not None:
            for each in servers:
                ready(each)
        await stop.wait()
        log.info("shutting down %s", urls)
    finally:
        try:
            await asyncio.gather(*(each.close() for each in servers))
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


@contextlib.contextmanager
def supervisor_signals(
    on_stop: Callable[[int], None], on_reload: Callable[[], None]
) -> Iterator[None]:
    """Route stop signals to ``on_stop(signum)`` and SIGHUP to ``on_reload()`` while inside.

    For a process without an event loop (the workers' parent): the handlers
    run between two Python bytecodes, so they should only set flags or send
    signals. The previous handlers come back on exit.
    """
    previous: dict[signal.Signals, signal.Handlers | Callable[..., object] | int | None] = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, _frame: on_stop(signum))
        for sig in _RELOAD:
            previous[sig] = signal.signal(sig, lambda _signum, _frame: on_reload())
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop and reload signals back while inside; they arrive on exit.

    Around a fork: the child inherits the mask, so a signal sent to it before
    :func:`worker_signals` waits instead of reaching the parent's handlers'
    copy, and one sent to the parent reaches its handler only once the new
    worker is on record.
    """
    held = {*STOP_SIGNALS, *_RELOAD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_signals() -> None:
    """Give a freshly forked worker the default signal behaviour, then let signals in.

    Until ``App.serve`` installs its graceful handlers, SIGTERM ends the
    worker, SIGINT raises ``KeyboardInterrupt`` and SIGHUP is ignored (there
    is no certificate loaded yet to reload: the worker reads the files when
    it starts serving).
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sig in _RELOAD:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*STOP_SIGNALS, *_RELOAD})
