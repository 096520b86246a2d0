"""``python -m benchmarks.workers``: does ``wirekit serve --workers 2`` scale?

Starts ``wirekit serve protocols.echo --codec bytes --workers N`` for each N
(1 and 2 by default), drives it with the plain-socket load generator of the
I/O benchmark (request/response, 56-byte frames, many connections over
several client processes: each connection lands on one worker), and prints
requests per second, latency percentiles and the CPU the server processes
used, with the ratio to one worker. Results can also be written as JSON.

On a 2-core machine the load generator shares the cores with the workers,
so the ratio shows what a second worker buys when the server, not the
client, is the bottleneck only in part; on a machine with spare cores it
approaches 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.io_load import Load, run_load, verify_echo
from benchmarks.io_scenarios import SMALL_FRAME, raw_frames

ROOT = Path(__file__).resolve().parent.parent


def start_server(workers: int, uvloop: bool) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """``wirekit serve`` the raw echo on a free port; return it and its address."""
    args = [sys.executable, "-m", "framework", "serve", "protocols.echo", "--codec", "bytes"]
    args += ["--url", "tcp://127.0.0.1:0", "--workers", str(workers)]
    if not uvloop:
        args.append("--no-uvloop")
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"tcp://([\d.]+):(\d+)", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"wirekit serve did not start: {line!r}")
    return proc, (match.group(1), int(match.group(2)))


def server_cpu(root: psutil.Process) -> float:
    """CPU seconds used so far by ``root`` and its worker processes."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measure(
    workers: int, load: Load, *, warmup: float, duration: float, uvloop: bool
) -> dict[str, Any]:
    """One run against ``workers`` worker processes."""
    proc, address = start_server(workers, uvloop)
    try:
        verify_echo(address, "reqresp", b"".join(raw_frames(8, SMALL_FRAME, seed=9)))
        root = psutil.Process(proc.pid)
        cpu: dict[str, float] = {}

        def on_window(edge: str) -> None:
            cpu[edge] = server_cpu(root)

        result = run_load(address, load, warmup=warmup, duration=duration, on_window=on_window)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    latencies = sorted(result.latencies_ns)
    return {
        "workers": workers,
        "requests_per_second": result.messages / result.seconds,
        "p50_us": latencies[len(latencies) // 2] / 1000 if latencies else None,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000 if latencies else None,
        "server_cpu_per_second": (cpu["end"] - cpu["start"]) / result.seconds,
        "client_cpu_per_second": result.client_cpu / result.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--repeat", type=int, default=3, help="runs per count; the median is kept")
    parser.add_argument("--no-uvloop", action="store_true", help="serve on asyncio's own loop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.workers.split(",")]
    load = Load(
        "reqresp",
        raw_frames(1, SMALL_FRAME)[0],
        connections=args.connections,
        processes=args.processes,
    )
    print(
        f"request/response, {SMALL_FRAME}-byte frames, {args.connections} connections over "
        f"{args.processes} client processes, {os.cpu_count()} cores, "
        f"{'asyncio' if args.no_uvloop else 'uvloop if installed'}; median of {args.repeat}",
        flush=True,
    )
    rows = []
    for count in counts:
        runs = [
            measure(
                count, load, warmup=args.warmup, duration=args.duration, uvloop=not args.no_uvloop
            )
            for _ in range(args.repeat)
        ]
        best = sorted(runs, key=lambda run: run["requests_per_second"])[len(runs) // 2]
        best["runs_requests_per_second"] = [run["requests_per_second"] for run in runs]
        best["spread"] = statistics.pstdev(best["runs_requests_per_second"])
        rows.append(best)
    base = rows[0]["requests_per_second"]
    print(
        f"{'workers':>7} {'req/s':>10} {'ratio':>6} {'p50 µs':>8} {'p99 µs':>8} {'server CPU':>10}"
    )
    for row in rows:
        print(
            f"{row['workers']:>7} {row['requests_per_second']:>10,.0f} "
            f"{row['requests_per_second'] / base:>6.2f} {row['p50_us']:>8.0f} "
            f"{row['p99_us']:>8.0f} {row['server_cpu_per_second']:>9.2f}s"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"time": time.time(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
