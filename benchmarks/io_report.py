"""Results of the I/O benchmark: the measured runs, the printed table, the goals, the JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from benchmarks.io_scenarios import GOALS, Goal, Scenario
from benchmarks.io_servers import ServerSpec
from benchmarks.report import environment

__all__ = ["IoSettings", "Run", "ScenarioResult", "ServerResult", "format_report", "to_json"]

# Above this spread between runs of one server its numbers are flagged as disturbed.
NOISY_SPREAD = 0.15


@dataclass(frozen=True)
class IoSettings:
    """How long and how often each server is loaded."""

    repeats: int
    duration: float  # seconds measured per run
    warmup: float  # seconds of load before the measured window
    profile: bool = False


@dataclass(frozen=True)
class Run:
    """One measured run of one server."""

    messages: int
    seconds: float
    server_cpu: float  # CPU seconds of the server process in the window
    client_cpu: float  # CPU seconds of the load generator's workers in the window
    machine_busy: float  # CPU seconds of the whole machine in the window
    p50_us: float | None = None
    p99_us: float | None = None
    lost: int = 0
    steal: float = 0.0  # CPU seconds the hypervisor gave to other guests in the window

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds

    @property
    def cpu_per_message_us(self) -> float | None:
        """Server CPU microseconds per message."""
        return self.server_cpu / self.messages * 1e6 if self.messages else None

    @property
    def other_load(self) -> float:
        """Cores busy with anything but this server and the load generator (steal excluded)."""
        busy = self.machine_busy - self.steal - self.server_cpu - self.client_cpu
        return max(0.0, busy) / self.seconds


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@dataclass
class ServerResult:
    """Every run of one server in one scenario, or why it has none."""

    spec: ServerSpec
    runs: list[Run] = field(default_factory=list)
    peak_rss: int | None = None
    status: str | None = None  # "not installed", "error: ..."

    @property
    def ok(self) -> bool:
        """Whether there is at least one measured run."""
        return bool(self.runs) and self.status is None

    @property
    def rate(self) -> float:
        """Median messages per second."""
        return statistics.median(run.rate for run in self.runs)

    @property
    def spread(self) -> float:
        """(fastest - slowest) / median rate over the runs."""
        rates = [run.rate for run in self.runs]
        return (max(rates) - min(rates)) / self.rate if self.rate else 0.0

    @property
    def cpu_per_message_us(self) -> float | None:
        """Median server CPU microseconds per message."""
        return _median([run.cpu_per_message_us for run in self.runs])

    @property
    def cpu_share(self) -> float:
        """Median fraction of one core the server used."""
        return statistics.median(run.server_cpu / run.seconds for run in self.runs)

    @property
    def p50_us(self) -> float | None:
        """Median over runs of the p50 latency."""
        return _median([run.p50_us for run in self.runs])

    @property
    def p99_us(self) -> float | None:
        """Median over runs of the p99 latency."""
        return _median([run.p99_us for run in self.runs])


@dataclass
class ScenarioResult:
    """The servers of one scenario, the wirekit one first."""

    scenario: Scenario
    servers: dict[str, ServerResult]

    @property
    def wirekit(self) -> ServerResult:
        """The wirekit server's result."""
        return self.servers[self.scenario.wirekit.key]

    def ratio(self, peer: ServerResult) -> float | None:
        """wirekit's median rate over ``peer``'s."""
        if not (self.wirekit.ok and peer.ok) or not peer.rate:
            return None
        return self.wirekit.rate / peer.rate

    def paired_ratio(self, peer: ServerResult) -> float | None:
        """Median of run-by-run ratios (runs of a round are moments apart)."""
        if not (self.wirekit.ok and peer.ok):
            return None
        pairs = zip(self.wirekit.runs, peer.runs, strict=False)
        ratios = [ours.rate / theirs.rate for ours, theirs in pairs if theirs.rate]
        return statistics.median(ratios) if ratios else None

    @property
    def other_load(self) -> float | None:
        """Median cores used by other processes while this scenario ran."""
        return _median([run.other_load for s in self.servers.values() for run in s.runs])

    @property
    def steal(self) -> float | None:
        """Median cores' worth of time the hypervisor took away while this scenario ran."""
        return _median([run.steal / run.seconds for s in self.servers.values() for run in s.runs])


# -- formatting ------------------------------------------------------------------------------


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


