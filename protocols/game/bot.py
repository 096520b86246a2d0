"""Bot players: move N simulated players along a circle and measure what arrives.

Each bot joins (see :func:`protocols.game.client.join`), then sends its
``position`` ``rate`` times a second and receives every other player's
updates through the relay, feeding them to a
:class:`~protocols.game.tracker.SequenceTracker`. Bots run in one process,
so the time from one bot's send to another's receipt is the relay latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections.abc import Callable

import attrs

from framework import Connection, ConnectionClosed, Pipeline, connect
from protocols.game.client import join
from protocols.game.messages import Challenge, Join, Position, Relayed
from protocols.game.relay import default_pipeline
from protocols.game.tracker import SequenceTracker

__all__ = ["BotReport", "run_bots"]

_RADIUS = 10.0
_LAP_SECONDS = 4.0


@attrs.define
class BotReport:
    """What a run of bots sent, received and measured."""

    url: str
    players: int
    sent: int = 0
    tracker: SequenceTracker = attrs.field(factory=SequenceTracker)
    latencies: list[float] = attrs.field(factory=list)  # seconds
    elapsed: float = 0.0

    @property
    def received(self) -> int:
        """Updates that arrived, including duplicates and stale ones."""
        return self.tracker.received

    def latency_ms(self, quantile: float) -> float | None:
        """A latency quantile in milliseconds (0.5 for the median)."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else None
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        index = min(98, max(0, round(quantile * 100) - 1))
        return cuts[index] * 1000

    def rate(self, count: int) -> float:
        """``count`` per second of the run so far."""
        return count / self.elapsed if self.elapsed > 0 else 0.0


def _position(index: int, players: int, count: int, now: float) -> Position:
    angle = 2 * math.pi * (now / _LAP_SECONDS + index / players)
    # z carries the bot's index (exact even in float32): the receiver finds
    # the send time by (z, count).
    return Position(_RADIUS * math.cos(angle), _RADIUS * math.sin(angle), float(index), count)


async def run_bots(
    url: str,
    *,
    players: int = 4,
    rate: float = 20.0,
    duration: float = 3.0,
    pipeline: Pipeline | None = None,
    on_tick: Callable[[BotReport], None] | None = None,
) -> BotReport:
    """Run ``players`` bots against the relay at ``url`` for ``duration`` seconds."""
    pipeline = pipeline if pipeline is not None else default_pipeline()
    report = BotReport(url=url, players=players)
    sent_at: dict[tuple[int, int], float] = {}
    conns: list[Connection] = [await connect(url, pipeline) for _ in range(players)]
    for conn in conns:
        await join(conn)
    start = time.perf_counter()
    deadline = start + duration

    async def send(index: int, conn: Connection) -> None:
        count = 0
        interval = 1.0 / rate
        next_at = time.perf_counter()
        while (now := time.perf_counter()) < deadline:
            count += 1
            sent_at[(index, count)] = now
            await conn.send(_position(index, players, count, now - start))
            report.sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def receive(index: int, conn: Connection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                update = await conn.receive()
                if isinstance(update, Challenge):
                    # The relay forgot this player (idle): join again.
                    await conn.send(Join(update.cookie))
                    continue
                if not isinstance(update, Relayed):
                    continue
                sender = int(update.position.z)
                report.tracker.accept((index, update.player), update.position.count)
                sent = sent_at.get((sender, update.position.count))
                if sent is not None:
                    report.latencies.append(time.perf_counter() - sent)

    async def tick() -> None:
        while True:
            report.elapsed = time.perf_counter() - start
            if on_tick is not None:
                on_tick(report)
            await asyncio.sleep(0.1)

    receivers = [asyncio.create_task(receive(i, c)) for i, c in enumerate(conns)]
    ticker = asyncio.create_task(tick())
    try:
        await asyncio.gather(*(send(i, c) for i, c in enumerate(conns)))
        await asyncio.sleep(min(0.2, duration / 10))  # let the last updates land
    finally:
        for conn in conns:
            conn.close()
        for task in [*receivers, ticker]:
            task.cancel()
        await asyncio.gather(*receivers, ticker, return_exceptions=True)
        report.elapsed = time.perf_counter() - start
    return report
