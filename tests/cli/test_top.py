"""``wirekit top``: rates from two scrapes, percentiles from buckets, and the command itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from framework.cli.top import metrics_url, parse, percentile, render

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
LISTENER = 'listener="tcp://127.0.0.1:9000",transport="tcp"'


def exposition(frames: int, nbytes: int, errors: int, drops: int, buckets: list[int]) -> str:
    """A scrape as a wirekit endpoint would write it."""
    bounds = ["0.0001", "0.001", "0.01", "+Inf"]
    lines = [
        f"wirekit_connections_active{{{LISTENER}}} 3",
        f"wirekit_frames_received_total{{{LISTENER}}} {frames}",
        f"wirekit_frames_sent_total{{{LISTENER}}} {frames * 2}",
        f"wirekit_bytes_received_total{{{LISTENER}}} {nbytes}",
        f"wirekit_bytes_sent_total{{{LISTENER}}} {nbytes}",
        f"wirekit_decode_errors_total{{{LISTENER}}} {errors}",
        f'wirekit_datagrams_dropped_total{{{LISTENER},reason="oversize"}} {drops}',
        "# TYPE wirekit_handler_duration_seconds histogram",
        *(
            f'wirekit_handler_duration_seconds_bucket{{le="{bound}",{LISTENER}}} {count}'
            for bound, count in zip(bounds, buckets, strict=True)
        ),
        f"wirekit_handler_duration_seconds_count{{{LISTENER}}} {buckets[-1]}",
        f"wirekit_handler_duration_seconds_sum{{{LISTENER}}} 0.5",
    ]
    return "\n".join(lines) + "\n"


def shown(table: object) -> str:
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text()


def test_rates_come_from_two_scrapes_and_latency_from_the_interval_s_buckets() -> None:
    old = parse(exposition(1000, 10_000, 5, 0, [0, 0, 0, 0]), at=10.0)
    new = parse(exposition(3000, 30_000, 7, 4, [0, 100, 200, 200]), at=12.0)
    text = shown(render(old, new))
    row = next(line for line in text.splitlines() if "tcp://127.0.0.1:9000" in line)
    cells = row.split()
    # conns, frames in/s, out/s, bytes in/s, out/s, errors/s, drops/s, p50, p90, p99
    assert cells[1:] == ["3", "1.0k", "2.0k", "10.0k", "10.0k", "1", "2", "1.0ms", "8.2ms", "9.8ms"]


def test_no_handler_call_in_the_interval_shows_no_latency() -> None:
    scrape = parse(exposition(10, 10, 0, 0, [1, 2, 3, 3]), at=1.0)
    text = shown(render(scrape, scrape))
    assert text.count(" - ") >= 3


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=8),
    st.floats(min_value=0.01, max_value=1.0),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_percentiles_stay_within_the_buckets_and_grow_with_q(
    increments: list[int], q1: float, q2: float
) -> None:
    bounds = [0.001 * 2**i for i in range(len(increments) - 1)] + [float("inf")]
    running = 0
    buckets = {}
    for bound, step in zip(bounds, increments, strict=True):
        running += step
        buckets[bound] = float(running)
    low, high = percentile(buckets, min(q1, q2)), percentile(buckets, max(q1, q2))
    if running == 0:
        assert low is None
        assert high is None
        return
    assert low is not None
    assert high is not None
    finite = [bound for bound in bounds if bound != float("inf")]
    assert 0 <= low <= high <= (max(finite) if finite else 0)


def test_metrics_url_accepts_an_address_or_a_url() -> None:
    assert metrics_url("127.0.0.1:9100") == "http://127.0.0.1:9100/metrics"
    assert metrics_url("[::1]:9100") == "http://[::1]:9100/metrics"
    assert metrics_url("http://host:1/") == "http://host:1/metrics"
    assert metrics_url("http://host:1/metrics") == "http://host:1/metrics"


def wirekit(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # a wide terminal: every column whole
    )


def test_nothing_answering_is_one_clear_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # a port nobody listens on
        port = holder.getsockname()[1]
        with wirekit("top", f"127.0.0.1:{port}") as proc:
            _out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    url = f"http://127.0.0.1:{port}/metrics"
    assert err == f"wirekit: error: nothing answers at {url}: Connection refused\n"


def test_top_shows_a_running_server_and_exits_cleanly_on_ctrl_c() -> None:
    with wirekit(
        "serve", "protocols.echo", "--url", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"
    ) as server:
        try:
            assert server.stdout is not None
            banner = server.stdout.readline()
            match = re.search(r"(tcp://\S+) \(metrics: http://(\S+)/metrics\)", banner)
            assert match, banner
            url, address = match.groups()
            with wirekit("top", address, "--iterations", "2", "--interval", "0.1") as once:
                out, err = once.communicate(timeout=TIMEOUT)
            assert once.returncode == 0, err
            assert url in out
            with wirekit("top", address, "--interval", "0.1") as live:
                assert live.stderr is not None
                assert live.stderr.readline().startswith("wirekit: watching http://")
                time.sleep(0.3)  # a refresh or two
                live.send_signal(signal.SIGINT)
                _out, err = live.communicate(timeout=TIMEOUT)
            assert live.returncode == 0
            assert "Traceback" not in err
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=TIMEOUT)


@given(
    st.dictionaries(
        st.tuples(
            st.sampled_from(["wirekit_frames_received_total", "wirekit_bytes_sent_total"]),
            st.text(min_size=1, max_size=20),
        ),
        st.integers(min_value=0, max_value=2**40),
        max_size=6,
    ),
    st.lists(st.integers(min_value=0, max_value=1000), min_size=20, max_size=20),
)
def test_what_an_endpoint_writes_top_reads_back(
    counters: dict[tuple[str, str], int], buckets: list[int]
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from framework.runtime.metrics import Snapshot, enable
    from framework.runtime.metrics_http import MetricsCollector

    snap = Snapshot()
    for (name, listener), value in counters.items():
        snap.count(name, (("listener", listener), ("transport", "tcp")), value)
    snap.histograms["wirekit_handler_duration_seconds", (("listener", "l"), ("transport", "t"))] = (
        buckets,
        1.5,
    )
    registry = CollectorRegistry()
    try:
        registry.register(MetricsCollector(lambda: snap))
    finally:
        enable(False)  # a collector turns handler timing on for the process
    scrape = parse(generate_latest(registry).decode(), at=0.0)
    for key, value in counters.items():
        assert scrape.values[key] == value
    cumulative = scrape.buckets["l"]
    assert cumulative[float("inf")] == sum(buckets)
    assert sorted(cumulative.values()) == [cumulative[b] for b in sorted(cumulative)]