_COLUMNS = (
    ("server", 40, "<"),
    ("msg/s", 7, ">"),
    ("MB/s", 6, ">"),
    ("p50 us", 7, ">"),
    ("p99 us", 7, ">"),
    ("CPU us/msg", 10, ">"),
    ("CPU", 5, ">"),
    ("peak RSS", 9, ">"),
    ("spread", 6, ">"),
    ("wk/this", 7, ">"),
    ("paired", 6, ">"),
)


def _row(cells: tuple[str, ...]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def _server_row(result: ScenarioResult, server: ServerResult) -> str:
    label = server.spec.label[:40]
    if not server.ok:
        return _row((label, server.status or "no run", *[""] * (len(_COLUMNS) - 2)))
    is_wirekit = server is result.wirekit
    rss = f"{server.peak_rss / 2**20:.1f} MiB" if server.peak_rss else "-"
    return _row(
        (
            label,
            _rate(server.rate),
            f"{server.rate * result.scenario.frame_bytes / 1e6:.1f}",
            _num(server.p50_us, ".0f"),
            _num(server.p99_us, ".0f"),
            _num(server.cpu_per_message_us, ".2f"),
            f"{server.cpu_share:.0%}",
            rss,
            f"{server.spread:.0%}",
            "" if is_wirekit else _ratio(result.ratio(server)),
            "" if is_wirekit else _ratio(result.paired_ratio(server)),
        )
    )


def _goal_line(goal: Goal, by_key: dict[str, ScenarioResult]) -> str:
    ours = by_key.get(goal.scenario)
    theirs = by_key.get(goal.peer_scenario or goal.scenario)
    if ours is None or theirs is None or goal.peer not in theirs.servers:
        return f"  {goal.title}: not measured (scenario not run)"
    peer = theirs.servers[goal.peer]
    wirekit = ours.wirekit
    if not peer.ok or not wirekit.ok:
        why = peer.status if not peer.ok else wirekit.status
        return f"  {goal.title}: not measured ({why})"
    ratio = wirekit.rate / peer.rate
    verdict = "met" if ratio >= goal.minimum else "MISSED"
    line = f"  {goal.title}: {ratio:.2f}x (goal >= {goal.minimum:.1f}x) {verdict}"
    if goal.peer_scenario is None:
        line += f"; paired {_ratio(ours.paired_ratio(peer))}"
    ours_cpu, theirs_cpu = wirekit.cpu_per_message_us, peer.cpu_per_message_us
    if ours_cpu and theirs_cpu:
        line += f"; CPU/msg {ours_cpu:.2f} vs {theirs_cpu:.2f} us ({theirs_cpu / ours_cpu:.2f}x)"
    return line


def goal_verdicts(results: list[ScenarioResult]) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and verdict (``None`` where not measured)."""
    by_key = {result.scenario.key: result for result in results}
    out = []
    for goal in GOALS:
        ours = by_key.get(goal.scenario)
        theirs = by_key.get(goal.peer_scenario or goal.scenario)
        ratio = None
        if ours is not None and theirs is not None and goal.peer in theirs.servers:
            peer = theirs.servers[goal.peer]
            if peer.ok and ours.wirekit.ok:
                ratio = ours.wirekit.rate / peer.rate
        out.append(
            {
                "title": goal.title,
                "scenario": goal.scenario,
                "peer": goal.peer,
                "peer_scenario": goal.peer_scenario or goal.scenario,
                "minimum": goal.minimum,
                "ratio": ratio,
                "met": None if ratio is None else ratio >= goal.minimum,
            }
        )
    return out


def format_report(results: list[ScenarioResult], env: dict[str, Any], settings: IoSettings) -> str:
    """The human-readable report: a table per scenario, the goals, how noisy it was."""
    commit = (env["git_commit"] or "unknown")[:10]
    if env["framework_modified"]:
        commit += " + uncommitted framework/ changes"
    lines = [
        f"wirekit {env['wirekit_version']} I/O benchmark  (commit {commit})",
        f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs; "
        f"load average {env['loadavg_start']} at start",
        f"{settings.repeats} run(s) of {settings.duration:g} s per server per scenario after "
        f"{settings.warmup:g} s of warm-up, servers interleaved round by round; median shown",
        "load generator: plain blocking/non-blocking sockets in separate processes, 127.0.0.1",
        "CPU us/msg = server process user+system CPU / messages; CPU = share of one core the "
        "server used (~100%: the server is the bottleneck)",
        "wk/this = wirekit msg/s / this server's msg/s; paired = median of run-by-run ratios",
    ]
    if settings.profile:
        lines.append("PROFILING: wirekit servers ran under cProfile; their numbers are slowed")
    for result in results:
        scenario = result.scenario
        lines += ["", f"{scenario.key}: {scenario.title}"]
        lines.append(_row(tuple(name for name, _, _ in _COLUMNS)))
        lines.append(_row(tuple("-" * width for _, width, _ in _COLUMNS)))
        lines += [_server_row(result, server) for server in result.servers.values()]
        lost = sum(run.lost for server in result.servers.values() for run in server.runs)
        if lost:
            lines.append(f"  ({lost} datagrams presumed lost and resent, all servers together)")
    by_key = {result.scenario.key: result for result in results}
    goals = [goal for goal in GOALS if goal.scenario in by_key]
    if goals:
        lines += ["", "Goals (issue 5; judged on the ratio of median msg/s):"]
        lines += [_goal_line(goal, by_key) for goal in goals]
    lines += ["", "Noise:"]
    for result in results:
        spreads = [s.spread for s in result.servers.values() if s.ok and len(s.runs) > 1]
        other = result.other_load
        lines.append(
            f"  {result.scenario.key}: other processes used {_num(other, '.2f')} cores, "
            f"steal {_num(result.steal, '.2f')} (medians over runs)"
            + (f"; worst spread between runs {max(spreads):.0%}" if spreads else "")
        )
    lines.append(f"  load average {env['loadavg_start']} at start, {env['loadavg_end']} at end")
    noisy = [
        f"{result.scenario.key}/{server.spec.key}"
        for result in results
        for server in result.servers.values()
        if server.ok and len(server.runs) > 1 and server.spread > NOISY_SPREAD
    ]
    if noisy:
        lines.append(
            f"  runs spread over {NOISY_SPREAD:.0%}: {', '.join(noisy)}; trust the paired "
            "ratios more there, or re-run on a quiet machine"
        )
    return "\n".join(lines)


# -- JSON ----------------------------------------------------------------------------------------


def io_environment() -> dict[str, Any]:
    """The core suite's environment, plus the optional benchmark packages."""
    env = environment()
    for name in ("twisted", "psutil", "uvloop"):
        try:
            env["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env["packages"][name] = None
    return env


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "messages": run.messages,
        "seconds": run.seconds,
        "messages_per_s": run.rate,
        "server_cpu_s": run.server_cpu,
        "server_cpu_per_message_us": run.cpu_per_message_us,
        "client_cpu_s": run.client_cpu,
        "machine_busy_cpu_s": run.machine_busy,
        "other_load_cores": run.other_load,
        "steal_cpu_s": run.steal,
        "p50_us": run.p50_us,
        "p99_us": run.p99_us,
        "lost": run.lost,
    }


def to_json(
    results: list[ScenarioResult], env: dict[str, Any], settings: IoSettings
) -> dict[str, Any]:
    """Everything measured, as a JSON-ready dict."""
    scenarios = []
    for result in results:
        servers = {}
        for key, server in result.servers.items():
            entry: dict[str, Any] = {
                "label": server.spec.label,
                "command": " ".join(server.spec.command()[1:]),
                "wirekit": server.spec.wirekit,
                "status": server.status,
                "peak_rss_bytes": server.peak_rss,
                "runs": [_run_json(run) for run in server.runs],
            }
            if server.ok:
                entry.update(
                    messages_per_s=server.rate,
                    spread=server.spread,
                    server_cpu_per_message_us=server.cpu_per_message_us,
                    server_cpu_share=server.cpu_share,
                    p50_us=server.p50_us,
                    p99_us=server.p99_us,
                    wirekit_ratio=None if server is result.wirekit else result.ratio(server),
                    wirekit_ratio_paired=(
                        None if server is result.wirekit else result.paired_ratio(server)
                    ),
                )
            servers[key] = entry
        load = result.scenario.load
        scenarios.append(
            {
                "key": result.scenario.key,
                "title": result.scenario.title,
                "load": {
                    "shape": load.shape,
                    "batch_bytes": len(load.batch),
                    "messages_per_batch": load.messages_per_batch,
                    "window": load.window,
                    "connections": load.connections,
                    "processes": load.processes,
                },
                "frame_bytes": result.scenario.frame_bytes,
                "wirekit_server": result.scenario.wirekit.key,
                "other_load_cores": result.other_load,
                "steal_cores": result.steal,
                "servers": servers,
            }
        )
    return {
        "suite": "io",
        "environment": env,
        "settings": {
            "repeats": settings.repeats,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "profile": settings.profile,
            "statistic": "median over runs",
        },
        "scenarios": scenarios,
        "goals": goal_verdicts(results),
    }
