"""Results: the printed table, the goal summary and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import framework
from benchmarks.scenarios import Case
from benchmarks.timing import Settings, Timing

__all__ = ["Result", "environment", "format_table", "to_json", "write_json"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Result:
    """The timings of one case: wirekit's and each baseline's."""

    case: Case
    wirekit: Timing
    baselines: dict[str, Timing]

    @property
    def best(self) -> str:
        """The label of the fastest baseline: the one the ratio is against."""
        return min(self.baselines, key=lambda label: self.baselines[label].median_ns)

    @property
    def ratio(self) -> float:
        """wirekit's median time over the fastest baseline's."""
        return self.wirekit.median_ns / self.baselines[self.best].median_ns

    @property
    def ratio_min(self) -> float:
        """wirekit's fastest sample over the fastest baseline's: the least disturbed figure."""
        return self.wirekit.min_ns / self.baselines[self.best].min_ns

    @property
    def ratio_paired(self) -> float:
        """The median of the round-by-round ratios (both samples taken moments apart)."""
        baseline = self.baselines[self.best].samples_ns
        return statistics.median(
            ours / theirs for ours, theirs in zip(self.wirekit.samples_ns, baseline, strict=True)
        )

    @property
    def spread(self) -> float:
        """The worst sample spread among wirekit and the fastest baseline."""
        return max(self.wirekit.spread, self.baselines[self.best].spread)

    @property
    def goal_met(self) -> bool | None:
        """Whether the ratio is within the case's goal (``None`` without a goal)."""
        goal = self.case.goal
        return None if goal is None else self.ratio <= goal


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Where the numbers come from: interpreter, machine, library versions, commit."""
    commit = _git("rev-parse", "HEAD")
    status = (
        _git("status", "--porcelain", "--untracked-files=no", "--", "framework") if commit else None
    )
    return {
        "python": platform.python_version(),
        "python_build": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "wirekit_version": framework.__version__,
        "git_commit": commit,
        # Uncommitted changes under framework/ mean the commit alone does not
        # say which code was measured.
        "framework_modified": None if status is None else bool(status),
        "packages": {name: _version(name) for name in ("msgpack", "attrs", "cattrs")},
    }


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f}M"
    return f"{per_second / 1e3:.0f}k"


def _goal(result: Result) -> str:
    if result.case.goal is None:
        return ""
    verdict = "met" if result.goal_met else "MISSED"
    return f"<={result.case.goal:.1f}x {verdict}"


_COLUMNS = (
    ("#", 2, "<"),
    ("scenario", 40, "<"),
    ("frames", 7, ">"),
    ("wirekit ms", 10, ">"),
    ("frames/s", 8, ">"),
    ("baseline ms", 11, ">"),
    ("frames/s", 8, ">"),
    ("ratio", 6, ">"),
    ("paired", 6, ">"),
    ("@min", 6, ">"),
    ("spread", 6, ">"),
    ("goal", 12, "<"),
)
# Above this sample spread a scenario's numbers are flagged as disturbed.
NOISY_SPREAD = 0.25


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def _header(env: dict[str, Any], settings: Settings) -> list[str]:
    commit = (env["git_commit"] or "unknown")[:10]
    if env["framework_modified"]:
        commit += " + uncommitted framework/ changes"
    return [
        f"wirekit {env['wirekit_version']} core throughput  (commit {commit})",
        f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs",
        f"{settings.repeats} rounds of samples >= {settings.min_sample_ns / 1e6:.0f} ms, "
        "contenders interleaved; gc off while timing, for both sides",
        "ratio  = median wirekit / median of the fastest baseline (1.00x: as fast as by hand)",
        "paired = median of the round-by-round ratios (samples taken moments apart)",
        "@min   = fastest wirekit sample / fastest baseline sample (least disturbed by other load)",
        "spread = (slowest - fastest) / median sample, the worse of the two sides",
        "",
        _row(tuple(name for name, _, _ in _COLUMNS)),
        _row(tuple("-" * width for _, width, _ in _COLUMNS)),
    ]


def _case_lines(number: int, result: Result) -> list[str]:
    case = result.case
    best = result.baselines[result.best]
    row = _row(
        (
            str(number),
            case.title,
            f"{case.items:,}",
            _ms(result.wirekit.median_ns),
            _rate(result.wirekit.per_second(case.items)),
            _ms(best.median_ns),
            _rate(best.per_second(case.items)),
            f"{result.ratio:.2f}x",
            f"{result.ratio_paired:.2f}x",
            f"{result.ratio_min:.2f}x",
            f"{result.spread:.0%}",
            _goal(result),
        )
    )
    lines = [row, f"      wirekit: {case.call}"]
    for label, timing in result.baselines.items():
        mark = "  <- fastest" if label == result.best and len(result.baselines) > 1 else ""
        lines.append(f"      baseline: {label}: {_ms(timing.median_ns)} ms{mark}")
    return lines


def format_table(results: list[Result], env: dict[str, Any], settings: Settings) -> str:
    """The human-readable report: header, one row per case with its baselines, goals."""
    lines = _header(env, settings)
    for number, result in enumerate(results, 1):
        lines += _case_lines(number, result)
    goals = [result for result in results if result.case.goal is not None]
    if goals:
        lines += ["", "Goals (judged on the median ratio):"]
        for result in goals:
            lines.append(
                f"  {result.case.title}: {result.ratio:.2f}x (paired {result.ratio_paired:.2f}x, "
                f"@min {result.ratio_min:.2f}x) "
                f"of hand-written, goal <= {result.case.goal:.1f}x: "
                f"{'met' if result.goal_met else 'MISSED'}"
            )
    noisy = [result.case.key for result in results if result.spread > NOISY_SPREAD]
    if noisy:
        lines += [
            "",
            f"Note: samples spread over {NOISY_SPREAD:.0%} in {', '.join(noisy)}: the machine "
            "was busy; trust paired and @min more than the medians there, or re-run on a quiet "
            "machine.",
        ]
    return "\n".join(lines)


def _timing_json(timing: Timing, items: int, nbytes: int) -> dict[str, Any]:
    return {
        "median_ns": timing.median_ns,
        "min_ns": timing.min_ns,
        "spread": timing.spread,
        "frames_per_s": timing.per_second(items),
        "bytes_per_s": timing.per_second(nbytes),
        "loops_per_sample": timing.loops,
        "samples_ns": list(timing.samples_ns),
    }


def to_json(results: list[Result], env: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Everything measured, as a JSON-ready dict."""
    cases = []
    for result in results:
        case = result.case
        cases.append(
            {
                "key": case.key,
                "title": case.title,
                "wirekit_call": case.call,
                "frames": case.items,
                "bytes": case.nbytes,
                "wirekit": _timing_json(result.wirekit, case.items, case.nbytes),
                "baselines": {
                    label: _timing_json(timing, case.items, case.nbytes)
                    for label, timing in result.baselines.items()
                },
                "fastest_baseline": result.best,
                "ratio": result.ratio,
                "ratio_min": result.ratio_min,
                "ratio_paired_median": result.ratio_paired,
                "spread": result.spread,
                "goal": case.goal,
                "goal_met": result.goal_met,
            }
        )
    return {
        "suite": "core",
        "environment": env,
        "settings": {
            "repeats": settings.repeats,
            "min_sample_ns": settings.min_sample_ns,
            "warmup_ns": settings.warmup_ns,
            "statistic": "median",
            "gc": "disabled while timing, for wirekit and baselines alike",
        },
        "cases": cases,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
