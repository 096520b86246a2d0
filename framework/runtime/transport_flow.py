"""The adapters over an asyncio stream transport share this: set-up, flow control, read pauses.

:class:`~framework.runtime.stream.StreamConnection` (TCP, TLS, Unix, memory)
and :class:`~framework.runtime.websocket.WebSocketConnection` both sit on an
asyncio stream transport. asyncio tells them when the peer reads slower than
they write (``pause_writing``/``resume_writing``); ``send`` then waits for a
drain, and reading stops until the peer catches up. The transport reads only
while no :class:`~framework.core.connection.ReadPause` reason is set: each
adapter keeps its reasons where its rules are (the stream's state machine, the
WebSocket adapter itself) and says so through :meth:`_read_paused`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any

from framework.core.connection import ReadPause
from framework.runtime.connection import Connection

__all__ = ["TransportConnection"]


class TransportConnection(Connection):
    """A connection over an asyncio stream transport (the base of both stream adapters)."""

    # The adapters' own __init__ sets these up (see _init_transport): their
    # constructors take different arguments, and the hot path reads them as
    # plain attributes.
    _transport: asyncio.Transport | None
    _reading: bool
    _write_paused: bool
    _drain_waiters: list[asyncio.Future[None]]

    def _init_transport(self) -> None:
        """Set up the fields of this class, before ``connection_made``."""
        self._transport = None
        # Whether the transport reads; _read_paused() says whether it should.
        self._reading = True
        self._write_paused = False
        self._drain_waiters = []

    def _adopt_stream(
        self, transport: asyncio.Transport, on_made: Callable[[Any], bool] | None
    ) -> bool:
        """Take the new ``transport``; ``False`` if ``on_made`` refused it.

        A socket transport starts closing only when told to (close, abort, a
        failed write), never in the middle of our read; an in-process one
        (memory://, fault injection) can be reset or aborted by the other end
        at any moment: it is watched from the start.
        """
        self._transport = transport
        self._watch_close = transport.get_extra_info("socket") is None
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(
            high=self._limits.write_high_water, low=self._limits.write_low_water
        )
        if on_made is not None and not on_made(self):
            # Refused (max_connections, shutdown): the application never
            # saw it, so no disconnect hook runs for it either.
            self._router = None
            self._watch_close = True
            transport.abort()
            return False
        return True

    # -- asyncio's write flow control ----------------------------------------------

    def pause_writing(self) -> None:
        # The peer reads slower than we write: stop reading from it, so it
        # cannot make us buffer replies without bound.
        self._write_paused = True
        self._pause_reading(ReadPause.WRITES_BACKED_UP)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_reading(ReadPause.WRITES_BACKED_UP)
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        """Release every ``send`` waiting for a drain (written, or the connection ended)."""
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _backed_up(self) -> bool:
        return self._write_paused

    async def _drain(self) -> None:
        if self._write_paused and not self.closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self.closed:
            raise self._ended(f"connection #{self.id} closed")

    # -- read pauses ---------------------------------------------------------------

    def _pause_inbox(self) -> None:
        self._pause_reading(ReadPause.INBOX_FULL)

    def _resume_inbox(self) -> None:
        self._resume_reading(ReadPause.INBOX_FULL)

    @abc.abstractmethod
    def _read_paused(self) -> bool:
        """Whether any reason to stop reading is set."""

    def _sync_reading(self) -> None:
        """Pause or resume the transport as the pause reasons say."""
        should = not self._read_paused()
        transport = self._transport
        if should is self._reading or transport is None or transport.is_closing():
            return
        self._reading = should
        if should:
            transport.resume_reading()
        else:
            transport.pause_reading()
