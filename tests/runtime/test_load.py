"""Load on loopback: many peers at once, every reply checked, every datagram accounted for.

The server is a wirekit App in this process (so the test reads its counters);
the clients are ``python -m benchmarks.soak`` in a child process: plain
``epoll`` sockets, no wirekit, so the server's event loop has one of the two
cores to itself (that measured about 1.3x faster than asyncio clients sharing
this process's loop). Sizes are CI-sized where stated; the full sizes run with
``python -m benchmarks.soak --load`` (docs/explanation/reliability.md has both
sets of numbers). Run with ``-rP`` to see the figures each test prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
from helpers_runtime import run

from benchmarks.soak import build_app, fitting_connections, server_limits, udp_accounting
from framework.core.framing import LengthPrefix
from framework.core.limits import Limits
from framework.runtime.server import Server

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 1000
REQUESTS = 100
# 200 peers as the issue asks; 100 datagrams each instead of 1,000 keeps this
# test to about a second on CI's two cores (the full 200 x 1,000 is
# `python -m benchmarks.soak --load`).
UDP_PEERS = 200
UDP_DATAGRAMS = 100
#: Bound on one whole test: far above what it takes, far below pytest's 60 s.
BOUND = 50.0


async def clients(role: str, port: int, **options: object) -> dict[str, Any]:
    """Run ``python -m benchmarks.soak --{role}-client`` against ``port``; its JSON result."""
    args = [f"--{role}-client", "--port", str(port)]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.soak",
        *args,
        # The clients give up first, so a stuck run still reports its counts.
        "--timeout",
        str(BOUND - 10),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await child.communicate()
    except BaseException:
        child.kill()  # cancelled: leave no client running behind the test
        await child.wait()
        raise
    assert child.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out)
    return result


async def until_no_connections(server: Server) -> None:
    while server.connections:
        await asyncio.sleep(0.01)


# A smaller run is not a silent one: the warning shows in pytest's summary.
@pytest.mark.filterwarnings("default::UserWarning")
def test_thousand_concurrent_connections_each_get_all_hundred_replies_in_order() -> None:
    # The clients' process and this one each hold one fd per connection.
    connections, scaled = fitting_connections(CONNECTIONS, fds_per_connection=2)
    if scaled:
        warnings.warn(scaled, UserWarning, stacklevel=1)
    app = build_app()

    async def main() -> None:
        async with await app.start(
            "tcp://127.0.0.1:0", limits=server_limits(connections)
        ) as server:
            result = await clients(
                "tcp", server.endpoint.port, connections=connections, requests=REQUESTS
            )
            print(
                f"{connections} connections x {REQUESTS} requests: {sum(result['ok']):,} "
                f"matched in {result['seconds']:.2f} s "
                f"({sum(result['ok']) / result['seconds']:,.0f} req/s), "
                f"{sum(result['mismatched'])} mismatched, {sum(result['lost'])} lost"
            )
            assert result["errors"] == []
            assert len(result["ok"]) == connections
            short = {
                conn: (ok, bad, lost)
                for conn, (ok, bad, lost) in enumerate(
                    zip(result["ok"], result["mismatched"], result["lost"], strict=True)
                )
                if ok != REQUESTS
            }
            assert short == {}, f"connections missing replies (ok, mismatched, lost): {short}"
            assert server.refused == 0
            # Every connection the clients closed is released by the server.
            await asyncio.wait_for(until_no_connections(server), 10)

    run(main(), timeout=BOUND)


# Loss on UDP is normal; losing it silently is not: pytest's summary shows it.
@pytest.mark.filterwarnings("default::UserWarning")
def test_udp_peers_every_datagram_is_echoed_or_counted_lost_at_both_ends() -> None:
    app = build_app()
    seen: set[Any] = set()
    app.on_connect(lambda conn: seen.add(conn.peer))

    async def main() -> None:
        async with await app.start("udp://127.0.0.1:0", limits=server_limits(UDP_PEERS)) as server:
            stats = server.datagram_stats
            assert stats is not None
            result = await clients(
                "udp", server.endpoint.port, peers=UDP_PEERS, datagrams=UDP_DATAGRAMS
            )
            counters = attrs.asdict(stats)
            received, accounted = udp_accounting(counters)
            report = (
                f"{UDP_PEERS} peers x {UDP_DATAGRAMS} datagrams: sent {result['sent']:,}, "
                f"echoed {result['echoed']:,}, lost {result['lost']:,} "
                f"(before the server's socket {result['sent'] - received:,}, "
                f"dropped by the server {accounted - counters['sent']:,}, "
                f"on the way back {counters['sent'] - result['echoed']:,}), "
                f"late {result['late']}, in {result['seconds']:.2f} s; server {counters}"
            )
            print(report)
            if result["lost"]:
                warnings.warn(report, UserWarning, stacklevel=1)
            assert result["sent"] == UDP_PEERS * UDP_DATAGRAMS
            assert result["mismatched"] == 0
            assert result["duplicates"] == 0
            # The client's own count: each datagram echoed or lost, per peer too.
            assert result["echoed"] + result["lost"] == result["sent"]
            assert sum(result["lost_per_peer"]) == result["lost"]
            # The server's count: each datagram it received answered or dropped-and-counted.
            assert received == accounted
            assert received <= result["sent"]
            assert result["echoed"] <= counters["sent"]
            assert len(seen) == UDP_PEERS

    run(main(), timeout=BOUND)


def test_udp_peers_beyond_max_peers_lose_everything_and_both_ends_say_how_much() -> None:
    # Loss that is certain, not left to the kernel: the server serves the
    # first 10 addresses and drops the next 10 peers' datagrams.
    app = build_app()
    peers, datagrams, admitted = 20, 50, 10

    async def main() -> None:
        limits = Limits(max_peers=admitted)
        async with await app.start("udp://127.0.0.1:0", limits=limits) as server:
            stats = server.datagram_stats
            assert stats is not None
            result = await clients(
                "udp",
                server.endpoint.port,
                peers=peers,
                datagrams=datagrams,
                window=10,
                patience=0.05,
            )
            counters = attrs.asdict(stats)
            print(f"{peers} peers, {admitted} admitted: client {result}; server {counters}")
            assert result["sent"] == peers * datagrams
            served = [lost for lost in result["lost_per_peer"] if lost < datagrams]
            assert len(served) == admitted
            assert result["lost"] >= (peers - admitted) * datagrams
            received, accounted = udp_accounting(counters)
            assert received == accounted
            assert counters["dropped_no_capacity"] >= 1
            assert counters["sent"] >= result["echoed"] == result["sent"] - result["lost"]

    run(main(), timeout=BOUND)


def framed(payload: bytes) -> bytes:
    return LengthPrefix().encode(payload)


#: What hostile peers send while the load runs: (error the server logs, bytes, half-close).
ATTACKS = {
    "length-header-4GiB": ("FrameTooLarge", b"\xff\xff\xff\xff" + b"x" * 64, False),
    "tls-client-hello": ("FrameTooLarge", b"\x16\x03\x01\x02\x00\x01" + b"\x00" * 64, False),
    "http-request": ("FrameTooLarge", b"GET / HTTP/1.1\r\nHost: wirekit\r\n\r\n", False),
    "msgpack-array-bomb": ("DecodeError", framed(b"\xdd\xff\xff\xff\xff"), False),
    "msgpack-deep-nesting": ("DecodeError", framed(b"\x91" * 100_000 + b"\xc0"), False),
    "wrong-field-type": (
        "InvalidMessage",
        framed(msgpack.packb({"type": "load.request", "id": "7", "seq": 0, "data": b""})),
        False,
    ),
    "unknown-type": ("UnknownMessageType", framed(msgpack.packb({"type": "nope"})), False),
    "half-close-mid-frame": ("mid-frame", (100).to_bytes(4, "big") + b"ten bytes.", True),
}


async def attack(port: int, data: bytes, half_close: bool) -> None:
    """Connect, send ``data``, and wait for the server to end the connection."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        with contextlib.suppress(ConnectionError):  # cut off while sending: the point
            await loop.sock_sendall(sock, data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(sock, 65536):
                pass


def test_hostile_peers_during_load_cost_only_their_own_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections, requests, rounds = 200, 50, 5
    app = build_app()
    handled: list[int] = []
    app.on_connect(lambda conn: handled.append(0))
    caplog.set_level(logging.WARNING, logger="wirekit")

    async def attackers(port: int) -> None:
        for _ in range(rounds):
            await asyncio.gather(*(attack(port, data, half) for _, data, half in ATTACKS.values()))

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0", limits=server_limits(300)) as server:
            port = server.endpoint.port
            result, _ = await asyncio.gather(
                clients("tcp", port, connections=connections, requests=requests),
                attackers(port),
            )
            assert result["errors"] == []
            assert result["ok"] == [requests] * connections
            # Every hostile connection was ended by the server, none is left.
            await asyncio.wait_for(until_no_connections(server), 10)

    run(main(), timeout=BOUND)
    assert len(handled) == connections + rounds * len(ATTACKS)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # Every hostile connection is named in a line of its own, or counted in
    # a "closed N more connections (...)" line (the first of each kind is
    # logged, the rest of its interval counted); none for the others.
    counted = [re.search(r"^closed ([\d,]+) more connections \((.+)\)", line) for line in warned]
    accounted = sum(int(m.group(1).replace(",", "")) if m else 1 for m in counted)
    assert accounted == rounds * len(ATTACKS), warned
    for name, (error, _, _) in ATTACKS.items():
        assert any(error in line for line in warned), (name, warned)
