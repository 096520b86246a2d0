"""What a process counts for Prometheus, read at scrape time; no ``prometheus_client`` here.

wirekit already counts per connection (:class:`~framework.core.connection.ConnectionStats`),
per UDP socket (:class:`~framework.core.datagrams.DatagramStats`) and per server
(refusals, TLS handshake failures). Nothing on the per-frame path calls a metrics
library: a scrape adds up the live connections of every registered listener and
the totals folded in when a connection closed (:class:`ListenerMetrics`). The one
thing timed is the handlers' work (:class:`HandlerTimes`), per read, into a
local bucket array, and only once metrics are :func:`enabled <enable>`.

Every :class:`~framework.runtime.server.Server` registers here when it starts
listening and leaves when it has closed (its counters stay, folded into the
process's totals: a counter never goes back). A backplane registers through
:meth:`Registry.add_backplane`. :meth:`Registry.snapshot` reads it all under one
lock that the loop takes only when a connection or listener comes or goes, so a
scrape from any thread sees each connection once: live, or folded in.

A :class:`Snapshot` is plain data (it crosses the workers' pipe); snapshots add
up (:meth:`Snapshot.add`). :mod:`framework.runtime.metrics_http` turns one into
the Prometheus text format and serves it with ``/healthz``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import attrs

from framework.core.connection import ConnectionStats
from framework.core.datagrams import DatagramStats

if TYPE_CHECKING:
    from framework.core.messages import MessageRegistry
    from framework.runtime.backplane.base import Backplane

__all__ = [
    "BUCKETS",
    "METRICS",
    "REGISTRY",
    "HandlerTimes",
    "Listener",
    "ListenerMetrics",
    "Registry",
    "Snapshot",
    "enable",
    "enabled",
]

#: Every metric wirekit exports: name -> (type, labels, meaning). The docs' table
#: and a test are pinned to it: renaming one is a visible change.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "wirekit_listener_up": ("gauge", ("transport", "listener"), "1 while the listener serves"),
    "wirekit_connections_active": (
        "gauge",
        ("transport", "listener"),
        "open connections (UDP: peer addresses known)",
    ),
    "wirekit_connections_total": ("counter", ("transport", "listener"), "connections accepted"),
    "wirekit_connections_rejected_total": (
        "counter",
        ("transport", "listener", "reason"),
        "connections refused: max_connections, max_connections_per_peer, shutting_down",
    ),
    "wirekit_frames_received_total": ("counter", ("transport", "listener"), "frames received"),
    "wirekit_frames_sent_total": ("counter", ("transport", "listener"), "frames sent"),
    "wirekit_bytes_received_total": ("counter", ("transport", "listener"), "bytes received"),
    "wirekit_bytes_sent_total": ("counter", ("transport", "listener"), "bytes sent"),
    "wirekit_decode_errors_total": (
        "counter",
        ("transport", "listener"),
        "frames that failed to frame or decode, or that no handler takes",
    ),
    "wirekit_handler_errors_total": (
        "counter",
        ("transport", "listener", "message_type"),
        "handlers that raised",
    ),
    "wirekit_handler_duration_seconds": (
        "histogram",
        ("transport", "listener"),
        "time in handlers per value",
    ),
    "wirekit_datagrams_dropped_total": (
        "counter",
        ("transport", "listener", "reason"),
        "UDP datagrams dropped (oversize, authentication, replay, rate, capacity, "
        "undecodable) or not sent (amplification, send-queue)",
    ),
    "wirekit_tls_handshake_failures_total": (
        "counter",
        ("transport", "listener"),
        "TLS handshakes that failed or never started",
    ),
    "wirekit_backplane_up": ("gauge", ("backplane",), "1 while the broker connection is up"),
    "wirekit_backplane_published_total": ("counter", ("backplane",), "payloads published"),
    "wirekit_backplane_received_total": ("counter", ("backplane",), "payloads received"),
    "wirekit_backplane_dropped_total": (
        "counter",
        ("backplane",),
        "payloads dropped: broker unreachable or queue full",
    ),
    "wirekit_backplane_reconnects_total": ("counter", ("backplane",), "broker reconnections"),
}

#: Handler duration buckets (seconds): handlers take microseconds to seconds.
BUCKETS: tuple[float, ...] = (
    1e-05,
    2.5e-05,
    5e-05,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: DatagramStats field -> the ``reason`` label.
_DROP_REASONS = {
    "dropped_oversize": "oversize",
    "dropped_unauthenticated": "authentication",
    "dropped_replayed": "replay",
    "dropped_rate_limited": "rate",
    "dropped_no_capacity": "capacity",
    "dropped_undecodable": "undecodable",
    "dropped_amplification": "amplification",
    "dropped_send_queue": "send-queue",
}
#: Why a server refused a connection (``reason`` label).
REJECT_REASONS = ("max_connections", "max_connections_per_peer", "shutting_down")

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]


@attrs.define
class Snapshot:
    """Metric samples at one moment: plain data that adds up across listeners and processes.

    ``histograms`` hold per-bucket counts (not cumulative; one more than
    :data:`BUCKETS`, the last for +Inf) and the sum. ``problems`` are the
    health check's one-line reasons; ``listeners`` how many listeners serve.
    """

    counters: dict[Key, float] = attrs.Factory(dict)
    gauges: dict[Key, float] = attrs.Factory(dict)
    histograms: dict[Key, tuple[list[int], float]] = attrs.Factory(dict)
    problems: list[str] = attrs.Factory(list)
    listeners: int = 0

    def count(self, name: str, labels: Labels, value: float) -> None:
        """Add ``value`` to a counter."""
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + value

    def add(self, other: Snapshot, *, live: bool = True) -> None:
        """Add ``other`` in; ``live=False`` takes only what a counter keeps (no gauges, health)."""
        for key, value in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + value
        for key, (buckets, total) in other.histograms.items():
            mine = self.histograms.get(key)
            if mine is None:
                self.histograms[key] = (list(buckets), total)
            else:
                self.histograms[key] = (
                    [a + b for a, b in zip(mine[0], buckets, strict=True)],
                    mine[1] + total,
                )
        if live:
            for key, value in other.gauges.items():
                self.gauges[key] = self.gauges.get(key, 0) + value
            self.problems += other.problems
            self.listeners += other.listeners

    @property
    def healthy(self) -> bool:
        """Whether every listener serves (and there is one), and every backplane is connected."""
        return self.listeners > 0 and not self.problems

    def health_reason(self) -> str:
        """One line: ``ok``, or the first problem (and how many more)."""
        if self.listeners == 0 and not self.problems:
            return "no listener is serving"
        if not self.problems:
            return "ok"
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more)" if more else "")


class HandlerTimes:
    """A histogram of handler durations, kept as a bucket array the scrape reads.

    Plain handlers are timed per read: a read's dispatch counts as its values'
    calls, each of the read's mean duration (so one value per read, as in
    request/response traffic, is timed exactly). An async handler that
    suspends is timed on its own, from its start to its end.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, calls: int = 1) -> None:
        """Count ``calls`` handler calls that took ``seconds`` together."""
        if calls <= 0:
            return
        self.counts[bisect.bisect_left(BUCKETS, seconds / calls)] += calls
        self.total += seconds


