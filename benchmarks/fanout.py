"""``python -m benchmarks fanout``: a chat room across nodes, on memory://, Redis and NATS.

Serves ``protocols.chat`` three ways in one run and loads each the same way
from outside, with plain sockets (:mod:`benchmarks.fanout_load`): a room of
M members (``--members``, default 200) of which S send (``--senders``),
members spread round robin over the nodes.

* ``memory, 1 process``: one ``wirekit serve protocols.chat`` (the baseline);
* ``redis, 2 nodes`` and ``nats, 2 nodes``: two ``wirekit serve ...
  --backplane URL`` processes on a redis-server / nats-server the benchmark
  starts on free loopback ports. They are what ``--workers 2`` runs (two
  processes, one node each) on two known ports, so that every member's
  node, and so every latency's kind (same node, cross node), is known.

For each, the sending rate climbs by ``--step`` from ``--start-rate`` lines
a second (after halving it until one keeps up) until the room no longer
keeps up: fewer than 97% of the expected deliveries in the window (a
backlog that grows), or a member disconnected. The best rate that kept up
is the capacity, in deliveries (lines received by members) per second. Then
every scenario runs at half the baseline's capacity, the same absolute
load, and reports latency percentiles (cross-node ones for the brokers)
and the broker messages per published line: Redis counts its
commands (``INFO commandstats``), NATS its incoming messages (``/varz``).
Ratios are to the baseline of the same run.

The machine's other load moves these numbers: on a shared machine, run it
twice and compare, or run it on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.fanout_load import Room, WindowResult

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
#: A step keeps up when at least this share of the expected lines arrived.
KEEP_UP = 0.97


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child, before exec
    """Linux: the kernel SIGKILLs the broker if the benchmark process dies first."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise SystemExit(f"{name} is not installed (apt-get install {name})")
    return found


