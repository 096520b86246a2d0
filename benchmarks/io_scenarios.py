"""The I/O scenarios: what the load generator sends, and which servers receive it.

Each scenario puts the same load on wirekit and on its peers; the first
server of a scenario is the wirekit one its ratios are taken from. The
goals of issue 5 are :data:`GOALS`: a wirekit/peer throughput ratio that
must be reached, possibly across scenarios (typed position echo against
Twisted's raw figure).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import msgpack

from benchmarks import workloads
from benchmarks.io_load import Load
from benchmarks.io_servers import ServerSpec

__all__ = ["GOALS", "Goal", "Scenario", "build_scenarios"]

SMALL_FRAME = 56  # bytes on the wire: 4-byte header + 52-byte payload
BATCH_FRAMES = 256
WINDOW_FRAMES = 2048
UDP_IN_FLIGHT = 64

# -- servers -------------------------------------------------------------------------------

WIREKIT_RAW = ServerSpec(
    "wirekit",
    "wirekit (App: length-prefix, bytes)",
    "wirekit_echo.py",
    ("--app", "raw"),
    wirekit=True,
)
WIREKIT_RAW_ASYNC = ServerSpec(
    "wirekit-async",
    "wirekit, async def handler",
    "wirekit_echo.py",
    ("--app", "raw-async"),
    wirekit=True,
)
WIREKIT_POSITION = ServerSpec(
    "wirekit-position",
    "wirekit (msgpack -> Position -> msgpack)",
    "wirekit_echo.py",
    ("--app", "position"),
    wirekit=True,
)
WIREKIT_LINES = ServerSpec(
    "wirekit-lines", "wirekit (newline, utf-8)", "wirekit_echo.py", ("--app", "lines"), wirekit=True
)
WIREKIT_UDP = ServerSpec(
    "wirekit-udp", "wirekit (udp, bytes)", "wirekit_echo.py", ("--app", "udp"), wirekit=True
)
WIREKIT_RAW_UVLOOP = ServerSpec(
    "wirekit-uvloop",
    "wirekit on uvloop",
    "wirekit_echo.py",
    ("--app", "raw", "--loop", "uvloop"),
    requires="uvloop",
    wirekit=True,
)
WIREKIT_POSITION_UVLOOP = ServerSpec(
    "wirekit-position-uvloop",
    "wirekit (position) on uvloop",
    "wirekit_echo.py",
    ("--app", "position", "--loop", "uvloop"),
    requires="uvloop",
    wirekit=True,
)
WIREKIT_UDP_UVLOOP = ServerSpec(
    "wirekit-udp-uvloop",
    "wirekit (udp) on uvloop",
    "wirekit_echo.py",
    ("--app", "udp", "--loop", "uvloop"),
    requires="uvloop",
    wirekit=True,
)
WIREKIT_RAW_METRICS = ServerSpec(
    "wirekit-metrics",
    "wirekit, metrics on",
    "wirekit_echo.py",
    ("--app", "raw", "--metrics"),
    requires="prometheus_client",
    wirekit=True,
)
WIREKIT_UDP_METRICS = ServerSpec(
    "wirekit-udp-metrics",
    "wirekit (udp), metrics on",
    "wirekit_echo.py",
    ("--app", "udp", "--metrics"),
    requires="prometheus_client",
    wirekit=True,
)
ASYNCIO = ServerSpec("asyncio", "asyncio Protocol, hand-written", "asyncio_echo.py")
ASYNCIO_UVLOOP = ServerSpec(
    "asyncio-uvloop",
    "asyncio Protocol, hand-written, uvloop",
    "asyncio_echo.py",
    ("--uvloop",),
    requires="uvloop",
)
ASYNCIO_MSGPACK = ServerSpec(
    "asyncio-msgpack", "asyncio Protocol + msgpack dicts", "asyncio_echo.py", ("--msgpack",)
)
STREAMS = ServerSpec("streams", "asyncio Streams", "streams_echo.py")
THREADS = ServerSpec("threads", "thread per connection", "threads_echo.py")
TWISTED = ServerSpec(
    "twisted", "Twisted Int32StringReceiver", "twisted_echo.py", requires="twisted"
)
TWISTED_LINES = ServerSpec(
    "twisted-lines", "Twisted LineOnlyReceiver", "twisted_echo.py", ("--lines",), "twisted"
)
NEWLINE = ServerSpec("newline", "newline, hand-written", "newline_echo.py")
NEWLINE_UTF8 = ServerSpec(
    "newline-utf8", "newline + utf-8, hand-written", "newline_echo.py", ("--utf8",)
)
UDP_ASYNCIO = ServerSpec("udp-asyncio", "asyncio DatagramProtocol", "udp_echo.py")
UDP_UVLOOP = ServerSpec(
    "udp-uvloop", "asyncio DatagramProtocol, uvloop", "udp_echo.py", ("--uvloop",), "uvloop"
)
UDP_ASYNCIO_64K = ServerSpec(
    "udp-asyncio-64k",
    "asyncio DatagramProtocol, 64 KiB reads",
    "udp_echo.py",
    ("--read-size", "65536"),
)
UDP_BLOCKING = ServerSpec("udp-blocking", "blocking recvfrom loop", "udp_echo.py", ("--blocking",))

RAW_PEERS = (ASYNCIO, STREAMS, THREADS, TWISTED)


def _ws_server(impl: str, loop: str) -> ServerSpec:
    return ServerSpec(
        f"{impl}-ws" + ("-uvloop" if loop == "uvloop" else ""),
        f"{impl} ws:// echo" + (" on uvloop" if loop == "uvloop" else ""),
        "websocket_echo.py",
        ("--impl", impl, "--loop", loop),
        requires="uvloop" if loop == "uvloop" else None,
        wirekit=impl == "wirekit",
    )


WS_PAYLOAD = 32  # bytes per WebSocket message: small game or chat messages


# -- workloads -----------------------------------------------------------------------------


def raw_frames(count: int, frame_size: int, seed: int = 5) -> list[bytes]:
    """``count`` length-prefixed frames of ``frame_size`` wire bytes, random payloads."""
    rng = random.Random(seed)
    payload = frame_size - 4
    return [struct.pack(">I", payload) + rng.randbytes(payload) for _ in range(count)]


def position_frames(count: int) -> list[bytes]:
    """``count`` length-prefixed msgpack ``position`` envelopes, as wirekit encodes them."""
    frames = []
    for pos in workloads.positions(count):
        payload = msgpack.packb(
            {"type": "position", "x": pos.x, "y": pos.y, "z": pos.z, "count": pos.count}
        )
        frames.append(struct.pack(">I", len(payload)) + payload)
    return frames


def text_lines(count: int) -> list[bytes]:
    """``count`` UTF-8 lines of about 56 bytes with their ``\\n``."""
    buf, _ = workloads.text_lines(mean_size=SMALL_FRAME)
    return [line + b"\n" for line in buf.split(b"\n")[:count]]


# -- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One load, the servers it is put on, and the data that checks each one echoes."""

    key: str
    title: str
    load: Load
    servers: tuple[ServerSpec, ...]
    check: bytes  # sent once before timing; the server must echo it byte for byte
    frame_bytes: float  # mean wire bytes per message, for MB/s

    @property
    def wirekit(self) -> ServerSpec:
        """The wirekit server the ratios are taken from."""
        return self.servers[0]


