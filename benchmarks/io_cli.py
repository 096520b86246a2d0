"""``python -m benchmarks io [--quick] [--only KEY] [--profile]``: the I/O benchmark.

For each scenario every server (wirekit and its peers, each a script in
``benchmarks/peers/``) is started once and checked to echo correctly; then
the servers are loaded in rounds, one run of each per round, the order
rotating every round, so a slow patch of the machine hits all of them
alike. Every server is stopped when its scenario ends, or on any error or
Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import time
from pathlib import Path

import psutil

from benchmarks.io_load import Load, run_load, verify_echo
from benchmarks.io_report import (
    IoSettings,
    Run,
    ScenarioResult,
    ServerResult,
    format_report,
    io_environment,
    to_json,
)
from benchmarks.io_scenarios import Scenario, build_scenarios
from benchmarks.io_servers import ServerPool, ServerProcess
from benchmarks.report import write_json

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL = IoSettings(repeats=3, duration=2.0, warmup=0.5)
QUICK = IoSettings(repeats=1, duration=1.0, warmup=0.3)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks io",
        description="Load wirekit servers and hand-written, asyncio Streams, threaded and "
        "Twisted peers over loopback with one independent load generator.",
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s per server")
    parser.add_argument("--repeats", type=int, metavar="N", help="runs per server")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds measured per run")
    parser.add_argument(
        "--only", metavar="TEXT", help="run only the scenarios whose key contains TEXT"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run only the wirekit servers, under cProfile, and print where their time goes",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the JSON results (default: benchmarks/results/io-<timestamp>.json)",
    )
    return parser


class _Progress:
    """A rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("starting", total=total)

    def note(self, text: str) -> None:
        """Show what is happening now."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)
        else:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def advance(self, text: str) -> None:
        """One run finished; ``text`` says how it went."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
            self._bar.console.print(text)
        else:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.stop()


def _machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine has spent not idle, and of those, stolen."""
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    return busy, getattr(times, "steal", 0.0)


def _measure(server: ServerProcess, load: Load, settings: IoSettings) -> Run:
    marks: dict[str, tuple[float, tuple[float, float]]] = {}

    def on_window(edge: str) -> None:
        marks[edge] = (server.cpu_seconds(), _machine_cpu())
        server.sample_rss()

    result = run_load(
        server.address,
        load,
        warmup=settings.warmup,
        duration=settings.duration,
        on_window=on_window,
    )
    (cpu0, (busy0, steal0)), (cpu1, (busy1, steal1)) = marks["start"], marks["end"]
    p50 = p99 = None
    if len(result.latencies_ns):
        ordered = sorted(result.latencies_ns)
        p50 = ordered[len(ordered) // 2] / 1e3
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e3
    return Run(
        messages=result.messages,
        seconds=result.seconds,
        server_cpu=cpu1 - cpu0,
        client_cpu=result.client_cpu,
        machine_busy=busy1 - busy0,
        p50_us=p50,
        p99_us=p99,
        lost=result.lost,
        steal=steal1 - steal0,
    )


def _run_scenario(
    scenario: Scenario,
    settings: IoSettings,
    progress: _Progress,
    profile_dir: Path | None,
) -> ScenarioResult:
    specs = [spec for spec in scenario.servers if spec.wirekit or profile_dir is None]
    results = {spec.key: ServerResult(spec) for spec in specs}
    with ServerPool(profile_dir) as pool:
        live: list[ServerProcess] = []
        for spec in specs:
            progress.note(f"{scenario.key}: starting {spec.label}")
            server = pool.start(spec)
            if server is None:
                results[spec.key].status = pool.unavailable[spec.key]
                continue
            try:
                verify_echo(server.address, scenario.load.shape, scenario.check)
            except (AssertionError, OSError) as exc:
                results[spec.key].status = f"error: {exc}"
                continue
            live.append(server)
        skipped = (len(specs) - len(live)) * settings.repeats
        for _ in range(skipped):
            progress.advance(f"{scenario.key}: a server could not run")
        for round_index in range(settings.repeats):
            shift = round_index % max(1, len(live))
            for server in live[shift:] + live[:shift]:
                _one_run(scenario, server, results[server.spec.key], settings, progress)
        for server in live:
            results[server.spec.key].peak_rss = server.peak_rss()
    if profile_dir is not None:
        for server in live:
            _print_profile(scenario, server)
    return ScenarioResult(scenario, results)


def _one_run(
    scenario: Scenario,
    server: ServerProcess,
    result: ServerResult,
    settings: IoSettings,
    progress: _Progress,
) -> None:
    label = f"{scenario.key}: {server.spec.label}"
    if result.status is not None:
        progress.advance(f"{label}: skipped ({result.status.splitlines()[0]})")
        return
    progress.note(f"{label} (run {len(result.runs) + 1}/{settings.repeats})")
    try:
        run = _measure(server, scenario.load, settings)
    except (RuntimeError, TimeoutError, OSError) as exc:
        tail = server.log_tail(5)
        result.status = f"error: {str(exc).splitlines()[0]}"
        progress.advance(f"{label}: FAILED: {exc}\n{tail}")
        return
    if not server.alive():
        result.status = "error: server died"
        progress.advance(f"{label}: server died\n{server.log_tail()}")
        return
    result.runs.append(run)
    cpu = run.cpu_per_message_us
    latency = f", p50 {run.p50_us:.0f} us" if run.p50_us is not None else ""
    progress.advance(
        f"{label}: {run.rate:,.0f} msg/s"
        + (f", {cpu:.2f} us CPU/msg" if cpu is not None else "")
        + latency
    )


def _print_profile(scenario: Scenario, server: ServerProcess, top: int = 25) -> None:
    path = server.profile_path
    if path is None or not path.exists():
        print(f"\n{scenario.key}: no profile written for {server.spec.key}", file=sys.stderr)
        return
    print(f"\n=== cProfile of {server.spec.label} under {scenario.key} ({path}) ===")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    """Run the I/O benchmark, print the table, write the JSON; return the exit status."""
    args = _parser().parse_args(argv)
    settings = QUICK if args.quick else FULL
    settings = IoSettings(
        repeats=max(1, args.repeats) if args.repeats is not None else settings.repeats,
        duration=args.duration if args.duration is not None else settings.duration,
        warmup=settings.warmup,
        profile=args.profile,
    )
    scenarios = [s for s in build_scenarios() if args.only is None or args.only in s.key]
    if not scenarios:
        print(f"no scenario key contains {args.only!r}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    profile_dir = RESULTS_DIR / f"profiles-{stamp}" if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    env = io_environment()
    env["loadavg_start"] = _loadavg()
    total = sum(
        len([s for s in scenario.servers if s.wirekit or not args.profile]) * settings.repeats
        for scenario in scenarios
    )
    # SIGTERM unwinds like Ctrl-C, through the code that stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    progress = _Progress(total)
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        for scenario in scenarios:
            results.append(_run_scenario(scenario, settings, progress, profile_dir))
    except KeyboardInterrupt:
        progress.close()
        print("\ninterrupted: every server was stopped", file=sys.stderr)
        return 130
    finally:
        progress.close()
    env["loadavg_end"] = _loadavg()
    env["wall_seconds"] = round(time.monotonic() - started, 1)
    print(format_report(results, env, settings))
    path = args.json if args.json is not None else RESULTS_DIR / f"io-{stamp}.json"
    write_json(path, to_json(results, env, settings))
    print(f"\nresults written to {path} ({env['wall_seconds']:.0f} s)")
    return 0


def _loadavg() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"
