"""``wirekit demo``: the game relay over TCP and UDP side by side, with a live view.

Starts two relays on loopback, drives a few bot players on each for a few
seconds and shows messages per second, latency and lost or reordered
updates per transport, then a summary. It shows in ten seconds what wirekit
is for: the same protocol code on two transports, chosen by one URL.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from protocols.game.bot import BotReport, run_bots
from protocols.game.relay import create_app

__all__ = ["register", "run_demo"]

_TRANSPORTS = ("tcp://127.0.0.1:0", "udp://127.0.0.1:0")


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


async def run_demo(
    *, players: int = 4, rate: float = 30.0, duration: float = 5.0, console: Console | None = None
) -> dict[str, BotReport]:
    """Run the demo; returns each transport's report."""
    console = console if console is not None else Console()
    # One session per transport (a hub each): the two runs are compared, not mixed.
    servers = [
        await create_app(backplane=f"memory://demo-{url.split(':')[0]}").start(url)
        for url in _TRANSPORTS
    ]
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
        for server in servers:
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


def _run(args: argparse.Namespace) -> int:
    asyncio.run(run_demo(players=args.players, rate=args.rate, duration=args.duration))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wirekit demo`` to the command line (an entry point of the wirekit.commands group)."""
    parser = commands.add_parser("demo", help="the game relay over TCP and UDP, live")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    parser.add_argument("--players", type=int, default=4, help="bot players per transport")
    parser.add_argument("--rate", type=float, default=30.0, help="updates per second per player")
    parser.set_defaults(handler=_run)
