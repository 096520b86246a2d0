"""Seeded faults for the in-memory transports: the network misbehaving, on demand.

``inject(url, *faults)`` makes every connection to ``memory://NAME`` (with
:class:`StreamFaults`) or every datagram to and from ``memory+udp://NAME``
(with :class:`DatagramFaults`) suffer the faults described, while the
``with`` block lasts; servers and clients use the URL as usual and cannot
tell. Every random choice comes from ``random.Random`` seeded from the
fault's ``seed``, so with the same seed (and the deterministic scheduling of
a :class:`~framework.testing.clock.VirtualClockLoop`) a failure replays
exactly. An exception that leaves the ``with`` block carries a note naming
the seeds; without a ``seed`` one is drawn, or read from the
``WIREKIT_FAULT_SEED`` environment variable.

Delays (``latency``, ``bandwidth``, stalls, ``delay``, ``jitter``) are in
``loop.time()`` seconds: with the virtual clock they cost no real time.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import os
import random
from types import TracebackType
from typing import Any, Literal

import attrs

from framework.core.endpoints import parse_url
from framework.core.errors import ConfigError
from framework.runtime.transports import memory
from framework.runtime.transports.memory import (
    Link,
    MemoryDatagramTransport,
    MemoryTransport,
    Route,
)

__all__ = ["DatagramFaults", "FaultStats", "Injection", "StreamFaults", "inject"]

Direction = Literal["both", "to_server", "to_client"]
_DIRECTIONS = ("both", "to_server", "to_client")
#: Set it to replay a run whose faults had no explicit seed.
SEED_VARIABLE = "WIREKIT_FAULT_SEED"


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}, got {value!r}", option=name, value=value)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and value == value  # not NaN


def _non_negative(_instance: Any, attribute: Any, value: Any) -> None:
    _check(attribute.name, value, _number(value) and value >= 0, "a number >= 0")


def _probability(_instance: Any, attribute: Any, value: Any) -> None:
    _check(attribute.name, value, _number(value) and 0 <= value <= 1, "a probability in [0, 1]")


def _count_or_none(_instance: Any, attribute: Any, value: Any) -> None:
    ok = value is None or (type(value) is int and value >= attribute.metadata.get("least", 0))
    least = attribute.metadata.get("least", 0)
    _check(attribute.name, value, ok, f"None or an integer >= {least}")


def _positive_or_none(_instance: Any, attribute: Any, value: Any) -> None:
    _check(attribute.name, value, value is None or (_number(value) and value > 0), "None or > 0")


def _direction(_instance: Any, attribute: Any, value: Any) -> None:
    _check(attribute.name, value, value in _DIRECTIONS, f"one of {', '.join(_DIRECTIONS)}")


def _seed(_instance: Any, attribute: Any, value: Any) -> None:
    _check(attribute.name, value, value is None or type(value) is int, "None or an integer")


@attrs.frozen(kw_only=True)
class StreamFaults:
    """What goes wrong on ``memory://`` connections, in one direction or both.

    Each write is cut into pieces of 1 to ``segment`` bytes (``1``: byte by
    byte), each delivered as its own read. A piece spends ``latency``
    seconds in flight; at ``bandwidth`` bytes per second the link sends one
    piece after another, so writes back up in the writer's buffer (partial
    writes, ``pause_writing``). Before a piece, with probability ``stalls``,
    delivery stops for ``stall_for`` seconds. After ``eof_after`` bytes the
    receiver sees the end of the stream (the sender's later bytes are lost);
    after ``reset_after`` bytes the connection is reset: both ends lose it
    with ``ConnectionResetError``. Byte counts are per direction and per
    connection. Order is never changed: it is a stream.
    """

    seed: int | None = attrs.field(default=None, validator=_seed)
    direction: Direction = attrs.field(default="both", validator=_direction)
    segment: int | None = attrs.field(default=None, validator=_count_or_none, metadata={"least": 1})
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    bandwidth: float | None = attrs.field(default=None, validator=_positive_or_none)
    stalls: float = attrs.field(default=0.0, validator=_probability)
    stall_for: float = attrs.field(default=5.0, validator=_non_negative)
    eof_after: int | None = attrs.field(default=None, validator=_count_or_none)
    reset_after: int | None = attrs.field(default=None, validator=_count_or_none)


@attrs.frozen(kw_only=True)
class DatagramFaults:
    """What goes wrong on ``memory+udp://`` routes, in one direction or both.

    For each datagram, in this order: it is lost with probability ``drop``;
    cut to a random shorter length with probability ``truncate``; sent
    twice with probability ``duplicate``. Each copy arrives after ``delay``
    plus a random ``0..jitter`` seconds (so jitter reorders too), and with
    probability ``reorder`` it is held back until the next datagram on the
    same route has gone ahead of it (or ``reorder_wait`` seconds have
    passed).
    """

    seed: int | None = attrs.field(default=None, validator=_seed)
    direction: Direction = attrs.field(default="both", validator=_direction)
    drop: float = attrs.field(default=0.0, validator=_probability)
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    reorder: float = attrs.field(default=0.0, validator=_probability)
    truncate: float = attrs.field(default=0.0, validator=_probability)
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.0, validator=_non_negative)
    reorder_wait: float = attrs.field(default=1.0, validator=_non_negative)


@attrs.define
class FaultStats:
    """What the injected faults did, in one direction (counters of both kinds).

    Streams: ``connections``, ``bytes`` (handed on), ``pieces``, ``stalls``,
    ``eofs``, ``resets``, ``discarded`` (bytes lost to an EOF or a reset).
    Datagrams: ``sent``, ``delivered`` (copies that reached a bound socket),
    ``dropped``, ``duplicated``, ``truncated``, ``reordered`` (arrived after
    a datagram sent later on the same route).
    """

    connections: int = 0
    bytes: int = 0
    pieces: int = 0
    stalls: int = 0
    eofs: int = 0
    resets: int = 0
    discarded: int = 0
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    truncated: int = 0
    reordered: int = 0

    def __add__(self, other: FaultStats) -> FaultStats:
        return FaultStats(
            **{
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in attrs.fields(FaultStats)
            }
        )


# -- streams ------------------------------------------------------------------------------


class _FaultyLink(Link):
    """One direction of one connection, through :class:`StreamFaults`."""

    def __init__(
        self,
        writer: MemoryTransport,
        receiver: MemoryTransport,
        faults: StreamFaults,
        rng: random.Random,
        stats: FaultStats,
    ) -> None:
        super().__init__(writer, receiver)
        self._faults = faults
        self._rng = rng
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        # (when it arrives, the piece or None for the end of stream), in order.
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._free_at = 0.0  # when the link has finished sending what it holds
        self._passed = 0
        self._cut = False

    def send(self, data: bytes) -> None:
        if self._cut:
            self._stats.discarded += len(data)
            return
        faults, rng = self._faults, self._rng
        size = faults.segment
        now = self._loop.time()
        start = 0
        while start < len(data):
            end = len(data) if size is None else start + rng.randint(1, size)
            piece = data[start:end]
            start = end
            begin = max(now, self._free_at)
            if faults.stalls and rng.random() < faults.stalls:
                begin += faults.stall_for
                self._stats.stalls += 1
            self._free_at = begin + (len(piece) / faults.bandwidth if faults.bandwidth else 0.0)
            self._queue.append((self._free_at + faults.latency, piece))
            self.pending += len(piece)
            self._stats.pieces += 1
        self._arm()

    def send_eof(self) -> None:
        if not self._cut:
            now = self._loop.time()
            self._queue.append((max(now, self._free_at) + self._faults.latency, None))
            self._arm()

    def cancel(self) -> None:
        self._cut = True
        self._queue.clear()
        self.pending = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is None and self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        while queue and queue[0][0] <= now and not self._cut:
            _when, piece = queue.popleft()
            if piece is None:
                self.receiver.feed_eof()
                continue
            self.pending -= len(piece)
            self._pass(piece)
        if not self.pending:
            self.writer.link_drained()
        self._arm()

    def _pass(self, piece: bytes) -> None:
        faults = self._faults
        limit, fault = None, ""
        for bound, name in ((faults.reset_after, "reset"), (faults.eof_after, "eof")):
            if bound is None or self._passed + len(piece) < bound:
                continue
            if limit is None or bound < limit:
                limit, fault = bound, name
        if limit is None:
            self._hand_on(piece)
            return
        keep = limit - self._passed
        self._hand_on(piece[:keep])
        self._stats.discarded += len(piece) - keep + self.pending
        self.cancel()
        if fault == "eof":
            self._stats.eofs += 1
            self.receiver.feed_eof()
            return
        self._stats.resets += 1
        error = ConnectionResetError(
            f"connection reset after {limit} bytes (injected: {_describe(faults)})"
        )
        self.receiver.feed_reset(error)
        self.writer.feed_reset(error)

    def _hand_on(self, piece: bytes) -> None:
        if piece:
            self._passed += len(piece)
            self._stats.bytes += len(piece)
            self.receiver.feed(piece)


# -- datagrams ----------------------------------------------------------------------------


class _FaultyRoute(Route):
    """Datagrams from one socket to one address, through :class:`DatagramFaults`."""

    def __init__(
        self,
        sender: MemoryDatagramTransport,
        target: memory.Address,
        faults: DatagramFaults,
        rng: random.Random,
        stats: FaultStats,
    ) -> None:
        super().__init__(sender, target)
        self._faults = faults
        self._rng = rng
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        # (when it arrives, order sent, datagram): sorted, ties kept in order.
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._held: list[tuple[int, bytes]] = []
        self._hold_timer: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sent = 0
        self._order = 0
        self._newest_arrived = -1

    def send(self, data: bytes) -> None:
        faults, rng, stats = self._faults, self._rng, self._stats
        number = self._sent
        self._sent += 1
        stats.sent += 1
        if faults.drop and rng.random() < faults.drop:
            stats.dropped += 1
            return
        if faults.truncate and data and rng.random() < faults.truncate:
            data = data[: rng.randrange(len(data))]
            stats.truncated += 1
        copies = 1
        if faults.duplicate and rng.random() < faults.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            if faults.reorder and rng.random() < faults.reorder:
                self._held.append((number, data))
                if self._hold_timer is None:
                    self._hold_timer = self._loop.call_later(faults.reorder_wait, self._release)
                continue
            when = self._loop.time() + faults.delay
            if faults.jitter:
                when += rng.uniform(0, faults.jitter)
            self._schedule(when, number, data)
            if self._held:
                # The datagrams held back go right after this one.
                for held_number, held in self._held:
                    self._schedule(when, held_number, held)
                self._held.clear()

    def _release(self) -> None:
        self._hold_timer = None
        when = self._loop.time() + self._faults.delay
        for number, data in self._held:
            self._schedule(when, number, data)
        self._held.clear()

    def _schedule(self, when: float, number: int, data: bytes) -> None:
        bisect.insort(self._queue, (when, self._order, number, data), key=_arrival)
        self._order += 1
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        due = 0
        while due < len(queue) and queue[due][0] <= now:
            due += 1
        arrived, self._queue[:] = queue[:due], queue[due:]
        for _when, _order, number, data in arrived:
            if number < self._newest_arrived:
                self._stats.reordered += 1
            self._newest_arrived = max(self._newest_arrived, number)
            if self.arrive(data):
                self._stats.delivered += 1
        if self._queue and self._timer is None:
            self._timer_at = self._queue[0][0]
            self._timer = self._loop.call_at(self._timer_at, self._flush)


def _arrival(entry: tuple[float, int, int, bytes]) -> tuple[float, int]:
    return entry[0], entry[1]


# -- injection ----------------------------------------------------------------------------

Faults = StreamFaults | DatagramFaults


def _default_seed() -> int:
    text = os.environ.get(SEED_VARIABLE)
    if text is None:
        return random.SystemRandom().randrange(1 << 32)
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(
            f"{SEED_VARIABLE} must be an integer, got {text!r}", option=SEED_VARIABLE, value=text
        ) from None


def _describe(faults: Faults) -> str:
    """``StreamFaults(seed=7, segment=1)``: the seed and every option not at its default."""
    parts = [f"seed={faults.seed}"]
    for field in attrs.fields(type(faults)):
        value = getattr(faults, field.name)
        if field.name != "seed" and value != field.default:
            parts.append(f"{field.name}={value!r}")
    return f"{type(faults).__name__}({', '.join(parts)})"


class Injection:
    """Faults injected on one ``memory://`` or ``memory+udp://`` endpoint.

    A context manager: the faults apply to connections made (streams) and
    datagrams sent (datagrams) inside the ``with`` block; connections made
    before keep whatever links they had. ``faults`` holds the specs with
    their seeds filled in; ``to_server`` and ``to_client`` count what the
    faults did in each direction, and ``stats`` is their sum.
    """

    def __init__(self, url: str, faults: tuple[Faults, ...]) -> None:
        endpoint = parse_url(url)
        kinds: dict[str, type[Faults]] = {
            "memory": StreamFaults,
            "memory+ws": StreamFaults,
            "memory+udp": DatagramFaults,
        }
        kind = kinds.get(endpoint.scheme)
        if kind is None:
            raise ConfigError(
                "faults can be injected on memory://, memory+ws:// and memory+udp:// "
                f"endpoints, not {url}",
                option="url",
                value=url,
            )
        if not faults:
            raise ConfigError(
                f"inject({url!r}) needs at least one {kind.__name__}", option="faults"
            )
        self.url = endpoint.url
        # memory+ws:// names its in-process stream as a URL's host.
        self.name = endpoint.host if endpoint.scheme == "memory+ws" else endpoint.path
        self.faults: tuple[Faults, ...] = tuple(
            attrs.evolve(spec, seed=_default_seed()) if spec.seed is None else spec
            for spec in faults
        )
        self._by_direction: dict[str, Faults] = {}
        for spec in self.faults:
            if not isinstance(spec, kind):
                raise ConfigError(
                    f"{url} takes {kind.__name__}, not {type(spec).__name__}", option="faults"
                )
            covers = ("to_server", "to_client") if spec.direction == "both" else (spec.direction,)
            for direction in covers:
                if direction in self._by_direction:
                    raise ConfigError(
                        f"two faults given for {direction} on {url}", option="direction"
                    )
                self._by_direction[direction] = spec
        self.to_server = FaultStats()
        self.to_client = FaultStats()
        self._made = {"to_server": 0, "to_client": 0}
        self._active = False

    @property
    def stats(self) -> FaultStats:
        """What the faults did in both directions."""
        return self.to_server + self.to_client

    def __repr__(self) -> str:
        return f"<Injection {self.url} {', '.join(_describe(f) for f in self.faults)}>"

    def replay_note(self) -> str:
        """How to replay this run: the endpoint and every fault with its seed."""
        specs = "; ".join(_describe(f) for f in self.faults)
        return f"wirekit faults injected on {self.url}: {specs} (the same seeds replay this run)"

    def _rng(self, direction: str) -> tuple[random.Random, FaultStats]:
        spec = self._by_direction[direction]
        index = self._made[direction]
        self._made[direction] += 1
        # One generator per connection (or route) and direction: what one
        # peer does cannot shift the faults another one sees.
        rng = random.Random(f"{spec.seed}/{direction}/{index}")
        return rng, self.to_server if direction == "to_server" else self.to_client

    def _link(self, writer: MemoryTransport, receiver: MemoryTransport, direction: str) -> Link:
        spec = self._by_direction.get(direction)
        if not isinstance(spec, StreamFaults):
            return Link(writer, receiver)
        rng, stats = self._rng(direction)
        stats.connections += 1
        return _FaultyLink(writer, receiver, spec, rng, stats)

    def _route(
        self, sender: MemoryDatagramTransport, target: memory.Address, direction: str
    ) -> Route:
        spec = self._by_direction.get(direction)
        if not isinstance(spec, DatagramFaults):
            return Route(sender, target)
        rng, stats = self._rng(direction)
        return _FaultyRoute(sender, target, spec, rng, stats)

    def __enter__(self) -> Injection:
        if self._active:
            raise ConfigError(f"faults on {self.url} are already injected", option="url")
        if isinstance(self.faults[0], StreamFaults):
            memory.install_links(self.name, self._link)
        else:
            memory.install_routes(self.name, self._route)
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._active = False
        if isinstance(self.faults[0], StreamFaults):
            memory.install_links(self.name, None)
        else:
            memory.install_routes(self.name, None)
        if exc is not None and not isinstance(exc, GeneratorExit):
            exc.add_note(self.replay_note())


def inject(url: str, *faults: Faults) -> Injection:
    """Inject ``faults`` on ``memory://NAME``, ``memory+ws://NAME`` or ``memory+udp://NAME``.

    ::

        with inject("memory://chat", StreamFaults(seed=1, segment=1, reset_after=100)) as faults:
            server = await app.start("memory://chat")
            ...
        faults.stats.resets
    """
    return Injection(url, faults)