class Broker:
    """A redis-server or nats-server of the benchmark's own, with its message counter."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = _free_port()
        if kind == "redis":
            args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--loglevel", "warning"]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            self.monitor = _free_port()
            args = ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
            self.url = f"nats://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [_program(f"{kind}-server"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Linux: the broker dies with the benchmark, however that ends.
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.messages()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{kind}-server did not start") from None
                time.sleep(0.02)

    def messages(self) -> int:
        """Commands (Redis) or messages in (NATS) the broker has handled so far."""
        if self.kind == "nats":
            url = f"http://127.0.0.1:{self.monitor}/varz"
            with urllib.request.urlopen(url, timeout=2) as reply:
                return int(json.load(reply)["in_msgs"])
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"INFO commandstats\r\n")
            data = b""
            while b"\r\n" not in data:
                data += sock.recv(65536)
            header, _, data = data.partition(b"\r\n")
            size = int(header[1:])  # a bulk string: $<size>
            while len(data) < size:
                data += sock.recv(65536)
        calls = re.findall(rb"cmdstat_(\w+):calls=(\d+)", data)
        # The INFO command itself is not the backplane's.
        return sum(int(count) for name, count in calls if name != b"info")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def _chat_nodes(
    count: int, backplane: str | None, uvloop: bool
) -> Iterator[tuple[list[int], list[int]]]:
    """``count`` chat processes; yields their ports and PIDs, and always stops them."""
    procs: list[subprocess.Popen[str]] = []
    try:
        ports = []
        for _ in range(count):
            args = [sys.executable, "-m", "framework", "serve", "protocols.chat"]
            args += ["--url", "tcp://127.0.0.1:0"]
            if backplane is not None:
                args += ["--backplane", backplane]
            if not uvloop:
                args.append("--no-uvloop")
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            procs.append(proc)
            assert proc.stdout is not None
            match = re.search(r"tcp://127\.0\.0\.1:(\d+)", proc.stdout.readline())
            if match is None:
                raise RuntimeError("wirekit serve protocols.chat did not start")
            ports.append(int(match.group(1)))
        yield ports, [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cpu(processes: list[psutil.Process]) -> float:
    """CPU seconds (user and system) the processes have used so far."""
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1e6


def _expected(result: WindowResult, members: int) -> int:
    return result.lines_sent * (members - 1)


def _keeps_up(result: WindowResult, members: int) -> bool:
    # Deliveries, not latency: on a shared machine a scheduling hiccup puts
    # a p99 in the hundreds of milliseconds at any load, while a node that
    # cannot keep up falls behind the expected count within the window.
    return result.disconnected == 0 and result.deliveries >= KEEP_UP * _expected(result, members)


def _search(room: Room, label: str, args: argparse.Namespace, row: dict[str, Any]) -> float:
    """The most deliveries/s the room kept up with: halve the rate until one
    keeps up, then climb by ``--step`` until one does not."""
    rate, best, found = args.start_rate, 0.0, False
    for _ in range(args.max_steps):
        result = room.run(rate, args.warmup, args.duration)
        per_second = result.deliveries / args.duration
        ok = _keeps_up(result, args.members)
        p99 = _percentile(result.cross_node_ns or result.same_node_ns, 0.99)
        row["steps"].append(
            {
                "rate": rate,
                "deliveries_per_second": per_second,
                "expected_per_second": _expected(result, args.members) / args.duration,
                "p99_ms": p99,
                "disconnected": result.disconnected,
                "ok": ok,
            }
        )
        print(
            f"  {label}: {rate:,.0f} lines/s -> {per_second:,.0f} deliveries/s "
            f"(of {_expected(result, args.members) / args.duration:,.0f}), p99 "
            f"{p99 if p99 is None else f'{p99:.1f}'} ms"
            f"{'' if ok else ', does not keep up'}",
            file=sys.stderr,
            flush=True,
        )
        if ok:
            best, found = max(best, per_second), True
            rate *= args.step
        elif found:
            break
        else:
            rate /= 2
            _settle(room, rate, args)
    return best


def _settle(room: Room, rate: float, args: argparse.Namespace) -> None:
    """Wait, at ``rate``, until the backlog of the last step that failed has drained."""
    for _ in range(40):
        result = room.run(rate, 0.0, 0.5)
        if result.deliveries <= 1.05 * _expected(result, args.members):
            return


def _scenario(
    label: str, broker: Broker | None, nodes: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The capacity, then latency and broker messages at half the baseline's capacity.

    The first scenario is the baseline: its capacity sets ``args.half_rate``.
    """
    row: dict[str, Any] = {"scenario": label, "steps": []}
    backplane = broker.url if broker is not None else None
    with _chat_nodes(nodes, backplane, not args.no_uvloop) as (ports, pids):
        servers = [psutil.Process(pid) for pid in pids]
        clients: list[psutil.Process] = []
        brokers = [psutil.Process(broker.process.pid)] if broker is not None else []
        room = Room(ports, args.members, args.senders, args.processes, args.observers)
        clients = [psutil.Process(proc.pid) for proc in room.procs]
        try:
            room.run(args.start_rate / 4, 0.5, 0.5)  # every member joined and warm
            # --rate: the latency phase only, at that rate (no capacity search).
            row["deliveries_per_second"] = (
                _search(room, label, args, row) if args.rate is None else None
            )
            if args.half_rate is None:
                # Half the baseline's deliveries, as lines a second.
                args.half_rate = max(1.0, row["deliveries_per_second"] / 2 / (args.members - 1))
            _settle(room, args.half_rate, args)
            before = broker.messages() if broker is not None else 0
            cpu_before = _cpu(servers), _cpu(brokers), _cpu(clients)
            result = room.run(args.half_rate, args.warmup, args.duration)
            cpu_after = _cpu(servers), _cpu(brokers), _cpu(clients)
            after = broker.messages() if broker is not None else 0
            # CPU spans warm-up and window alike: per delivery over both.
            deliveries = result.deliveries * (args.warmup + args.duration) / args.duration
            latencies = result.cross_node_ns if nodes > 1 else result.same_node_ns
            row["half_load"] = {
                "rate": args.half_rate,
                "deliveries_per_second": result.deliveries / args.duration,
                "p50_ms": _percentile(latencies, 0.5),
                "p99_ms": _percentile(latencies, 0.99),
                "samples": len(latencies),
                "server_cpu_us_per_delivery": (cpu_after[0] - cpu_before[0]) / deliveries * 1e6,
                "broker_cpu_us_per_delivery": (cpu_after[1] - cpu_before[1]) / deliveries * 1e6,
                "load_generator_cpu_us_per_delivery": (cpu_after[2] - cpu_before[2])
                / deliveries
                * 1e6,
                # Lines sent in the warm-up hit the broker too: count them all.
                "broker_messages_per_publish": (
                    (after - before) / (args.half_rate * (args.warmup + args.duration))
                    if broker is not None
                    else None
                ),
            }
        finally:
            room.close()
    return row


