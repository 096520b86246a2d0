"""Repeated, interleaved timing with ``time.perf_counter_ns``.

Each contender (a zero-argument callable that processes one whole workload)
is warmed up, then calibrated to a loop count that makes one sample last at
least ``min_sample_ns``. The samples of all contenders of a scenario are then
taken in rounds, one sample of each contender per round, rotating the order
every round, so a slow patch of the machine hits wirekit and its baseline
alike; sample ``i`` of every contender comes from round ``i``, so ratios can
also be taken round by round. The garbage collector is off while samples are
taken, for every contender equally, and back on between scenarios.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Settings", "Timing", "measure"]


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    repeats: int = 15
    min_sample_ns: int = 40_000_000
    warmup_ns: int = 50_000_000


#: The default: 15 rounds of samples of at least 40 ms each, after 50 ms of warm-up.
#: Many short rounds resist bursts of load from other processes better than a few long ones.
FULL = Settings()
#: A smoke run (``--quick``): 3 short samples.
QUICK = Settings(repeats=3, min_sample_ns=10_000_000, warmup_ns=5_000_000)


@dataclass(frozen=True)
class Timing:
    """The samples of one contender: nanoseconds per call of the workload."""

    loops: int
    samples_ns: tuple[float, ...]

    @property
    def median_ns(self) -> float:
        """The median time of one call: the figure reported."""
        return statistics.median(self.samples_ns)

    @property
    def min_ns(self) -> float:
        """The fastest sample, kept in the JSON for noisy machines."""
        return min(self.samples_ns)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how noisy the samples were."""
        return (max(self.samples_ns) - self.min_ns) / self.median_ns

    def per_second(self, count: int) -> float:
        """How many of ``count`` items per call are processed per second (median)."""
        return count * 1e9 / self.median_ns


def _run_ns(fn: Callable[[], object], loops: int) -> int:
    timer = time.perf_counter_ns
    start = timer()
    for _ in range(loops):
        fn()
    return timer() - start


def _calibrate(fn: Callable[[], object], settings: Settings) -> int:
    """Warm ``fn`` up; return the loop count that makes one sample long enough."""
    spent = 0
    fastest = math.inf
    calls = 0
    while spent < settings.warmup_ns or calls < 3:
        elapsed = _run_ns(fn, 1)
        spent += elapsed
        fastest = min(fastest, elapsed)
        calls += 1
    return max(1, math.ceil(settings.min_sample_ns / max(fastest, 1)))


def measure(
    contenders: Mapping[str, Callable[[], object]], settings: Settings
) -> dict[str, Timing]:
    """Time every contender ``settings.repeats`` times, interleaved; return their timings."""
    labels = list(contenders)
    loops = {label: _calibrate(contenders[label], settings) for label in labels}
    samples: dict[str, list[float]] = {label: [] for label in labels}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for repeat in range(settings.repeats):
            shift = repeat % len(labels)
            for label in labels[shift:] + labels[:shift]:
                count = loops[label]
                samples[label].append(_run_ns(contenders[label], count) / count)
    finally:
        if was_enabled:
            gc.enable()
    return {label: Timing(loops[label], tuple(samples[label])) for label in labels}
