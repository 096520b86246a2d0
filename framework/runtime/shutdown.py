"""Closing a stream connection at shutdown without losing the replies already sent.

A server that closes a TCP socket while unread bytes wait in its receive
buffer makes the kernel send a reset instead of an orderly end of stream,
and a reset throws away whatever is still in the send buffer: the replies
a slow reader had not taken yet. A peer that pipelines requests always has
some in flight when the server shuts down, so a plain ``close()`` loses
replies exactly when the shutdown promises to deliver them.

The cure is the "lingering close" of HTTP servers (Apache, nginx):

1. stop handing the peer's bytes to the pipeline: from now on they are read
   and dropped (they arrived after reading stopped, so nothing ever accepted
   them; the count is logged);
2. half-close: ``write_eof()`` sends an end of stream after every byte
   already written;
3. wait for the peer to close its side, which it does once it has read
   everything (the server's ``close()`` bounds that wait, then aborts).

The linger is for replies in flight only. A connection with nothing left
for the peer and nothing from it (asyncio's write buffer empty, every byte
acknowledged, no unread input: see :mod:`framework.runtime.transports.queued`)
closes at once: an idle peer that never reads nor closes would otherwise
hold the shutdown for its whole timeout. A lingering peer that has
acknowledged everything, the end of stream included, and sent nothing
since the shutdown began is closed too, without waiting for its own close.
A peer that still sends is waited for: closing first would answer its next
bytes with a reset, which can cost it replies it has received but not read.
Where the kernel's counts are unknown (not Linux), every connection lingers.
Replies of handlers that have finished are written before this runs
(``Connection`` flushes them in the loop iteration they finish in).

TLS cannot half-close in asyncio (``can_write_eof()`` is false): a TLS
connection gets the usual close, whose ``close_notify`` follows the data;
its TLS layer lingers the same way, and does not wait for the peer's own
``close_notify`` once the peer is quiet and has everything
(:mod:`framework.runtime.transports.tls_layer`).
"""

from __future__ import annotations

import asyncio
import logging

from framework.runtime.connection import Connection
from framework.runtime.stream import StreamConnection
from framework.runtime.transports.queued import queued_for_peer, unread_from_peer, when_delivered

__all__ = ["finish_handlers", "linger_close"]

log = logging.getLogger("wirekit.server")


class _Lingering(asyncio.Protocol):
    """Stands in for a connection being closed: drops what the peer still sends."""

    def __init__(self, conn: StreamConnection) -> None:
        self.conn = conn
        self.discarded = 0

    def data_received(self, data: bytes) -> None:
        self.discarded += len(data)

    def eof_received(self) -> bool | None:
        return None  # the peer is done too: close

    def pause_writing(self) -> None:
        # Nothing more will be written; the replies queued drain on their own.
        pass

    def resume_writing(self) -> None:
        self.conn.resume_writing()  # wakes senders still waiting in drain

    def connection_lost(self, exc: Exception | None) -> None:
        if self.discarded:
            log.info(
                "%r: dropped %d bytes the peer sent after the shutdown began",
                self.conn,
                self.discarded,
            )
        self.conn.connection_lost(exc)


def linger_close(conn: StreamConnection) -> None:
    """Close ``conn`` gracefully for a shutdown: half-close, drain, then close.

    Reading from the peer must already be stopped (no handler starts). Its
    ``wait_closed()`` ends when the peer has closed too, or when it is
    quiet and has everything (at once if nothing was in flight).
    """
    transport = conn._transport
    if (
        transport is None
        or transport.is_closing()
        or not transport.can_write_eof()
        or (queued_for_peer(transport) == 0 and unread_from_peer(transport) == 0)
    ):
        conn.close()
        return
    try:
        transport.write_eof()
    except OSError as error:
        # The peer reset the connection while reading was paused, so nothing
        # noticed: nothing written can reach it any more.
        log.info("%r: the peer was gone when the shutdown began (%s)", conn, error)
        transport.abort()
        return
    lingering = _Lingering(conn)
    transport.set_protocol(lingering)
    transport.resume_reading()
    when_delivered(transport, transport.close, quiet=lambda: lingering.discarded == 0)


async def finish_handlers(conn: Connection, timeout: float) -> None:
    """Let ``conn``'s in-flight async handlers finish (graceful shutdown), then cancel the rest.

    Values held back by ``max_inflight_handlers`` were received before the
    shutdown: they are dispatched as handlers finish, within the same
    deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tasks = conn._tasks
    while tasks:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait(set(tasks), timeout=remaining)
    if tasks:
        log.warning(
            "%r: cancelling %d handler(s) still running after %s s", conn, len(tasks), timeout
        )
        conn._held.clear()
        for task in list(tasks):
            task.cancel()
