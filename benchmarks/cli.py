"""The command line: ``python -m benchmarks [--quick] [--json PATH] [--only KEY]``.

``python -m benchmarks io ...`` (or ``--suite io``) runs the I/O benchmark
instead: see :mod:`benchmarks.io_cli`; ``python -m benchmarks idle`` measures
memory per idle connection: see :mod:`benchmarks.idle_memory`; ``python -m
benchmarks hot-path`` hands a wirekit connection and the hand-written peer the
same reads in one process: see :mod:`benchmarks.hot_path`; ``python -m
benchmarks fanout`` serves a chat room on memory://, Redis and NATS and
compares deliveries per second and cross-node latency: see
:mod:`benchmarks.fanout`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from benchmarks.report import Result, environment, format_table, to_json, write_json
from benchmarks.scenarios import Case, build_cases
from benchmarks.timing import FULL, QUICK, Settings, measure

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure wirekit's sans-I/O core against hand-written baselines.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few short samples: a smoke run, not a measurement"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the JSON results (default: benchmarks/results/core-<timestamp>.json)",
    )
    parser.add_argument("--repeats", type=int, metavar="N", help="samples per contender")
    parser.add_argument(
        "--only", metavar="TEXT", help="run only the scenarios whose key contains TEXT"
    )
    parser.add_argument(
        "--suite",
        choices=("core", "io", "idle", "hot-path", "websocket", "fanout"),
        default="core",
        help="core: sans-I/O throughput (default); io: servers over loopback "
        "(same as `python -m benchmarks io`, see its --help)",
    )
    return parser


def _suite(argv: list[str]) -> tuple[str, list[str]]:
    """Split the suite choice (``io`` first, or ``--suite NAME``) from the other arguments."""
    if argv[:1] in (["io"], ["core"], ["idle"], ["hot-path"], ["websocket"], ["fanout"]):
        return argv[0], argv[1:]
    for index, arg in enumerate(argv):
        if arg == "--suite" and index + 1 < len(argv):
            return argv[index + 1], argv[:index] + argv[index + 2 :]
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1], argv[:index] + argv[index + 1 :]
    return "core", argv


def _run(case: Case, settings: Settings) -> Result:
    contenders = {"wirekit": case.wirekit}
    contenders.update((baseline.label, baseline.run) for baseline in case.baselines)
    timings = measure(contenders, settings)
    wirekit = timings.pop("wirekit")
    return Result(case=case, wirekit=wirekit, baselines=timings)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write the JSON; return the exit status."""
    suite, argv = _suite(sys.argv[1:] if argv is None else list(argv))
    if suite == "io":
        from benchmarks.io_cli import main as io_main

        return io_main(argv)
    if suite == "idle":
        from benchmarks.idle_memory import main as idle_main

        return idle_main(argv)
    if suite == "hot-path":
        from benchmarks.hot_path import main as hot_path_main

        return hot_path_main(argv)
    if suite == "websocket":
        from benchmarks.websocket import main as websocket_main

        return websocket_main(argv)
    if suite == "fanout":
        from benchmarks.fanout import main as fanout_main

        return fanout_main(argv)
    if suite != "core":
        _parser().error(
            f"unknown suite {suite!r} (choose core, io, idle, hot-path, websocket or fanout)"
        )
    args = _parser().parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        settings = dataclasses.replace(settings, repeats=max(1, args.repeats))
    cases = [case for case in build_cases() if args.only is None or args.only in case.key]
    if not cases:
        print(f"no scenario key contains {args.only!r}", file=sys.stderr)
        return 2
    results = []
    for case in cases:
        print(f"running {case.key} ...", file=sys.stderr, flush=True)
        case.verify()
        results.append(_run(case, settings))
    env = environment()
    print(format_table(results, env, settings))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.json if args.json is not None else RESULTS_DIR / f"core-{stamp}.json"
    write_json(path, to_json(results, env, settings))
    print(f"\nresults written to {path}")
    return 0