def _pipelined(
    key: str, title: str, frames: list[bytes], servers: tuple[ServerSpec, ...], window: int
) -> Scenario:
    batch = b"".join(frames)
    return Scenario(
        key=key,
        title=title,
        load=Load("pipelined", batch, messages_per_batch=len(frames), window=window),
        servers=servers,
        check=batch,
        frame_bytes=len(batch) / len(frames),
    )


def _reqresp(key: str, connections: int, processes: int) -> Scenario:
    frame = raw_frames(1, SMALL_FRAME)[0]
    return Scenario(
        key=key,
        title=f"request/response, {SMALL_FRAME}-byte frames, {connections} connection"
        + ("s" if connections > 1 else "")
        + (f" over {processes} client processes" if processes > 1 else ""),
        load=Load("reqresp", frame, connections=connections, processes=processes),
        servers=(WIREKIT_RAW, *RAW_PEERS, WIREKIT_RAW_UVLOOP, ASYNCIO_UVLOOP),
        check=b"".join(raw_frames(8, SMALL_FRAME, seed=9)),
        frame_bytes=len(frame),
    )


def _metrics_scenarios(small: list[bytes], datagram: bytes) -> list[Scenario]:
    """The same wirekit echo with metrics off, then on: the ratio is what metrics cost."""
    frame = raw_frames(1, SMALL_FRAME)[0]
    return [
        _pipelined(
            "metrics-pipelined",
            f"metrics off vs on: pipelined {SMALL_FRAME}-byte frames, 1 connection",
            small,
            (WIREKIT_RAW, WIREKIT_RAW_METRICS),
            WINDOW_FRAMES * SMALL_FRAME,
        ),
        Scenario(
            key="metrics-reqresp",
            title=f"metrics off vs on: request/response, {SMALL_FRAME}-byte frames, "
            "16 connections over 2 client processes",
            load=Load("reqresp", frame, connections=16, processes=2),
            servers=(WIREKIT_RAW, WIREKIT_RAW_METRICS),
            check=b"".join(raw_frames(8, SMALL_FRAME, seed=9)),
            frame_bytes=len(frame),
        ),
        Scenario(
            key="metrics-udp",
            title=f"metrics off vs on: UDP echo, {len(datagram)}-byte datagrams",
            load=Load("udp", datagram, window=UDP_IN_FLIGHT),
            servers=(WIREKIT_UDP, WIREKIT_UDP_METRICS),
            check=datagram,
            frame_bytes=len(datagram),
        ),
    ]


