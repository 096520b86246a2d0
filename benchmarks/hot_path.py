"""The read path in one process: ``python -m benchmarks hot-path``.

The loopback benchmark (``python -m benchmarks io``) shares two cores between
the server, the load generator and the kernel, and its ratios move by tens of
percent from one run to the next. This one takes the sockets away: a wirekit
``StreamConnection`` and the hand-written asyncio ``Protocol`` of
``benchmarks/peers/asyncio_echo.py`` (loaded from that script) are handed the same reads through
``data_received`` and write into the same null transport, so what is left is
exactly the Python work each does per read. It is steady enough to measure a
change of a few percent (best of several samples, interleaved), which is what
the hot path needs between loopback runs.

The wirekit side is built with the public API (``App``, ``Pipeline``) and runs
the same server-side connection ``App.start`` would make (frame timeout and
all); only the socket is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import importlib
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.workloads import Position
from framework import App, Pipeline
from framework.core.connection import Role
from framework.core.limits import Limits
from framework.runtime.logs import LogLimiter
from framework.runtime.metrics import HandlerTimes, ListenerMetrics
from framework.runtime.stream import StreamConnection, TimedStreamConnection

__all__ = ["main"]

HEADER = struct.Struct(">I")
PEERS = Path(__file__).resolve().parent / "peers"


class NullTransport(asyncio.Transport):
    """A socket transport that counts what is written and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0
        self._sock = socket.socket()  # only for get_extra_info("socket")

    def write(self, data: Any) -> None:
        self.writes += 1
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            return ("127.0.0.1", 40000)
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        self._sock.close()


def _peer_protocols() -> tuple[
    type[asyncio.Protocol], type[asyncio.Protocol], type[asyncio.Protocol]
]:
    """The loopback benchmark's hand-written echo classes, from their script."""
    # The peer scripts import their helper as a top-level module (they are
    # run as scripts): put their folder on the path for them.
    folder = str(PEERS)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module("asyncio_echo")
    lines = importlib.import_module("newline_echo")
    return module.Echo, module.MsgpackEcho, lines.TextLines


HandWritten, HandWrittenMsgpack, HandWrittenLines = _peer_protocols()


def _raw_app() -> App:
    app = App(Pipeline(framing="length-prefix", codecs="bytes"))

    @app.on(bytes)
    def echo(value: bytes, conn: Any) -> bytes:
        return value

    return app


def _lines_app() -> App:
    app = App(Pipeline(framing="newline", codecs="utf-8"))

    @app.on(str)
    def line(text: str, conn: Any) -> str:
        return text

    return app


def _typed_app() -> App:
    app = App(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position]))

    @app.on(Position)
    def moved(msg: Position, conn: Any) -> Position:
        return msg

    return app


@dataclass(frozen=True)
class Scenario:
    """Reads handed to both servers, and how to build each."""

    key: str
    title: str
    reads: list[bytes]
    frames: int  # frames in all the reads
    wirekit: Callable[[], App]
    baseline: type[asyncio.Protocol]
    metrics: bool = False  # a served connection with metrics on (handlers timed)


def _scenarios() -> list[Scenario]:
    raw = HEADER.pack(52) + b"x" * 52  # a 56-byte frame, as in the loopback run
    position = Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position]).encode(
        Position(1.5, 0.0, -2.0, 7)
    )
    # A ~59-byte line, as in the loopback run's text-line scenario.
    line = "the quick brown fox jumps over the lazy dog, once more: é 0042\n".encode()
    return [
        Scenario(
            "raw-100", "raw, 100 frames per read", [raw * 100] * 100, 10_000, _raw_app, HandWritten
        ),
        Scenario("raw-1", "raw, 1 frame per read", [raw] * 5_000, 5_000, _raw_app, HandWritten),
        Scenario(
            "raw-100-metrics",
            "raw, 100 per read, metrics on",
            [raw * 100] * 100,
            10_000,
            _raw_app,
            HandWritten,
            metrics=True,
        ),
        Scenario(
            "raw-1-metrics",
            "raw, 1 per read, metrics on",
            [raw] * 5_000,
            5_000,
            _raw_app,
            HandWritten,
            metrics=True,
        ),
        Scenario(
            "position-100",
            "typed position, 100 per read",
            [position * 100] * 20,
            2_000,
            _typed_app,
            HandWrittenMsgpack,
        ),
        Scenario(
            "position-1",
            "typed position, 1 per read",
            [position] * 2_000,
            2_000,
            _typed_app,
            HandWrittenMsgpack,
        ),
        Scenario(
            "lines-100",
            "text lines, 100 per read",
            [line * 100] * 50,
            5_000,
            _lines_app,
            HandWrittenLines,
        ),
        Scenario(
            "lines-1", "text lines, 1 per read", [line] * 5_000, 5_000, _lines_app, HandWrittenLines
        ),
        # A read over the default 64 KiB line limit, as a loopback run's reads
        # are (about 75 KB): the limit checks take another path there.
        Scenario(
            "lines-1200",
            "text lines, 1,200 per read",
            [line * 1_200] * 5,
            6_000,
            _lines_app,
            HandWrittenLines,
        ),
    ]


