"""Headless Chromium for the web page tests, and an event loop thread for the servers they use.

The browser is the system's Chromium (Debian's ``chromium`` package), driven
by Playwright's sync API through ``executable_path``: Playwright's own browser
download cannot work on a machine without internet. When Chromium or
Playwright is missing the tests skip with the reason, except under CI (the
``CI`` environment variable set), where they fail: CI installs both.

Playwright's sync API runs its own loop in the test's thread, so the wirekit
servers (and bots) the page talks to run on an asyncio loop in a background
thread (:class:`LoopThread`); a raw TCP peer is a plain blocking socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

T = TypeVar("T")

#: Without the background-networking flags Chromium keeps calling home (and,
#: with no network, floods the machine with refused connections); the sandbox
#: needs privileges a container or CI runner as root does not give.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Playwright's wait for any one step, in milliseconds: a page step on
#: loopback takes milliseconds; this only turns a hang into a clear failure.
STEP_TIMEOUT_MS = 10_000


def chromium_path() -> str | None:
    """The Chromium to drive: ``WIREKIT_CHROMIUM``, else ``chromium`` on the PATH."""
    given = os.environ.get("WIREKIT_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> str:
    """Chromium's path; skips the test when Chromium or Playwright is missing (fails under CI)."""
    missing = []
    path = chromium_path()
    if path is None:
        missing.append("chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401  (only whether it imports)
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        reason = f"the web page tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install them (.ci/run)")
        pytest.skip(reason)
    assert path is not None
    return path


def _descendants() -> dict[int, psutil.Process]:
    return {child.pid: child for child in psutil.Process().children(recursive=True)}


@contextlib.contextmanager
def chromium_page(profile: Path, *, ignore_https_errors: bool = False) -> Iterator[Page]:
    """A page in a fresh headless Chromium with its own profile directory ``profile``.

    ``ignore_https_errors``: accept any certificate (a test's own CA, which
    this browser profile does not trust), for ``https://`` and ``wss://``.

    On the way out, even after a failure, the browser is closed, Playwright's
    driver stopped, and any process they started that is still running
    (Chromium's renderers, a driver that did not exit) is killed by its PID.
    """
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    before = set(_descendants())
    playwright = sync_playwright().start()
    context = None
    try:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_https_errors=ignore_https_errors,
            timeout=STEP_TIMEOUT_MS * 3,  # a cold start on a busy machine
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        yield context.new_page()
    finally:
        started = [p for pid, p in _descendants().items() if pid not in before]
        if context is not None:
            with contextlib.suppress(Exception):
                context.close()
        with contextlib.suppress(Exception):
            playwright.stop()
        _, alive = psutil.wait_procs(started, timeout=3)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=5)


class LoopThread:
    """An asyncio event loop in a daemon thread: servers and bots run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs there (a test that failed half-way), then stop the loop."""

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LinePeer:
    """An ``nc``-style peer: a plain TCP socket, lines out and in, with a timeout."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._reader = self.sock.makefile("rb")

    def send(self, line: str) -> None:
        """Send ``line`` and a newline."""
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        """The next line, without its newline (raises TimeoutError if none comes)."""
        data = self._reader.readline()
        if not data:
            raise ConnectionError("the server closed the connection")
        return data.decode().rstrip("\r\n")

    def close(self) -> None:
        """Close the socket."""
        self._reader.close()
        self.sock.close()
