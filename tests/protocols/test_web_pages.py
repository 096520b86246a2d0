"""The shipped web pages, in a real browser: headless Chromium against real servers.

The chat page and an ``nc``-style TCP peer talk in one room of one App,
served on ``tcp://`` and ``ws://`` at once; the game page watches bots play
through the relay. See tests/helpers_browser.py for how the browser is run
(and skipped when it is missing, except under CI).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import trustme
from helpers_browser import LinePeer, LoopThread, chromium_page
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework import App, Connection, Server, TlsOptions
from framework.core.endpoints import parse_url
from protocols import chat, game
from protocols.game.bot import BotReport, run_bots
from protocols.game.demo import page_url
from protocols.web import pages

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        yield page


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.stop()


def serve(loop: LoopThread, app: App, *urls: str) -> list[Server]:
    """Start ``app`` on each URL, in the loop thread; one App, one state."""

    return loop.run(app.start_all(urls))


def close(loop: LoopThread, servers: list[Server]) -> None:
    async def stop() -> None:
        for server in servers:
            await server.close()

    loop.run(stop())


def log_lines(page: Page) -> list[str]:
    return [str(text) for text in page.locator("#log li").all_text_contents()]


def wait_for_line(page: Page, line: str) -> None:
    page.locator("#log li", has_text=re.compile(f"^{re.escape(line)}$")).last.wait_for()


def say(page: Page, line: str) -> None:
    page.fill("#line", line)
    page.press("#line", "Enter")


def test_the_browser_is_stopped_even_when_a_test_fails(tmp_path: Path) -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    started: list[psutil.Process] = []

    def failing_test() -> None:
        with chromium_page(tmp_path / "profile") as page:
            page.set_content("<p>hello</p>")
            started.extend(
                p for p in psutil.Process().children(recursive=True) if p.pid not in before
            )
            assert any("chrom" in p.name() for p in started)
            raise RuntimeError("a failing test")

    with pytest.raises(RuntimeError, match="a failing test"):
        failing_test()
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


# -- the pages are in the package and load only what is in it -------------------------


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("data:"):
                self.sources.append(value)


@pytest.mark.parametrize("name", ["chat", "game"])
def test_each_page_loads_only_files_shipped_beside_it(name: str) -> None:
    directory = pages(name)
    parser = _Sources()
    parser.feed(directory.joinpath("index.html").read_text())
    assert parser.sources, "the page loads its script"
    for source in parser.sources:
        assert "//" not in source, f"{source}: no CDN, no other host"
        assert directory.joinpath(*source.split("/")).is_file(), source


def test_the_vendored_msgpack_bundle_is_the_one_its_note_names() -> None:
    vendor = pages("game") / "vendor"
    note = vendor.joinpath("README.md").read_text()
    [noted] = re.findall(r"`([0-9a-f]{64})`", note)
    assert hashlib.sha256(vendor.joinpath("msgpack.min.js").read_bytes()).hexdigest() == noted
    assert "ISC" in note
    assert vendor.joinpath("msgpack.LICENSE").read_text().startswith("Copyright")


def test_an_unknown_page_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no web page called 'nope'"):
        pages("nope")


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"].split(";")[0], response.read()


TYPES = {".html": "text/html", ".js": "text/javascript"}


@pytest.mark.parametrize(
    ("name", "create_app"), [("chat", chat.create_app), ("game", game.create_app)]
)
def test_the_protocol_serves_its_page_and_every_file_it_loads(
    name: str, create_app: Callable[[], App], loop: LoopThread
) -> None:
    [server] = serve(loop, create_app(), "ws://127.0.0.1:0")
    try:
        base = page_url(server)
        parser = _Sources()
        status, kind, body = fetch(base)
        assert (status, kind) == (200, "text/html")
        assert body == pages(name).joinpath("index.html").read_bytes()
        parser.feed(body.decode())
        for source in parser.sources:
            status, kind, body = fetch(base + source)
            assert (status, kind) == (200, TYPES[source[source.rfind(".") :]])
            assert body == pages(name).joinpath(*source.split("/")).read_bytes()
    finally:
        close(loop, [server])


# -- chat: a browser and nc in one room ------------------------------------------------


def test_the_chat_page_and_an_nc_peer_talk_in_one_room(page: Page, loop: LoopThread) -> None:
    app = chat.create_app()
    servers = serve(loop, app, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
    tcp = parse_url(servers[0].url)
    try:
        page.goto(page_url(servers[1]))
        page.locator("#status[data-state=open]").wait_for()
        wait_for_line(page, f"* welcome, guest-1! you are in #lobby. {chat.HELP}")

        peer = LinePeer(tcp.host, tcp.port)
        assert peer.line().startswith("* welcome, guest-2!")
        wait_for_line(page, "* guest-2 joined #lobby")
        peer.send("/nick ada")
        assert peer.line() == "* you are now ada"
        wait_for_line(page, "* guest-2 is now known as ada")

        peer.send("hello from nc")
        wait_for_line(page, "<ada> hello from nc")
        say(page, "hello from a browser, ünïcode too")
        assert peer.line() == "<guest-1> hello from a browser, ünïcode too"
        assert page.input_value("#line") == ""

        say(page, "/nick bea")
        wait_for_line(page, "* you are now bea")
        assert peer.line() == "* guest-1 is now known as bea"
        say(page, "/who")
        wait_for_line(page, "* in #lobby: ada, bea")

        # A line over the server's limit is refused by the page, not sent:
        # the connection and the room go on.
        say(page, "x" * (chat.MAX_LINE + 1))
        page.locator("#log li.error", has_text="line too long").wait_for()
        say(page, "/join side")
        wait_for_line(page, "* you are in #side")
        assert peer.line() == "* bea left #lobby"
        peer.send("anyone?")
        peer.send("/join side")
        assert peer.line() == "* you are in #side"
        wait_for_line(page, "* ada joined #side")
        assert "<ada> anyone?" not in log_lines(page)
        assert page.get_attribute("#status", "data-state") == "open"
        peer.close()
        wait_for_line(page, "* ada left #side")
    finally:
        close(loop, servers)
    # The server shut down: the page says so (1001, going away) and offers to reconnect.
    page.locator("#status[data-state=closed]", has_text="code 1001").wait_for()
    assert page.is_visible("#reconnect")


def test_the_chat_page_over_https_talks_over_wss(loop: LoopThread, tmp_path: Path) -> None:
    ca = trustme.CA()
    certificate = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certificate))
    app = chat.create_app()

    async def start() -> Server:
        return await app.start("wss://127.0.0.1:0", tls=TlsOptions(certfile=str(certificate)))

    server = loop.run(start())
    endpoint = parse_url(server.url)
    try:
        # The test's CA is not in this browser's trust store: accept its certificate.
        with chromium_page(tmp_path / "profile", ignore_https_errors=True) as page:
            page.goto(f"https://{endpoint.host}:{endpoint.port}/")
            page.locator("#status[data-state=open]").wait_for()
            status = page.text_content("#status")
            assert status == f"connected to wss://{endpoint.host}:{endpoint.port}/"
            wait_for_line(page, f"* welcome, guest-1! you are in #lobby. {chat.HELP}")
            say(page, "/who")
            wait_for_line(page, "* in #lobby: guest-1")
    finally:
        close(loop, [server])


# -- game: the relay's live view -------------------------------------------------------


def counters(page: Page) -> dict[int, dict[str, int]]:
    """The players' table: player -> received, lost, late, dup."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#players tbody tr",
        """rows => rows.map(row => ({
            player: Number(row.dataset.player),
            received: Number(row.querySelector('.received').textContent),
            lost: Number(row.querySelector('.lost').textContent),
            late: Number(row.querySelector('.late').textContent),
            dup: Number(row.querySelector('.dup').textContent),
        }))""",
    )
    return {row.pop("player"): row for row in rows}


