"""``python -m benchmarks websocket``: WebSocket echo, wirekit against websockets' own server.

Two servers on the same event loop, one after the other in one run, with
the same load: wirekit's ``ws://`` echo and the websockets library's own
asyncio server echo (``benchmarks/peers/websocket_echo.py``), both with
compression off. The load is one connection, pipelined: the handshake and
every frame come from the websockets library's own client protocol object
(``ClientProtocol``: masked binary frames of ``--size`` bytes), written in
batches from a plain socket that keeps up to ``--window`` messages in
flight and counts the echoes as they come back, so the load costs little
next to the server it measures. Reported: messages per second for each,
and wirekit's ratio to websockets. ``--loop`` picks asyncio, uvloop or
both. ``--idle N`` also measures the memory of N idle WebSocket connections
(see :mod:`benchmarks.idle_memory`).

The machine may be shared and noisy: compare the ratio, measured in one
run, rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from benchmarks.io_servers import ServerPool, ServerSpec

__all__ = ["client_handshake", "echo_size", "main", "masked_frames", "pipelined", "verify_echo"]

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 0.8  # of the websockets server's figure, same loop, same run
GOAL_UVLOOP = 50_000  # messages per second, small messages, uvloop


def _spec(impl: str, loop: str, connections: int | None = None) -> ServerSpec:
    extra = ("--max-connections", str(connections)) if connections is not None else ()
    return ServerSpec(
        f"{impl}-ws-{loop}",
        f"{impl} ws:// echo on {loop}",
        "websocket_echo.py",
        ("--impl", impl, "--loop", loop, *extra),
        requires="uvloop" if loop == "uvloop" else None,
        wirekit=impl == "wirekit",
    )


def client_handshake(
    address: tuple[str, int], timeout: float = 10.0
) -> tuple[socket.socket, ClientProtocol]:
    """A blocking socket with the WebSocket handshake done by websockets' client protocol."""
    host, port = address
    protocol = ClientProtocol(parse_uri(f"ws://{host}:{port}/"), max_size=None)
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state.name == "CONNECTING":
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed during the handshake")
        protocol.receive_data(data)
    if protocol.handshake_exc is not None:
        raise ConnectionError(f"handshake failed: {protocol.handshake_exc}")
    protocol.events_received()
    return sock, protocol


def _frames(protocol: ClientProtocol, payload: bytes, count: int) -> bytes:
    for _ in range(count):
        protocol.send_binary(payload)
    return b"".join(protocol.data_to_send())


def masked_frames(payload: bytes, count: int) -> bytes:
    """``count`` binary frames of ``payload``, masked as a client sends them (by websockets)."""
    # Frames only, no handshake: a protocol object that starts open.
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN, max_size=None)
    return _frames(protocol, payload, count)


def echo_size(payload: bytes) -> int:
    """Bytes of the server's echo of one message of ``payload``: an unmasked binary frame."""
    size = len(payload)
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def verify_echo(address: tuple[str, int], payload: bytes, timeout: float = 5.0) -> None:
    """Open a connection and check that the server echoes ``payload`` as one binary frame."""
    sock, protocol = client_handshake(address, timeout)
    with sock:
        _verify(sock, protocol, payload, echo_size(payload))


def _verify(sock: socket.socket, protocol: ClientProtocol, payload: bytes, reply: int) -> None:
    """One message first: the server must echo it as one binary frame, byte for byte."""
    sock.sendall(_frames(protocol, payload, 1))
    data = b""
    while len(data) < reply:
        more = sock.recv(reply - len(data))
        if not more:
            raise ConnectionError("the server closed instead of echoing")
        data += more
    if data[0] != 0x82 or not data.endswith(payload):
        raise AssertionError(f"not an echo of the message: {data[:16]!r}...")


def pipelined(
    address: tuple[str, int], *, size: int, window: int, seconds: float, batch: int = 128
) -> dict[str, Any]:
    """Messages per second echoed on one pipelined connection for ``seconds``."""
    sock, protocol = client_handshake(address)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reply = echo_size(payload)
    sock.settimeout(10)
    try:
        _verify(sock, protocol, payload, reply)
    except BaseException:
        sock.close()
        raise
    chunk = _frames(protocol, payload, batch)
    sent = received_bytes = 0
    warm_until = time.perf_counter() + min(1.0, seconds / 4)
    start = end = None
    counted_from = 0
    try:
        while True:
            now = time.perf_counter()
            if start is None and now >= warm_until:
                start, counted_from = now, received_bytes // reply
            if start is not None and now - start >= seconds:
                end = now
                break
            while sent - received_bytes // reply + batch <= window:
                sock.sendall(chunk)
                sent += batch
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the server closed the connection")
            received_bytes += len(data)
    finally:
        sock.close()
    assert start is not None
    assert end is not None
    messages = received_bytes // reply - counted_from
    return {"messages": messages, "seconds": end - start, "per_second": messages / (end - start)}


def _measure(pool: ServerPool, spec: ServerSpec, args: argparse.Namespace) -> dict[str, Any] | None:
    server = pool.start(spec)
    if server is None:
        print(f"{spec.label}: unavailable ({pool.unavailable[spec.key]})", file=sys.stderr)
        return None
    try:
        result = pipelined(server.address, size=args.size, window=args.window, seconds=args.seconds)
    finally:
        server.stop()
    print(f"  {spec.label}: {result['per_second']:,.0f} messages/s", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print it, write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks websocket", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per server")
    parser.add_argument("--size", type=int, default=32, help="message size in bytes")
    parser.add_argument("--window", type=int, default=4096, help="messages in flight")
    parser.add_argument("--idle", type=int, metavar="N", help="also measure N idle connections")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    report: dict[str, Any] = {"size": args.size, "window": args.window, "loops": {}}
    lines = []
    with ServerPool() as pool:
        for loop in loops:
            figures = {
                impl: _measure(pool, _spec(impl, loop), args) for impl in ("wirekit", "websockets")
            }
            wirekit, baseline = figures["wirekit"], figures["websockets"]
            if wirekit is None or baseline is None:
                continue
            ratio = wirekit["per_second"] / baseline["per_second"]
            report["loops"][loop] = {**figures, "ratio": ratio}
            goal = f"goal >= {GOAL_RATIO}x"
            if loop == "uvloop":
                goal += f", and >= {GOAL_UVLOOP:,}/s"
            lines.append(
                f"{loop:8} wirekit {wirekit['per_second']:>10,.0f}/s   websockets "
                f"{baseline['per_second']:>10,.0f}/s   ratio {ratio:.2f}x ({goal})"
            )
    if args.idle:
        from benchmarks.idle_memory import measure_idle_websocket

        idle = measure_idle_websocket(args.idle)
        report["idle"] = idle
        lines.append(
            f"{idle['connections']:,} idle ws:// connections: "
            f"{idle['bytes_per_connection'] / 1024:.1f} KiB each (goal <= 32 KiB)"
        )
    print(f"WebSocket echo, {args.size}-byte messages, {args.window} in flight, one connection:")
    print("\n".join(lines))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.json or RESULTS / f"websocket-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