class ListenerMetrics:
    """What one listener counts beyond its connections' stats (see :class:`Registry`)."""

    def __init__(self, listener: str, messages: MessageRegistry | None = None) -> None:
        self.listener = listener
        self.transport = listener.partition("://")[0]
        self.labels: Labels = (("listener", listener), ("transport", self.transport))
        self.accepted = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.decode_errors = 0
        self.handler_errors: dict[str, int] = {}
        #: Stats of the connections that closed, folded in (under the registry's lock).
        self.closed = ConnectionStats()
        #: None until metrics are enabled: then handlers are timed.
        self.times: HandlerTimes | None = HandlerTimes() if _state.enabled else None
        self._messages = messages

    def rename(self, listener: str) -> None:
        """Name the listener ``listener`` (its URL as configured, port 0 resolved once bound)."""
        self.listener = listener
        self.transport = listener.partition("://")[0]
        self.labels = (("listener", listener), ("transport", self.transport))

    def handler_failed(self, subject: Any) -> None:
        """Count a handler that raised on ``subject`` (labelled by its registered type)."""
        kind = self.message_type(type(subject))
        self.handler_errors[kind] = self.handler_errors.get(kind, 0) + 1

    def message_type(self, kind: type) -> str:
        """The registered type name of ``kind``, or ``""``: never anything a peer chooses."""
        messages = self._messages
        if messages is not None and kind in messages:
            return messages.type_name(kind)
        return ""

    def fold(self, stats: ConnectionStats) -> None:
        """Add a closed connection's stats (the caller holds the registry's lock)."""
        closed = self.closed
        closed.frames_in += stats.frames_in
        closed.frames_out += stats.frames_out
        closed.bytes_in += stats.bytes_in
        closed.bytes_out += stats.bytes_out


class _State:
    enabled = False


_state = _State()


def enable(on: bool = True) -> None:
    """Turn handler timing on (or off) for listeners started from now on.

    A metrics endpoint or collector turns it on: until then nothing is timed.
    """
    _state.enabled = on


def enabled() -> bool:
    """Whether handler timing is on."""
    return _state.enabled


