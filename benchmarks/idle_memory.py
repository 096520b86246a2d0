"""``python -m benchmarks idle [--connections N] [--websocket]``: memory per idle connection.

Starts a wirekit echo server (``benchmarks/peers/wirekit_echo.py``, the raw
length-prefix app) and, from this process, opens up to ``N`` (default
10,000) TCP connections to it, each of which sends one request and reads
its reply (so every connection is accepted and has been through the hot
path once), then stays idle. It reports the server's resident memory
growth per connection. The count is bounded by the file-descriptor limit:
the soft ``RLIMIT_NOFILE`` is raised to the hard one first (the server
inherits it), and a margin is kept for the processes' own files.

``--websocket`` measures ``ws://`` connections instead (default 5,000, the
figure the WebSocket goal is set at): the server is
``benchmarks/peers/websocket_echo.py`` (compression off, its default), and
each connection completes the handshake, sends one message and reads its
echo before it goes idle.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

from benchmarks.io_servers import ServerPool, ServerSpec

__all__ = ["main", "measure_idle", "measure_idle_websocket"]


def _spec(connections: int) -> ServerSpec:
    return ServerSpec(
        "wirekit",
        "wirekit (App: length-prefix, bytes)",
        "wirekit_echo.py",
        ("--app", "raw", "--max-connections", str(connections + 10)),
        wirekit=True,
    )


FD_MARGIN = 200  # descriptors left for the processes' own files
REQUEST = struct.pack(">I", 8) + b"are you?"


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS (Linux only)")


def _settle(pid: int, seconds: float = 0.5) -> int:
    """RSS once it stops moving (the server has finished accepting)."""
    last = rss(pid)
    while True:
        time.sleep(seconds)
        now = rss(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now


def measure_idle(connections: int) -> dict[str, float | int]:
    """Open ``connections`` idle connections to a fresh server; return the figures."""
    with ServerPool() as pool:
        server = pool.start(_spec(connections))
        if server is None:
            raise SystemExit(f"wirekit server did not start: {pool.unavailable}")
        pid = server.popen.pid
        base = _settle(pid, 0.3)
        socks: list[socket.socket] = []
        try:
            with selectors.DefaultSelector() as selector:
                for _ in range(connections):
                    sock = socket.create_connection(server.address, timeout=10)
                    sock.sendall(REQUEST)
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ)
                    socks.append(sock)
                    # Read replies as they come so no socket buffer fills.
                    for key, _ in selector.select(0):
                        _read_reply(key.fileobj, selector)  # type: ignore[arg-type]
                deadline = time.monotonic() + 60
                while selector.get_map() and time.monotonic() < deadline:
                    for key, _ in selector.select(1):
                        _read_reply(key.fileobj, selector)  # type: ignore[arg-type]
                unanswered = len(selector.get_map())
            loaded = _settle(pid)
        finally:
            for sock in socks:
                sock.close()
        return {
            "connections": connections,
            "unanswered": unanswered,
            "server_rss_before": base,
            "server_rss_after": loaded,
            "bytes_per_connection": (loaded - base) / connections,
        }


def measure_idle_websocket(connections: int) -> dict[str, float | int]:
    """Open ``connections`` idle ``ws://`` connections to a fresh wirekit server; the figures."""
    from benchmarks.websocket import client_handshake

    spec = ServerSpec(
        "wirekit-ws",
        "wirekit ws:// echo",
        "websocket_echo.py",
        ("--impl", "wirekit", "--max-connections", str(connections + 10)),
        wirekit=True,
    )
    with ServerPool() as pool:
        server = pool.start(spec)
        if server is None:
            raise SystemExit(f"wirekit server did not start: {pool.unavailable}")
        pid = server.popen.pid
        base = _settle(pid, 0.3)
        socks: list[socket.socket] = []
        unanswered = 0
        try:
            for _ in range(connections):
                sock, protocol = client_handshake(server.address)
                protocol.send_binary(b"are you?")
                sock.sendall(b"".join(protocol.data_to_send()))
                # The echo: a 2-byte header and the 8 bytes.
                if len(sock.recv(64)) < 10:
                    unanswered += 1
                socks.append(sock)
            loaded = _settle(pid)
        finally:
            for sock in socks:
                sock.close()
        return {
            "connections": connections,
            "unanswered": unanswered,
            "server_rss_before": base,
            "server_rss_after": loaded,
            "bytes_per_connection": (loaded - base) / connections,
        }


def _read_reply(sock: socket.socket, selector: selectors.BaseSelector) -> None:
    data = sock.recv(64)
    if len(data) >= len(REQUEST) or not data:
        selector.unregister(sock)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement, print it, write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks idle", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--connections", type=int, metavar="N", help="10,000 (5,000 websocket)")
    parser.add_argument("--websocket", action="store_true", help="ws:// connections, not TCP")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    wanted = args.connections or (5_000 if args.websocket else 10_000)
    limit = raise_fd_limit()
    count = max(1, min(wanted, limit - FD_MARGIN))
    if count < wanted:
        print(f"file limit {limit}: opening {count} connections", file=sys.stderr)
    result = measure_idle_websocket(count) if args.websocket else measure_idle(count)
    kind, goal = ("ws://", 32) if args.websocket else ("TCP", 64)
    print(
        f"{result['connections']:,} idle {kind} connections ({result['unanswered']} unanswered): "
        f"server RSS {result['server_rss_before'] / 2**20:.1f} -> "
        f"{result['server_rss_after'] / 2**20:.1f} MiB, "
        f"{result['bytes_per_connection'] / 1024:.1f} KiB per connection (goal <= {goal} KiB)"
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.json or Path(__file__).resolve().parent / "results" / f"idle-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")
    return 0 if result["unanswered"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