# The colourful pixels of the canvas (players are drawn in saturated colours
# on a grey field), as indices into its pixels.
COLOURED_PIXELS = """() => {
    const canvas = document.getElementById('field');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const found = [];
    for (let i = 0; i < data.length; i += 4) {
        const r = data[i], g = data[i + 1], b = data[i + 2];
        if (Math.max(r, g, b) - Math.min(r, g, b) > 80) found.push(i / 4);
    }
    return found;
}"""


def coloured(page: Page) -> set[int]:
    return set(page.evaluate(COLOURED_PIXELS))


def test_the_game_page_draws_the_bots_as_they_move(
    page: Page, loop: LoopThread, tmp_path: Path
) -> None:
    app = game.create_app()
    servers = serve(loop, app, "tcp://127.0.0.1:0", "ws://127.0.0.1:0")
    bots: Future[BotReport] | None = None
    try:
        page.goto(page_url(servers[1]))
        page.locator("#status[data-state=open]").wait_for()
        totals = page.locator("#totals", has_text="spectator #")
        totals.wait_for()
        found = re.search(r"spectator #(\d+);", str(totals.text_content()))
        assert found is not None
        spectator = int(found.group(1))
        assert coloured(page) == set()  # nobody playing yet

        # The bots play until the test has seen enough (a slow machine needs longer).
        bots = loop.submit(run_bots(servers[0].url, players=3, rate=20, duration=30.0))
        page.wait_for_function("document.querySelectorAll('#players tbody tr').length === 3")
        first = counters(page)
        drawn = coloured(page)
        time.sleep(0.6)
        later = counters(page)
        moved = coloured(page)
        screenshot = page.screenshot(path=str(tmp_path / "game.png"))

        # The bots joined after the spectator, on the same relay: the next numbers.
        assert sorted(later) == [spectator + 1, spectator + 2, spectator + 3]
        for player, seen in later.items():
            assert seen["received"] > first[player]["received"], "counters rise"
            # TCP to the relay, WebSocket to the page: nothing lost or reordered.
            assert (seen["lost"], seen["late"], seen["dup"]) == (0, 0, 0)
        # Three dots (and their trails) drawn, and they moved.
        assert len(drawn) > 3 * 100
        assert len(drawn ^ moved) > len(drawn) / 4
        assert screenshot.startswith(b"\x89PNG\r\n\x1a\n")
        assert not bots.done(), "the bots were still playing while the page was read"
    finally:
        if bots is not None:
            bots.cancel()  # they close their connections as they stop
        close(loop, servers)


