"""``wirekit top HOST:PORT``: a live view of a running server's metrics endpoint.

Scrapes ``/metrics`` (``wirekit serve --metrics HOST:PORT``) every second,
parses it with ``prometheus_client``'s text parser, and shows per listener:
open connections; frames and bytes per second in and out; errors per second
(decode, handler, TLS handshakes) and drops per second (refused connections,
dropped datagrams); and handler latency percentiles over the last interval.
Rates come from two successive scrapes. Ctrl-C exits.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

import attrs
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from framework.core.errors import TransportError
from framework.runtime.metrics_http import parse_address, require_prometheus

__all__ = ["Scrape", "add_top_command", "fetch", "percentile", "render", "top"]

#: (metric name, listener) -> value summed over the other labels; histogram buckets by ``le``.
Values = dict[tuple[str, str], float]
Buckets = dict[str, dict[float, float]]

_ERRORS = (
    "wirekit_decode_errors_total",
    "wirekit_handler_errors_total",
    "wirekit_tls_handshake_failures_total",
)
_DROPS = ("wirekit_datagrams_dropped_total", "wirekit_connections_rejected_total")
_HISTOGRAM = "wirekit_handler_duration_seconds_bucket"


@attrs.frozen
class Scrape:
    """One scrape: when it was taken, the values by listener, the latency buckets by listener."""

    at: float
    values: Values
    buckets: Buckets

    @property
    def listeners(self) -> list[str]:
        """The listeners this scrape names, sorted."""
        return sorted({listener for _name, listener in self.values})


def metrics_url(target: str) -> str:
    """``HOST:PORT`` or ``http://HOST:PORT[/metrics]`` as the URL of its ``/metrics``."""
    if target.startswith(("http://", "https://")):
        base = target.rstrip("/")
        return base if base.endswith("/metrics") else base + "/metrics"
    host, port = parse_address(target)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def parse(text: str, at: float) -> Scrape:
    """A scrape of ``text`` (Prometheus text format) taken at ``at``; ``ValueError`` if not."""
    from prometheus_client.parser import text_string_to_metric_families

    values: Values = {}
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            listener = sample.labels.get("listener", "")
            if sample.name == _HISTOGRAM:
                if "le" not in sample.labels:
                    raise ValueError(f"{sample.name} without an 'le' label")
                bound = float(sample.labels["le"])
                per = buckets.setdefault(listener, {})
                per[bound] = per.get(bound, 0.0) + sample.value
                continue
            key = (sample.name, listener)
            values[key] = values.get(key, 0.0) + sample.value
    return Scrape(at, values, buckets)


def fetch(url: str, timeout: float = 5.0) -> Scrape:
    """Scrape ``url``; a one-line :class:`TransportError` when nothing answers, or not metrics."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise TransportError(f"{url} answered {exc.code} {exc.reason}", peer=url) from None
    except http.client.HTTPException as exc:
        # Not HTTP at all (another service on the port), or a cut answer.
        raise _not_metrics(url, f"{type(exc).__name__}: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        raise TransportError(f"nothing answers at {url}: {reason}", peer=url) from None
    try:
        return parse(body.decode("utf-8"), time.monotonic())
    except UnicodeDecodeError:
        raise _not_metrics(url, "the answer is not UTF-8 text") from None
    except (ValueError, IndexError) as exc:
        # What the text parser raises on what is not metrics (IndexError on
        # some malformed label sets), and parse() on a bucket without a bound.
        raise _not_metrics(url, f"{type(exc).__name__}: {exc}") from None


def _not_metrics(url: str, reason: str) -> TransportError:
    shown = " ".join(reason.split())  # one line, whatever the server sent
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return TransportError(f"{url} does not answer with Prometheus metrics ({shown})", peer=url)


def percentile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative ``buckets`` (``le`` -> count), as Prometheus would."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower  # past the last finite bucket: its bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower  # pragma: no cover - the last bucket always holds the total


def _rate(old: Scrape, new: Scrape, names: Iterable[str], listener: str) -> float:
    elapsed = new.at - old.at
    if elapsed <= 0:
        return 0.0
    change = sum(
        new.values.get((name, listener), 0.0) - old.values.get((name, listener), 0.0)
        for name in names
    )
    return max(change, 0.0) / elapsed  # a restarted server resets its counters


def _latency(old: Scrape, new: Scrape, listener: str) -> list[float | None]:
    now = new.buckets.get(listener, {})
    before = old.buckets.get(listener, {})
    interval = {bound: count - before.get(bound, 0.0) for bound, count in now.items()}
    return [percentile(interval, q) for q in (0.5, 0.9, 0.99)]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def _per_second(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{prefix}"
    return f"{value:.0f}"


def render(old: Scrape, new: Scrape, *, source: str = "") -> Table:
    """The table of rates between two scrapes, one row per listener."""
    table = Table(title=f"wirekit top {source}".rstrip(), box=box.SIMPLE_HEAD)
    longest = max((len(listener) for listener in new.listeners), default=8)
    table.add_column("listener", min_width=longest, overflow="fold")
    # Rates per second between the two scrapes; latency over the same interval.
    for column in ("conns", "in/s", "out/s", "B in/s", "B out/s", "err/s", "drop/s"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("p50", "p90", "p99"):
        table.add_column(column, justify="right", no_wrap=True)
    for listener in new.listeners:
        if not listener:
            continue  # backplane figures: no listener
        active = new.values.get(("wirekit_connections_active", listener), 0.0)
        p50, p90, p99 = _latency(old, new, listener)
        table.add_row(
            listener,
            f"{active:.0f}",
            _per_second(_rate(old, new, ["wirekit_frames_received_total"], listener)),
            _per_second(_rate(old, new, ["wirekit_frames_sent_total"], listener)),
            _per_second(_rate(old, new, ["wirekit_bytes_received_total"], listener)),
            _per_second(_rate(old, new, ["wirekit_bytes_sent_total"], listener)),
            _per_second(_rate(old, new, _ERRORS, listener)),
            _per_second(_rate(old, new, _DROPS, listener)),
            _seconds(p50),
            _seconds(p90),
            _seconds(p99),
        )
    return table


def top(target: str, *, interval: float = 1.0, iterations: int | None = None) -> int:
    """Show the live view until Ctrl-C (or ``iterations`` refreshes); the exit status."""
    require_prometheus()
    url = metrics_url(target)
    previous = fetch(url)
    print(f"wirekit: watching {url} (Ctrl-C to quit)", file=sys.stderr, flush=True)
    console = Console()
    shown = 0
    try:
        with Live(
            render(previous, previous, source=url), console=console, auto_refresh=False
        ) as live:
            while iterations is None or shown < iterations:
                time.sleep(interval)
                current = fetch(url)
                live.update(render(previous, current, source=url), refresh=True)
                previous = current
                shown += 1
    except KeyboardInterrupt:
        return 0  # the way out
    return 0


def add_top_command(commands: Any) -> None:
    """Add ``wirekit top`` to the command line's sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "top", help="live view of a server's metrics (wirekit serve --metrics HOST:PORT)"
    )
    parser.add_argument("address", help="the metrics endpoint: HOST:PORT or http://HOST:PORT")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between two refreshes (default 1)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="refresh N times, then exit (default: until Ctrl-C)",
    )
