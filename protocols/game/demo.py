"""``wirekit demo``: the game relay over TCP and UDP side by side, with a live view.

Starts two relays on loopback, drives a few bot players on each for a few
seconds and shows messages per second, latency and lost or reordered
updates per transport, then a summary. It shows in ten seconds what wirekit
is for: the same protocol code on two transports, chosen by one URL.

With ``--web`` each relay also listens on ``ws://`` and serves the game page
there (see :mod:`protocols.web`): the demo prints the pages' addresses, and a
browser that opens one watches that relay's bots move, as a spectator, for
as long as they play (60 seconds unless ``--duration`` says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from framework import ConfigError, Server, parse_url
from protocols.game.bot import BotReport, run_bots
from protocols.game.relay import create_app

__all__ = ["register", "run_demo"]

_TRANSPORTS = ("tcp://127.0.0.1:0", "udp://127.0.0.1:0")
#: Where a relay's game page is served with ``--web``: its own WebSocket listener.
_WEB = "ws://127.0.0.1:0"
#: Seconds the bots play by default: long enough to open a page with ``--web``.
_DURATION, _WEB_DURATION = 5.0, 60.0


def _table(reports: dict[str, BotReport], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    # Short headers: the table must fit an 80-column terminal.
    for column in ("via", "bots", "sent/s", "recv/s", "p50 ms", "p99 ms", "lost", "late", "dup"):
        table.add_column(column, justify="right")
    for url, report in reports.items():
        p50, p99 = report.latency_ms(0.5), report.latency_ms(0.99)
        table.add_row(
            url.split("://")[0].upper(),
            str(report.players),
            f"{report.rate(report.sent):,.0f}",
            f"{report.rate(report.received):,.0f}",
            f"{p50:.2f}" if p50 is not None else "-",
            f"{p99:.2f}" if p99 is not None else "-",
            str(report.tracker.lost),
            str(report.tracker.out_of_order),
            str(report.tracker.duplicates),
        )
    return table


def page_url(server: Server) -> str:
    """The ``http://`` address of a ``ws://`` listener's pages."""
    endpoint = parse_url(server.url)
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"http://{host}:{endpoint.port}/"


async def run_demo(
    *,
    players: int = 4,
    rate: float = 30.0,
    duration: float = _DURATION,
    web: bool = False,
    console: Console | None = None,
) -> dict[str, BotReport]:
    """Run the demo; returns each transport's report.

    ``web=True`` also serves each relay's game page on a ``ws://`` listener
    of the same relay (one session: the page sees that relay's bots).
    """
    console = console if console is not None else Console()
    # One session per transport (a hub each): the two runs are compared, not mixed.
    apps = [create_app(backplane=f"memory://demo-{url.split(':')[0]}") for url in _TRANSPORTS]
    servers = [await app.start(url) for app, url in zip(apps, _TRANSPORTS, strict=True)]
    pages: list[Server] = []
    try:
        if web:
            pages = [await app.start(_WEB) for app in apps]
    except BaseException:
        for server in servers:
            await server.close()
        raise
    reports: dict[str, BotReport] = {}
    progress = Progress(
        TextColumn("bots running"), BarColumn(), TimeRemainingColumn(), console=console
    )
    task = progress.add_task("bots", total=duration)
    start = time.perf_counter()
    console.print(
        f"[bold]wirekit demo[/]: one game relay, two transports. {players} bot players per "
        f"relay send their position {rate:g} times a second; every update is relayed to the "
        "other players.",
    )
    for server in servers:
        console.print(f"  relay listening on {server.url}")
    for server, page in zip(servers, pages, strict=False):
        kind = server.url.split("://")[0].upper()
        console.print(
            f"  live view of the {kind} relay: [bold]{page_url(page)}[/] (open it in a browser)"
        )

    def view() -> Group:
        return Group(_table(reports, title="live"), progress)

    try:
        with Live(view(), console=console, refresh_per_second=8, transient=True) as live:

            def tick(report: BotReport) -> None:
                reports[report.url] = report
                progress.update(task, completed=min(duration, time.perf_counter() - start))
                live.update(view())

            results = await asyncio.gather(
                *(
                    run_bots(
                        server.url, players=players, rate=rate, duration=duration, on_tick=tick
                    )
                    for server in servers
                )
            )
    finally:
        for server in [*pages, *servers]:
            await server.close()
    reports = {report.url: report for report in results}
    console.print(_table(reports, title=f"after {duration:g} s"))
    for server in servers:
        stats = server.datagram_stats
        if stats is not None:
            console.print(
                f"UDP relay: {stats.received:,} datagrams in, {stats.sent:,} out. Each bot "
                "proved its address with a join cookie, so the relay may send it more than "
                "3x what it sends; updates held back by the amplification bound: "
                f"{stats.dropped_amplification}."
            )
    console.print(
        "TCP delivers every update, in order: nothing lost, nothing reordered. UDP may lose, "
        "duplicate or reorder datagrams on a real network; the receiver's sequence tracker "
        "drops stale updates and counts the rest. On loopback both are fast: try "
        "`wirekit serve protocols.game` and the docs to go further."
    )
    return reports


def _require_websockets() -> None:
    try:
        importlib.import_module("websockets")
    except ImportError as exc:
        raise ConfigError(
            "wirekit demo --web serves its pages on ws://, which needs the websockets "
            "library: pip install 'wirekit[websocket]'",
            option="web",
        ) from exc


def _run(args: argparse.Namespace) -> int:
    if args.web:
        _require_websockets()
    duration = args.duration
    if duration is None:
        duration = _WEB_DURATION if args.web else _DURATION
    asyncio.run(run_demo(players=args.players, rate=args.rate, duration=duration, web=args.web))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wirekit demo`` to the command line (an entry point of the wirekit.commands group)."""
    parser = commands.add_parser("demo", help="the game relay over TCP and UDP, live")
    parser.add_argument(
        "--duration", type=float, help="seconds to run (default 5, or 60 with --web)"
    )
    parser.add_argument("--players", type=int, default=4, help="bot players per transport")
    parser.add_argument("--rate", type=float, default=30.0, help="updates per second per player")
    parser.add_argument(
        "--web",
        action="store_true",
        help="also serve each relay's live view on ws:// and print its address for a browser",
    )
    parser.set_defaults(handler=_run)