def test_wirekit_demo_web_prints_the_live_view_a_browser_then_watches(page: Page) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "framework", "demo", "--web", "--players", "3", "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
        text=True,
    )
    try:
        assert demo.stdout is not None
        printed = []
        for line in demo.stdout:  # the demo prints the addresses before its bots play
            printed.append(line)
            found = re.search(r"live view of the TCP relay: (http://\S+/)", line)
            if found:
                break
        else:
            pytest.fail("".join(printed))
        page.goto(found.group(1))
        page.wait_for_function("document.querySelectorAll('#players tbody tr').length === 3")
        first = counters(page)
        page.wait_for_function(
            "n => [...document.querySelectorAll('#players .received')]"
            ".every(cell => Number(cell.textContent) > n)",
            arg=max(seen["received"] for seen in first.values()),
        )
        assert len(coloured(page)) > 3 * 100
    finally:
        demo.terminate()
        demo.communicate(timeout=10)


# -- the page's counters are the sequence tracker's ------------------------------------

serials = st.integers(0, 2**32 - 1)
# Steps around the newest count: ahead (lost numbers), behind (late, or a
# repeat), beyond the 64-number window, and across the 32-bit wrap-around.
steps = st.lists(st.integers(-80, 80), min_size=1, max_size=60)


def scripted_relay(script: list[list[int]]) -> App:
    """A relay stand-in that answers a join with a welcome and then player 7's ``script[0]``."""
    app = App(game.default_pipeline(), pages=pages("game"))

    @app.on(game.Join)
    def joined(_request: game.Join, conn: Connection) -> None:
        conn.send_nowait(game.Welcome(1))
        for count in script[0]:
            conn.send_nowait(game.Relayed(7, game.Position(float(count % 10), 0.0, 0.0, count)))

    return app


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=serials, offsets=steps)
def test_the_game_page_counts_lost_late_and_repeated_as_the_tracker_does(
    page: Page, loop: LoopThread, start: int, offsets: list[int]
) -> None:
    counts = [(start + offset) % 2**32 for offset in offsets]
    tracker = game.SequenceTracker()
    for count in counts:
        tracker.accept(7, count)
    script = [counts]
    [server] = serve(loop, scripted_relay(script), "ws://127.0.0.1:0")
    try:
        page.goto(page_url(server))  # a fresh page: its counters start at 0
        page.wait_for_function(
            f"document.querySelector('#players tr[data-player=\"7\"] .received')"
            f"?.textContent === '{len(counts)}'"
        )
        assert counters(page)[7] == {
            "received": tracker.received,
            "lost": tracker.lost,
            "late": tracker.out_of_order,
            "dup": tracker.duplicates,
        }
    finally:
        close(loop, [server])


def test_the_game_page_joins_again_every_30_seconds_to_stay_past_the_idle_timeout(
    page: Page, loop: LoopThread
) -> None:
    joins: list[bytes] = []
    app = App(game.default_pipeline(), pages=pages("game"))

    @app.on(game.Join)
    def joined(request: game.Join, conn: Connection) -> game.Challenge | game.Welcome:
        joins.append(request.cookie)
        if request.cookie == game.NO_COOKIE:
            return game.Challenge(b"c" * 24)
        return game.Welcome(5)

    [server] = serve(loop, app, "ws://127.0.0.1:0")
    try:
        page.clock.install()  # the page's timers run when the test says
        page.goto(page_url(server))
        page.locator("#totals", has_text="spectator #5;").wait_for()
        assert joins == [game.NO_COOKIE, b"c" * 24]  # the handshake: echo the challenge's cookie
        page.clock.run_for(29_000)
        time.sleep(0.2)  # room for a join sent too early to arrive
        assert len(joins) == 2
        page.clock.run_for(2_000)
        deadline = time.monotonic() + 5
        while len(joins) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert joins[2:] == [b"c" * 24]  # one more join, with the cookie it has
    finally:
        close(loop, [server])
