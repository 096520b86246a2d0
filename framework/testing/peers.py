"""A scripted stream peer: the client a test drives byte by byte.

Servers must survive clients that are slow, half-closed, or gone mid-frame.
:class:`ScriptedPeer` is such a client, written as a script: it writes raw
bytes (``write``, or ``trickle`` a few bytes at a time), half-closes,
resets, and records what comes back and when the server hung up.
"""

from __future__ import annotations

import asyncio
from typing import cast

from framework.core.endpoints import parse_url
from framework.runtime.connection import ConnectionClosed
from framework.runtime.transports.base import open_stream

__all__ = ["ScriptedPeer"]


class ScriptedPeer(asyncio.Protocol):
    """A raw client on any plain stream endpoint (``memory://``, ``tcp://``, ``unix://``).

    ``received`` is every byte the server sent; ``eof_at`` the
    ``loop.time()`` at which the server ended its side; ``closed_at`` when
    the connection ended, and ``error`` the exception it ended with (``None``
    for a clean close). Like most clients it closes when the server ends its
    side; with ``keep_open`` it stays half-open and can go on sending.
    """

    def __init__(self, *, keep_open: bool = False) -> None:
        self.received = bytearray()
        self.eof_at: float | None = None
        self.closed_at: float | None = None
        self.error: Exception | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._arrived = asyncio.Event()
        self._keep_open = keep_open
        self._done_sending = False
        self._peer_done = False

    @classmethod
    async def connect(cls, url: str, *, keep_open: bool = False) -> ScriptedPeer:
        """Connect a new peer to ``url``."""
        _transport, protocol = await open_stream(parse_url(url), lambda: cls(keep_open=keep_open))
        assert isinstance(protocol, ScriptedPeer)
        return protocol

    async def __aenter__(self) -> ScriptedPeer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.abort()
        await self.wait_closed()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data
        self._arrived.set()

    def eof_received(self) -> bool:
        self.eof_at = self._loop.time()
        self._peer_done = True
        self._arrived.set()
        # Half-open only if asked, and only while we still have things to send.
        return self._keep_open and not self._done_sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = self._loop.time()
        self.error = exc
        if not self._lost.done():
            self._lost.set_result(None)
        self._arrived.set()

    # -- the script -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._lost.done()

    def write(self, data: bytes) -> None:
        """Send ``data`` now (nothing happens once the connection has ended)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def trickle(self, data: bytes, *, every: float, size: int = 1) -> int:
        """Send ``data`` ``size`` bytes at a time, one piece every ``every`` seconds.

        Returns how many bytes were written before the connection ended (all
        of them if it did not).
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        written = 0
        for start in range(0, len(data), size):
            if start:
                await asyncio.sleep(every)
            if self.closed:
                break
            piece = data[start : start + size]
            self.write(piece)
            written += len(piece)
        return written

    def write_eof(self) -> None:
        """Half-close: the server sees the end of the stream; replies still arrive."""
        if self._transport is not None and not self._transport.is_closing():
            self._done_sending = True
            if self._peer_done:
                self._transport.close()  # both directions are over
            else:
                self._transport.write_eof()

    def close(self) -> None:
        """Close after what was written."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Reset the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    async def receive(self, size: int) -> bytes:
        """Wait until ``size`` bytes in all have arrived; return everything received.

        Raises :class:`~framework.runtime.connection.ConnectionClosed` if the
        connection ends first.
        """
        while len(self.received) < size:
            if self.closed:
                raise ConnectionClosed(
                    f"closed after {len(self.received)} of {size} bytes", peer=None
                ) from self.error
            self._arrived.clear()
            await self._arrived.wait()
        return bytes(self.received)

    async def wait_closed(self) -> Exception | None:
        """Wait until the connection ends; return the exception it ended with."""
        await asyncio.shield(self._lost)
        return self.error
