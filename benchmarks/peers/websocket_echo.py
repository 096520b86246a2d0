"""WebSocket echo servers for ``python -m benchmarks websocket``: wirekit's, and websockets' own.

``--impl wirekit``: ``App(Pipeline(codecs="bytes"))`` on ``ws://`` (one
message, one frame; binary frames back). ``--impl websockets``: the
websockets library's asyncio server, ``async for message in ws: await
ws.send(message)``, the echo of its documentation. Both with per-message
compression off (wirekit's default; websockets' asks for ``compression=None``)
and 1 MiB messages at most. ``--loop uvloop`` runs either on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from _loops import run_on_loop

from framework import App, LengthPrefix, Pipeline, WebSocketOptions
from framework.core.limits import Limits

MAX_SIZE = 1 << 20


async def serve_wirekit(port: int, connections: int | None) -> None:
    app = App(Pipeline(framing=LengthPrefix(max_frame_size=MAX_SIZE), codecs="bytes"))

    @app.on(bytes)
    def echo(value: bytes, conn: Any) -> bytes:
        return value

    def ready(server: Any) -> None:
        print("ready", server.endpoint.port, flush=True)

    limits = None
    if connections is not None:
        limits = Limits(max_connections=connections, max_connections_per_peer=None)
    # The defaults (keepalive pings every 20 s, as websockets' server below).
    await app.serve(
        f"ws://127.0.0.1:{port}", ready=ready, limits=limits, websocket=WebSocketOptions()
    )


async def serve_websockets(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None, max_size=MAX_SIZE) as server:
        print("ready", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


def main() -> None:
    """Serve until SIGTERM/SIGINT; announce the port as ``ready PORT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--impl", choices=("wirekit", "websockets"), default="wirekit")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--max-connections", type=int, metavar="N")
    args = parser.parse_args()
    if args.impl == "wirekit":
        serving = serve_wirekit(args.port, args.max_connections)
    else:
        serving = serve_websockets(args.port)
    with contextlib.suppress(KeyboardInterrupt):
        run_on_loop(serving, args.loop == "uvloop")


if __name__ == "__main__":
    main()