def _websocket() -> Scenario:
    from benchmarks.websocket import echo_size, masked_frames

    payload = random.Random(11).randbytes(WS_PAYLOAD)
    batch = masked_frames(payload, BATCH_FRAMES)
    return Scenario(
        key="websocket",
        title=f"pipelined {WS_PAYLOAD}-byte WebSocket messages, 1 connection, "
        f"{WINDOW_FRAMES} outstanding",
        load=Load(
            "ws-pipelined",
            batch,
            messages_per_batch=BATCH_FRAMES,
            window=WINDOW_FRAMES * len(batch) // BATCH_FRAMES,
            reply_size=BATCH_FRAMES * echo_size(payload),
        ),
        servers=tuple(
            _ws_server(impl, loop)
            for loop in ("asyncio", "uvloop")
            for impl in ("wirekit", "websockets")
        ),
        check=payload,
        frame_bytes=len(batch) / BATCH_FRAMES,
    )


def build_scenarios() -> list[Scenario]:
    """Every scenario, in report order."""
    small = raw_frames(BATCH_FRAMES, SMALL_FRAME)
    positions = position_frames(BATCH_FRAMES)
    lines = text_lines(BATCH_FRAMES)
    line_bytes = sum(map(len, lines)) / len(lines)
    datagram = random.Random(7).randbytes(SMALL_FRAME)
    kib64 = raw_frames(1, 64 * 1024)
    mib1 = raw_frames(1, 1024 * 1024)
    return [
        _pipelined(
            "pipelined-raw",
            f"pipelined {SMALL_FRAME}-byte frames, 1 connection, "
            f"{WINDOW_FRAMES} frames outstanding",
            small,
            (WIREKIT_RAW, *RAW_PEERS, WIREKIT_RAW_ASYNC, WIREKIT_RAW_UVLOOP, ASYNCIO_UVLOOP),
            WINDOW_FRAMES * SMALL_FRAME,
        ),
        _pipelined(
            "pipelined-position",
            f"pipelined typed position messages ({len(positions[0])}-byte frames), 1 connection",
            positions,
            (WIREKIT_POSITION, ASYNCIO_MSGPACK, WIREKIT_POSITION_UVLOOP),
            WINDOW_FRAMES * len(positions[0]),
        ),
        _reqresp("reqresp-1", 1, 1),
        _reqresp("reqresp-16", 16, 2),
        _pipelined(
            "lines",
            f"pipelined text lines (~{line_bytes:.0f} bytes, utf-8), 1 connection",
            lines,
            (WIREKIT_LINES, NEWLINE_UTF8, NEWLINE, TWISTED_LINES),
            int(WINDOW_FRAMES * line_bytes),
        ),
        Scenario(
            key="udp",
            title=f"UDP echo, {len(datagram)}-byte datagrams, {UDP_IN_FLIGHT} in flight",
            load=Load("udp", datagram, window=UDP_IN_FLIGHT),
            servers=(
                WIREKIT_UDP,
                UDP_ASYNCIO,
                UDP_ASYNCIO_64K,
                UDP_BLOCKING,
                WIREKIT_UDP_UVLOOP,
                UDP_UVLOOP,
            ),
            check=datagram,
            frame_bytes=len(datagram),
        ),
        _pipelined(
            "large-64k",
            "pipelined 64 KiB frames, 1 connection, 16 outstanding",
            kib64,
            (WIREKIT_RAW, *RAW_PEERS),
            16 * len(kib64[0]),
        ),
        _pipelined(
            "large-1m",
            "pipelined 1 MiB frames, 1 connection, 4 outstanding",
            mib1,
            (WIREKIT_RAW, *RAW_PEERS),
            4 * len(mib1[0]),
        ),
        *_metrics_scenarios(small, datagram),
        _websocket(),
    ]


# -- goals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """wirekit's throughput in ``scenario`` over ``peer``'s in ``peer_scenario`` >= ``minimum``."""

    title: str
    scenario: str
    peer: str
    minimum: float
    peer_scenario: str | None = None  # default: the same scenario


GOALS = (
    Goal("raw bytes echo, pipelined vs hand-written asyncio", "pipelined-raw", "asyncio", 0.7),
    Goal("raw bytes echo, pipelined vs Twisted", "pipelined-raw", "twisted", 2.5),
    Goal(
        "typed position echo vs hand-written asyncio + msgpack",
        "pipelined-position",
        "asyncio-msgpack",
        0.6,
    ),
    Goal(
        "typed position echo vs Twisted raw bytes echo",
        "pipelined-position",
        "twisted",
        1.0,
        peer_scenario="pipelined-raw",
    ),
    Goal("request/response, 16 connections vs hand-written asyncio", "reqresp-16", "asyncio", 0.9),
    Goal("request/response, 16 connections vs Twisted", "reqresp-16", "twisted", 1.5),
    Goal("UDP echo vs asyncio DatagramProtocol", "udp", "udp-asyncio", 2.0),
    Goal(
        "WebSocket echo vs the websockets library's own asyncio server",
        "websocket",
        "websockets-ws",
        0.8,
    ),
)