class Listener(Protocol):
    """What the registry reads of a listener (a :class:`~framework.runtime.server.Server`)."""

    def listener_sample(self, snap: Snapshot) -> None:
        """Add the listener's samples, and its health, to ``snap``."""


class Registry:
    """The listeners and backplanes of this process, read together by :meth:`snapshot`.

    ``lock`` is taken by the event loop whenever a connection, a UDP peer or
    a listener comes or goes, and by :meth:`snapshot`: never per frame.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._backplanes: dict[int, Backplane] = {}
        self._retired = Snapshot()

    def add_listener(self, server: Listener) -> None:
        """A server listens: count it (``server.listener_sample(snapshot)`` is read at scrape)."""
        with self.lock:
            self._listeners[id(server)] = server

    def remove_listener(self, server: Listener) -> None:
        """A server has closed: keep its counters, forget its gauges."""
        with self.lock:
            if self._listeners.pop(id(server), None) is None:
                return
            final = Snapshot()
            server.listener_sample(final)
            self._retired.add(final, live=False)

    def add_backplane(self, backplane: Backplane) -> None:
        """Report ``backplane``'s figures, and fail health while it is disconnected."""
        with self.lock:
            self._backplanes[id(backplane)] = backplane

    def remove_backplane(self, backplane: Backplane) -> None:
        """Stop reporting ``backplane`` (its counters stay)."""
        with self.lock:
            if self._backplanes.pop(id(backplane), None) is None:
                return
            final = Snapshot()
            _backplane_sample(backplane, final)
            self._retired.add(final, live=False)

    @property
    def listeners(self) -> list[Listener]:
        """The servers registered now."""
        with self.lock:
            return list(self._listeners.values())

    def snapshot(self) -> Snapshot:
        """Every sample of this process now (safe from any thread)."""
        snap = Snapshot()
        with self.lock:
            snap.add(self._retired)
            for server in self._listeners.values():
                server.listener_sample(snap)
            for backplane in self._backplanes.values():
                _backplane_sample(backplane, snap)
        return snap


def _backplane_sample(backplane: Backplane, snap: Snapshot) -> None:
    name = _safe_url(backplane.url)
    labels: Labels = (("backplane", name),)
    stats = backplane.stats
    up = backplane.connected
    snap.gauges["wirekit_backplane_up", labels] = 1.0 if up else 0.0
    snap.count("wirekit_backplane_published_total", labels, stats.published)
    snap.count("wirekit_backplane_received_total", labels, stats.received)
    snap.count("wirekit_backplane_dropped_total", labels, stats.dropped)
    snap.count("wirekit_backplane_reconnects_total", labels, stats.reconnects)
    if not up:
        snap.problems.append(f"backplane {name} is disconnected")


def _safe_url(url: str) -> str:
    """A URL without its user name and password (a label must not carry a secret)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return parts._replace(netloc=netloc).geturl()


def connections_sample(
    metrics: ListenerMetrics, live: Iterable[ConnectionStats], active: int, snap: Snapshot
) -> None:
    """Add one listener's connection figures: its live connections plus the closed ones."""
    labels = metrics.labels
    closed = metrics.closed
    frames_in, frames_out = closed.frames_in, closed.frames_out
    bytes_in, bytes_out = closed.bytes_in, closed.bytes_out
    for stats in live:
        frames_in += stats.frames_in
        frames_out += stats.frames_out
        bytes_in += stats.bytes_in
        bytes_out += stats.bytes_out
    snap.gauges["wirekit_connections_active", labels] = active
    snap.count("wirekit_connections_total", labels, metrics.accepted)
    for reason, value in metrics.rejected.items():
        snap.count("wirekit_connections_rejected_total", (*labels, ("reason", reason)), value)
    snap.count("wirekit_frames_received_total", labels, frames_in)
    snap.count("wirekit_frames_sent_total", labels, frames_out)
    snap.count("wirekit_bytes_received_total", labels, bytes_in)
    snap.count("wirekit_bytes_sent_total", labels, bytes_out)
    snap.count("wirekit_decode_errors_total", labels, metrics.decode_errors)
    for kind, value in dict(metrics.handler_errors).items():
        snap.count("wirekit_handler_errors_total", (*labels, ("message_type", kind)), value)
    times = metrics.times
    if times is not None:
        snap.histograms["wirekit_handler_duration_seconds", labels] = (
            list(times.counts),
            times.total,
        )


def datagram_sample(metrics: ListenerMetrics, stats: DatagramStats, snap: Snapshot) -> None:
    """Add a UDP socket's drops, by reason."""
    for field, reason in _DROP_REASONS.items():
        labels = (*metrics.labels, ("reason", reason))
        snap.count("wirekit_datagrams_dropped_total", labels, getattr(stats, field))


#: The process's registry: every Server registers here.
REGISTRY = Registry()
