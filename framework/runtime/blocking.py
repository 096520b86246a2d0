"""A blocking facade for scripts and game loops that are not async.

An event loop runs in a background thread; these classes hand it work and
wait with timeouts::

    with BlockingClient("udp://127.0.0.1:9000", pipeline) as client:
        client.send(Position(1.0, 2.0, 3.0, count=1))
        reply = client.receive(timeout=1.0)

    with ServerThread(app, "tcp://127.0.0.1:0") as server:
        print(server.url)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from framework.core.endpoints import Endpoint
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.websocket import WebSocketOptions
from framework.runtime import Connection, Server, connect
from framework.runtime.app import App
from framework.runtime.tls import TlsOptions

__all__ = ["BlockingClient", "ServerThread"]

T = TypeVar("T")


class _LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        # The timeout is enforced inside the loop: a value that arrives just as
        # time runs out is either returned or left queued, never dropped
        # between the two threads.
        async def bounded() -> T:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class BlockingClient:
    """A client connection with plain blocking calls (one background thread)."""

    def __init__(
        self,
        url: str | Endpoint,
        pipeline: Pipeline,
        *,
        timeout: float | None = 10.0,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        websocket: WebSocketOptions | None = None,
    ) -> None:
        self.timeout = timeout
        self._thread = _LoopThread("wirekit-client")
        try:
            self._conn: Connection = self._thread.run(
                self._open(url, pipeline, limits, tls, timeout, websocket), timeout
            )
        except BaseException:
            self._thread.stop()
            raise

    @staticmethod
    async def _open(
        url: str | Endpoint,
        pipeline: Pipeline,
        limits: Limits | None,
        tls: TlsOptions | None,
        timeout: float | None,
        websocket: WebSocketOptions | None,
    ) -> Connection:
        return await connect(
            url, pipeline, limits=limits, tls=tls, timeout=timeout, websocket=websocket
        )

    @property
    def connection(self) -> Connection:
        """The underlying async connection (use it only from the client's loop)."""
        return self._conn

    def send(self, value: Any, *, timeout: float | None = None) -> None:
        """Send ``value``; waits (up to ``timeout``) while the peer is not keeping up."""
        self._thread.run(self._conn.send(value), timeout if timeout is not None else self.timeout)

    def receive(self, *, timeout: float | None = None) -> Any:
        """The next value from the peer; raises ``TimeoutError`` after ``timeout`` seconds."""
        return self._thread.run(
            self._conn.receive(), timeout if timeout is not None else self.timeout
        )

    def request(self, value: Any, *, timeout: float | None = None) -> Any:
        """Send ``value`` and return the next value received."""
        self.send(value, timeout=timeout)
        return self.receive(timeout=timeout)

    def close(self) -> None:
        """Close the connection gracefully and stop the background thread."""
        if self._thread.loop.is_closed():
            return

        async def shut() -> None:
            self._conn.close()
            await self._conn.wait_closed()

        try:
            self._thread.run(shut(), self.timeout)
        finally:
            self._thread.stop()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ServerThread:
    """An app served from a background thread, for scripts and tests."""

    def __init__(
        self,
        app: App,
        url: str | Endpoint,
        *,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        self._thread = _LoopThread("wirekit-server")
        self.timeout = timeout
        try:
            self.server: Server = self._thread.run(self._start(app, url, limits, tls), timeout)
        except BaseException:
            self._thread.stop()
            raise

    @staticmethod
    async def _start(
        app: App, url: str | Endpoint, limits: Limits | None, tls: TlsOptions | None
    ) -> Server:
        return await app.start(url, limits=limits, tls=tls)

    @property
    def url(self) -> str:
        """The bound URL."""
        return self.server.url

    def stop(self) -> None:
        """Shut down gracefully and stop the thread."""
        if self._thread.loop.is_closed():
            return
        try:
            self._thread.run(self.server.close(), None)
        finally:
            self._thread.stop()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
