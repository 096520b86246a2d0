"""wirekit echo servers, built with the public API (``framework.App`` + ``Pipeline``).

``--app`` picks the protocol:

- ``raw``: length-prefix + bytes codec, a synchronous handler (as ``protocols.echo``);
- ``raw-async``: the same with an ``async def`` handler;
- ``position``: length-prefix + msgpack + a typed ``Position`` attrs message;
- ``lines``: newline framing + utf-8 codec, ``str`` values;
- ``udp``: one datagram per frame, bytes codec.

``--loop uvloop`` runs it on uvloop. ``--metrics`` serves Prometheus metrics
(``/metrics`` on a free loopback port) while it runs, handler timing on.
``--profile PATH`` runs the server under cProfile and writes the stats to
PATH when it shuts down (SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
from typing import Any

import attrs
from _loops import loop_factory

from framework import App, Pipeline, message
from framework.core.limits import Limits


@message("position")
@attrs.frozen
class Position:
    """The typed message of the quick start: a point and a counter."""

    x: float
    y: float
    z: float
    count: int


def build(kind: str) -> tuple[App, str]:
    """The app for ``kind`` and its URL scheme."""
    if kind in ("raw", "raw-async", "udp"):
        app = App(Pipeline(framing="length-prefix", codecs="bytes"))
        if kind == "raw-async":

            @app.on(bytes)
            async def echo_async(value: bytes, conn: Any) -> bytes:
                return value

        else:

            @app.on(bytes)
            def echo(value: bytes, conn: Any) -> bytes:
                return value

        return app, "udp" if kind == "udp" else "tcp"
    if kind == "position":
        app = App(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position]))

        @app.on(Position)
        def moved(msg: Position, conn: Any) -> Position:
            return msg

        return app, "tcp"
    if kind == "lines":
        app = App(Pipeline(framing="newline", codecs="utf-8"))

        @app.on(str)
        def line(text: str, conn: Any) -> str:
            return text

        return app, "tcp"
    raise SystemExit(f"unknown app {kind!r}")


def main() -> None:
    """Serve the chosen app on 127.0.0.1 until SIGTERM/SIGINT; announce the port."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument(
        "--app", default="raw", choices=("raw", "raw-async", "position", "lines", "udp")
    )
    parser.add_argument("--profile", metavar="PATH", help="write cProfile stats here on exit")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--metrics", action="store_true", help="serve /metrics while running")
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="raise max_connections to N, and lift the per-address limit (all load is local)",
    )
    args = parser.parse_args()
    app, scheme = build(args.app)
    if args.metrics:
        # Before the server starts: its handlers are timed from the first read.
        from framework import serve_metrics

        serve_metrics("127.0.0.1:0")
    factory = loop_factory(args.loop == "uvloop")

    def ready(server: Any) -> None:
        print("ready", server.endpoint.port, flush=True)

    limits = None
    if args.max_connections is not None:
        limits = Limits(max_connections=args.max_connections, max_connections_per_peer=None)
    serve = app.serve(f"{scheme}://127.0.0.1:{args.port}", ready=ready, limits=limits)
    if args.profile is None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve)
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
