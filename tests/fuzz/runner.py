"""Run fuzz targets, each in its own libFuzzer process, and report what they reached.

Imports nothing from ``framework``: the child process must be the first to
import it, under instrumentation. Seeds are written into the target's corpus
directory before each run, so a run starts from valid frames of every kind
and keeps what it discovers for the next run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path

__all__ = ["FUZZ_DIR", "Result", "fuzz", "parse", "prepare_dir", "write_seeds"]

FUZZ_DIR = Path(__file__).resolve().parent
ROOT = FUZZ_DIR.parent.parent
CRASHES = FUZZ_DIR / "crashes"
CORPUS = FUZZ_DIR / "corpus"

# "#4096 pulse  cov: 123 ft: 456 corp: 78/9Kb ..." : libFuzzer's status lines.
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
# Where a crash report starts: atheris's Python traceback, or libFuzzer's own error.
_CRASH_START = re.compile(r"Uncaught Python exception|ERROR: libFuzzer")
_REPORT_END = re.compile(r"SUMMARY: |Test unit written to")


@dataclass
class Result:
    """One target's run: what libFuzzer reported, and any crash."""

    target: str
    seconds: float = 0.0
    executions: int = 0
    exec_per_second: int = 0
    coverage: int = 0  # "cov:": instrumented edges reached
    features: int = 0  # "ft:": edges with hit counts, libFuzzer's finer measure
    corpus: int = 0
    peak_rss_mb: int = 0
    returncode: int = 0
    artifacts: list[str] = field(default_factory=list)
    report: str = ""  # the crash's traceback and libFuzzer's summary

    @property
    def crashed(self) -> bool:
        """Whether libFuzzer stopped on a failing input (or failed to run at all)."""
        return self.returncode != 0 or bool(self.artifacts)


def parse(target: str, output: str, returncode: int, seconds: float) -> Result:
    """Read libFuzzer's output into a :class:`Result`."""
    result = Result(target, seconds=seconds, returncode=returncode)
    lines = output.splitlines()
    for line in lines:
        status = _STATUS.match(line)
        if status:
            execs, cov, ft, corp = map(int, status.groups())
            result.executions = max(result.executions, execs)
            result.coverage, result.features, result.corpus = cov, ft, corp
        stat = _STAT.match(line)
        if stat:
            name, value = stat.group(1), int(stat.group(2))
            if name == "number_of_executed_units":
                result.executions = value
            elif name == "average_exec_per_sec":
                result.exec_per_second = value
            elif name == "peak_rss_mb":
                result.peak_rss_mb = value
        artifact = _ARTIFACT.search(line)
        if artifact:
            result.artifacts.append(artifact.group(1))
    if not result.exec_per_second and seconds:
        result.exec_per_second = int(result.executions / seconds)
    if result.crashed:
        # The traceback, libFuzzer's summary, and where the reproducer went.
        start = next((i for i, line in enumerate(lines) if _CRASH_START.search(line)), None)
        if start is None:
            start = max(0, len(lines) - 40)
        ends = [i for i in range(start, len(lines)) if _REPORT_END.search(lines[i])]
        result.report = "\n".join(lines[start : (ends[-1] if ends else len(lines)) + 1])
    return result


def prepare_dir(path: Path) -> Path:
    """Create ``path``, holding a ``.gitignore`` so nothing in it is ever committed."""
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Written by python -m tests.fuzz: local fuzzing output.\n*\n")
    return path


def write_seeds(corpus: Path, seeds: list[bytes]) -> int:
    """Add the generated seeds to ``corpus`` (named by content, as libFuzzer does)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds:
        (corpus / f"seed-{sha1(data).hexdigest()}").write_bytes(data)
    return len(seeds)


def _run_one(
    target: str, seconds: float, corpus_root: Path, extra: list[str], max_len: int
) -> Result:
    corpus = corpus_root / target
    corpus.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.child",
        target,
        str(corpus),
        f"-max_total_time={max(1, round(seconds))}",
        "-print_final_stats=1",
        f"-artifact_prefix={CRASHES}/{target}-",
        "-timeout=20",  # seconds for one input: far above the server target's own deadline
        "-rss_limit_mb=2048",
        f"-max_len={max_len}",
        *extra,
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", WIREKIT_FUZZ_KEEP=str(CRASHES))
    started = time.monotonic()
    wall_start = time.time() - 1
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, so the traceback stays next to its summary
        text=True,
        errors="replace",
        check=False,
    )
    elapsed = time.monotonic() - started
    result = parse(target, done.stdout, done.returncode, elapsed)
    if result.crashed and not result.artifacts:
        # libFuzzer died before writing the reproducer: the child kept it.
        kept = CRASHES.glob(f"{target}-failing-*")
        result.artifacts = [str(p) for p in kept if p.stat().st_mtime >= wall_start]
    return result


def fuzz(
    targets: list[str],
    seeds: dict[str, list[bytes]],
    *,
    max_len: dict[str, int] | None = None,
    seconds: float,
    jobs: int = 1,
    corpus_root: Path = CORPUS,
    extra: list[str] | None = None,
    report: bool = True,
) -> list[Result]:
    """Fuzz each target for ``seconds``, ``jobs`` at a time; print a line per target.

    ``seeds`` are written into each target's corpus first; ``max_len`` bounds
    the inputs libFuzzer generates per target (4096 bytes if not given).
    """
    prepare_dir(CRASHES)
    if corpus_root == CORPUS:
        prepare_dir(CORPUS)
    for target in targets:
        write_seeds(corpus_root / target, seeds[target])

    def one(target: str) -> Result:
        result = _run_one(
            target, seconds, corpus_root, extra or [], (max_len or {}).get(target, 4096)
        )
        if report:
            print(_row(result), flush=True)
            if result.crashed:
                print(result.report, flush=True)
        return result

    if report:
        print(_HEADER, flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, targets))
    if report:
        total = sum(r.executions for r in results)
        crashed = [r for r in results if r.crashed]
        print(f"{len(results)} targets, {total:,} executions, {len(crashed)} crashed", flush=True)
        for r in crashed:
            where = ", ".join(r.artifacts) or f"exit status {r.returncode}, no reproducer"
            print(f"  {r.target}: {where}", flush=True)
            for path in r.artifacts:
                print(f"    replay: python -m tests.fuzz {r.target} --replay {path}", flush=True)
    return results


_HEADER = (
    f"{'target':<16} {'seconds':>7} {'executions':>11} {'exec/s':>7} {'cov':>5} {'ft':>6} "
    f"{'corpus':>6} {'rss MB':>6}  result"
)


def _row(r: Result) -> str:
    verdict = "CRASH" if r.crashed else "ok"
    return (
        f"{r.target:<16} {r.seconds:>7.1f} {r.executions:>11,} {r.exec_per_second:>7,} "
        f"{r.coverage:>5} {r.features:>6} {r.corpus:>6} {r.peak_rss_mb:>6}  {verdict}"
    )