def _wirekit_protocol(app: App, metrics: bool = False) -> StreamConnection:
    # What the server's factory builds (see framework.runtime.server), minus
    # the admission callbacks' bookkeeping; with metrics, the listener's
    # counters and handler timing a served connection gets.
    listener = ListenerMetrics("tcp://127.0.0.1:9000", app.pipeline.messages)
    listener.times = HandlerTimes()

    def made(conn: StreamConnection) -> bool:
        if metrics:
            conn._served(LogLimiter(logging.getLogger("wirekit.server")), listener)
        return True

    kind = TimedStreamConnection if metrics else StreamConnection
    return kind(
        app.pipeline,
        router=app,
        limits=Limits(),
        on_made=made,
        on_lost=lambda conn: None,
        role=Role.SERVER,
    )


def _time_reads(protocol: asyncio.Protocol, reads: list[bytes]) -> tuple[float, NullTransport]:
    transport = NullTransport()
    protocol.connection_made(transport)
    feed = protocol.data_received  # type: ignore[attr-defined]
    gc.disable()
    try:
        start = time.perf_counter()
        for data in reads:
            feed(data)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        transport.close()
    return elapsed, transport


async def _measure(scenario: Scenario, samples: int) -> tuple[float, float]:
    app = scenario.wirekit()
    best_wk = best_hw = float("inf")
    for _ in range(samples):
        # Interleaved, so a slow patch of the machine hits both sides alike.
        elapsed, wk_out = _time_reads(_wirekit_protocol(app, scenario.metrics), scenario.reads)
        best_wk = min(best_wk, elapsed)
        elapsed, hw_out = _time_reads(scenario.baseline(), scenario.reads)
        best_hw = min(best_hw, elapsed)
        if wk_out.written != hw_out.written:
            raise AssertionError(
                f"{scenario.key}: wirekit wrote {wk_out.written} bytes, "
                f"the hand-written echo {hw_out.written}"
            )
    return best_wk / scenario.frames, best_hw / scenario.frames


async def _run_side(key: str, side: str, repeat: int) -> None:
    scenario = {s.key: s for s in _scenarios()}[key]
    make: Callable[[], asyncio.Protocol]
    if side == "wirekit":
        app = scenario.wirekit()
        make = lambda: _wirekit_protocol(app, scenario.metrics)  # noqa: E731
    else:
        make = scenario.baseline
    for _ in range(repeat):
        _time_reads(make(), scenario.reads)


_COLLECTED = re.compile(r"Collected : (\d+)")


def _instructions(key: str, side: str, repeat: int) -> int:
    """Instructions callgrind counts for a whole process that runs ``repeat`` passes."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.hot_path",
        "--run",
        key,
        side,
        str(repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    match = _COLLECTED.search(done.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def _count(scenario: Scenario) -> tuple[float, float]:
    # Two processes per side, one pass and three passes over the reads: the
    # difference is two passes' work, without start-up, imports or warm-up.
    # Counts do not depend on what else runs, so the four run side by side.
    runs = [(side, repeat) for side in ("wirekit", "hand") for repeat in (1, 3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(
            zip(runs, pool.map(lambda run: _instructions(scenario.key, *run), runs), strict=True)
        )
    wirekit, hand = (
        (counts[side, 3] - counts[side, 1]) / (2 * scenario.frames) for side in ("wirekit", "hand")
    )
    return wirekit, hand


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print the cost per frame and the ratio for each."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks hot-path", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--samples", type=int, default=15, help="samples per side (best is kept)")
    parser.add_argument("--only", metavar="TEXT", help="only the scenarios whose key contains TEXT")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under valgrind's callgrind instead of timing "
        "(repeatable whatever else the machine does; needs valgrind, ~1 minute)",
    )
    parser.add_argument("--run", nargs=3, metavar=("KEY", "SIDE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run is not None:
        key, side, repeat = args.run
        asyncio.run(_run_side(key, side, int(repeat)))
        return 0
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (apt-get install valgrind)")
    scenarios = [s for s in _scenarios() if args.only is None or args.only in s.key]
    unit = "instr" if args.instructions else "ns"
    print(f"{'scenario':32} {'wirekit ' + unit:>14} {'hand ' + unit:>12} {'ratio':>7}")
    for scenario in scenarios:
        if args.instructions:
            wk, hw = _count(scenario)
        else:
            wk, hw = asyncio.run(_measure(scenario, args.samples))
            wk, hw = wk * 1e9, hw * 1e9
        print(f"{scenario.title:32} {wk:14,.0f} {hw:12,.0f} {hw / wk:6.2f}x")
    print(f"ratio: the hand-written echo's {unit} per frame over wirekit's (its throughput ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