def _cpu_cell(half: dict[str, Any]) -> str:
    server = half.get("server_cpu_us_per_delivery")
    if server is None:
        return "-"
    broker = half.get("broker_cpu_us_per_delivery") or 0.0
    return f"{server:.1f} + {broker:.1f}" if broker else f"{server:.1f}"


def _print(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = rows[0]["deliveries_per_second"] or 1.0
    searched = args.rate is None
    print(
        f"\nchat room of {args.members} members ({args.senders} senders), {os.cpu_count()} cores; "
        f"latency at {args.half_rate:,.0f} lines/s "
        + ("(half the baseline's capacity)" if searched else "(--rate: no capacity search)")
    )
    print(
        f"{'scenario':<20} {'deliveries/s':>12} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'broker msgs/publish':>20} {'CPU µs/delivery':>16}"
    )
    for row in rows:
        half = row.get("half_load", {})
        per = half.get("broker_messages_per_publish")
        p50, p99 = half.get("p50_ms"), half.get("p99_ms")
        capacity = row["deliveries_per_second"]
        print(
            f"{row['scenario']:<20} {'-' if capacity is None else f'{capacity:,.0f}':>12} "
            f"{'-' if capacity is None else f'{capacity / base:.2f}':>6} "
            f"{p50 if p50 is None else f'{p50:.2f}':>7} {p99 if p99 is None else f'{p99:.2f}':>7} "
            f"{'-' if per is None else f'{per:.2f}':>20} "
            f"{_cpu_cell(half):>16}"
        )
    print("latency: cross-node for the 2-node rows, same-node for memory://")
    print(
        "CPU µs/delivery: the wirekit nodes (+ the broker) at the half load, all processes summed"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the three scenarios; print the table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--members", type=int, default=200, help="room size, senders included")
    parser.add_argument("--senders", type=int, default=4, help="members that send")
    parser.add_argument("--processes", type=int, default=2, help="member processes")
    parser.add_argument("--observers", type=int, default=3, help="latency observers per node")
    parser.add_argument("--start-rate", type=float, default=200.0, help="first rate, lines/s")
    parser.add_argument("--step", type=float, default=1.25, help="rate growth per step")
    parser.add_argument("--max-steps", type=int, default=12, help="steps per scenario at most")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per step")
    parser.add_argument(
        "--rate",
        type=float,
        help="skip the capacity search: measure latency at this many lines/s only",
    )
    parser.add_argument("--only", choices=("redis", "nats"), help="one broker besides memory://")
    parser.add_argument("--no-uvloop", action="store_true", help="serve on asyncio's own loop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.half_rate = args.rate
    rows = [_scenario("memory, 1 process", None, 1, args)]
    for kind in [args.only] if args.only else ["redis", "nats"]:
        broker = Broker(kind)
        try:
            rows.append(_scenario(f"{kind}, 2 nodes", broker, 2, args))
        finally:
            broker.stop()
    _print(rows, args)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "time": time.time(),
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
