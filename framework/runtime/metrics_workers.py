"""Metrics that add up across ``--workers``: the parent asks each worker, and keeps what died.

A scrape of a ``SO_REUSEPORT`` port would reach one random worker, so the
parent serves the one endpoint. Each worker has a pipe to the parent; on
every scrape the parent asks each live worker for a snapshot of its own
registry (the worker answers from its event loop, so the snapshot is
consistent) and adds them up. Exact, and nothing is counted per frame.

A worker that dies keeps counting: the parent folds the last snapshot it had
from it (a worker that shuts down sends a final one) into the totals of the
dead, its gauges (open connections) leave the sum, and its replacement
starts from zero, so a counter neither drops nor doubles. A worker killed
outright loses only what it counted since the parent last heard from it: the
parent asks every :data:`REFRESH` seconds between scrapes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any

import attrs

from framework.runtime.metrics import REGISTRY, Snapshot
from framework.runtime.metrics_http import MetricsEndpoint, serve_metrics

__all__ = ["ANSWER_TIMEOUT", "REFRESH", "WorkerMetrics", "open_metrics", "report_to_parent"]

log = logging.getLogger("wirekit.workers")

#: Seconds a worker gets to answer; one that does not fails ``/healthz``.
ANSWER_TIMEOUT = 1.0
#: Seconds between two refreshes when nobody scrapes (bounds what a killed worker loses).
REFRESH = 1.0


@attrs.define(eq=False)
class _Channel:
    index: int
    process: Any  # a multiprocessing process: is_alive(), pid
    conn: Connection
    last: Snapshot | None = None
    #: The request not answered yet: a stopped worker is not asked again, so
    #: requests cannot fill its pipe and block the parent.
    pending: int | None = None


class WorkerMetrics:
    """The parent's view: the sum over its ``count`` workers, live and dead."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._channels: list[_Channel] = []
        self._new: list[_Channel] = []
        self._dead = Snapshot()
        self._asked = 0
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def add(self, index: int, process: Any, conn: Connection) -> None:
        """A worker was started with ``conn`` as the parent's end of its pipe."""
        self._new.append(_Channel(index, process, conn))
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh, name="wirekit-metrics-refresh", daemon=True
            )
            self._refresher.start()

    def forget_in_child(self) -> None:
        """In a freshly forked worker: close the copies of the parent's pipe ends."""
        for channel in [*self._channels, *self._new]:
            channel.conn.close()
        self._channels, self._new = [], []

    def close(self) -> None:
        """Stop refreshing (the workers have stopped)."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                self.snapshot()
            except Exception:  # pragma: no cover - a bug must not end the refreshes
                log.exception("metrics: refreshing the workers' figures failed")

    def snapshot(self) -> Snapshot:
        """Every worker's figures now, added up, with those of the workers that died."""
        with self._lock:
            while self._new:
                self._channels.append(self._new.pop(0))
            self._retire_dead()
            answered = self._ask()
            total = Snapshot()
            total.add(self._dead, live=False)
            for channel in self._channels:
                pid = channel.process.pid
                if channel.last is None:
                    total.problems.append(f"worker {channel.index} (pid {pid}) is not serving yet")
                elif channel in answered:
                    total.add(channel.last)
                else:
                    total.add(channel.last, live=False)
                    total.problems.append(
                        f"worker {channel.index} (pid {pid}) did not answer "
                        f"within {ANSWER_TIMEOUT:g} s"
                    )
            if len(self._channels) < self.count:
                total.problems.insert(
                    0, f"{len(self._channels)} of {self.count} workers running (restarting)"
                )
            return total

    def _retire_dead(self) -> None:
        for channel in [c for c in self._channels if not c.process.is_alive()]:
            while self._read(channel, deadline=0.0):
                pass  # every answer left in the pipe, its final snapshot last
            if channel.last is not None:
                self._dead.add(channel.last, live=False)
            channel.conn.close()
            self._channels.remove(channel)

    def _ask(self) -> set[_Channel]:
        self._asked += 1
        seq = self._asked
        asked = []
        for channel in self._channels:
            if channel.pending is None:
                try:
                    channel.conn.send(("snapshot", seq))
                except OSError:
                    continue
                channel.pending = seq
            asked.append(channel)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        return {channel for channel in asked if self._read(channel, deadline)}

    def _read(self, channel: _Channel, deadline: float) -> bool:
        """Read answers until the one to the pending request; whether it came."""
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                if not channel.conn.poll(remaining):
                    return False
                kind, number, snap = channel.conn.recv()
            except (EOFError, OSError):
                return False
            channel.last = snap  # any answer is newer than the one before
            if kind == "final" or number == channel.pending:
                channel.pending = None
                return True


async def report_to_parent(serve: Coroutine[Any, Any, None], conn: Connection) -> None:
    """Run ``serve`` in a worker, answering the parent's requests for snapshots on ``conn``.

    The answers come from the event loop, between two callbacks: each
    snapshot is consistent. Once ``serve`` returns (the server has closed),
    a final snapshot goes to the parent.
    """
    loop = asyncio.get_running_loop()
    fd = conn.fileno()

    def answer() -> None:
        try:
            while conn.poll():
                _kind, seq = conn.recv()
                conn.send(("snapshot", seq, REGISTRY.snapshot()))
        except (EOFError, OSError):
            loop.remove_reader(fd)  # the parent is gone

    loop.add_reader(fd, answer)
    try:
        await serve
    finally:
        loop.remove_reader(fd)
        final = REGISTRY.snapshot()
        # A daemon thread, bounded: a parent that no longer reads must not
        # keep this worker from exiting.
        sender = threading.Thread(target=_send_final, args=(conn, final), daemon=True)
        sender.start()
        sender.join(ANSWER_TIMEOUT)


def _send_final(conn: Connection, final: Snapshot) -> None:
    with contextlib.suppress(OSError):
        conn.send(("final", 0, final))


def open_metrics(
    address: str | None, workers: int
) -> tuple[MetricsEndpoint | None, WorkerMetrics | None]:
    """The metrics endpoint on ``address`` (``None``: none) and, with workers, their reporter.

    Opened before serving: the endpoint turns handler timing on for the
    servers to come, and with ``workers`` > 1 it serves the sum the
    reporter collects from them.
    """
    if address is None:
        return None, None
    reporter = WorkerMetrics(workers) if workers != 1 else None
    endpoint = serve_metrics(address, source=reporter.snapshot if reporter is not None else None)
    return endpoint, reporter
