"""The UDP client: a connected socket to one server address, as a Connection.

:func:`framework.connect` makes one for a ``udp://`` URL. The rules of what
it accepts are the core's (:class:`~framework.core.datagrams.DatagramGate`);
what it shares with a server's peers is :class:`~framework.runtime.datagram.DatagramConnection`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from framework.core.connection import BadInput
from framework.core.datagrams import (
    DatagramGate,
    DatagramStats,
    Drop,
    Dropped,
    datagram_framer,
    decode_datagram,
    max_datagram_size,
    seal,
    sealer,
)
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.security import AuthSession
from framework.runtime.connection import ConnectionClosed, Encoding
from framework.runtime.datagram import DatagramConnection
from framework.runtime.transports.udp import SendQueueFull

__all__ = ["DatagramClient"]

log = logging.getLogger("wirekit.udp")


class DatagramClient(DatagramConnection, asyncio.DatagramProtocol):
    """A client's UDP socket, connected to one server address."""

    def __init__(self, pipeline: Pipeline, *, limits: Limits) -> None:
        super().__init__(pipeline, router=None, limits=limits)
        self.transport: asyncio.DatagramTransport | None = None
        #: Counters of this socket, by reason (``dropped_rate_limited`` and
        #: ``dropped_amplification`` are the server's and stay 0 here).
        self.datagram_stats = DatagramStats()
        framing = pipeline.datagram_framing
        #: The authentication session (a fresh random session id per client), or None.
        self.session: AuthSession | None = (
            framing.auth.session() if framing.auth is not None else None
        )
        self._gate = DatagramGate.for_client(max_datagram_size(pipeline, limits), self.session)
        self._encode: Callable[[Any], bytes] = pipeline.encode_datagram
        self.encoding = Encoding(("datagram", id(pipeline)), datagram_framer(pipeline))
        if self.session is not None:
            self._encode = sealer(self.session, framing, pipeline.encode_datagram)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.peer = transport.get_extra_info("peername")

    @property
    def address_verified(self) -> bool:
        """Always true: a client chose its server's address."""
        return True

    def verify_address(self) -> None:
        """Nothing to do on a client (see :meth:`DatagramPeer.verify_address`)."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats.bytes_in += len(data)
        stats = self.datagram_stats
        stats.received += 1
        opened = self._gate.check(data)
        if isinstance(opened, Dropped):
            stats.count(opened.reason)
            if opened.error is not None:
                self.stats.errors += 1
                log.debug("%r: dropped datagram: %s", self, opened.error)
            return
        values = decode_datagram(self.pipeline.decode_datagram, opened[1])
        if values and type(values[-1]) is BadInput:
            # Nothing a client receives closes it: the bad datagram is dropped.
            error = values.pop().error
            stats.count(Drop.UNDECODABLE)
            self.stats.errors += 1
            log.info("%r: dropped datagram: %s", self, error)
        if values:
            self._deliver(values)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, SendQueueFull):  # counted as sent, then dropped
            self.datagram_stats.not_sent(exc.size, self.stats)
        log.debug("%r: UDP error: %s", self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed(exc)

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        encode = self._encode
        datagrams = (
            [encode(value) for value in values] if strict else self._encode_each(values, encode)
        )
        for data in datagrams:
            self._sendto(transport, data)

    def _write_encoded(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("UDP socket is closed", peer=self.peer)
        if self.session is not None:
            data = seal(self.session, self.pipeline.datagram_framing, data)
        self._sendto(transport, data)

    def _sendto(self, transport: asyncio.DatagramTransport, data: bytes) -> None:
        # Counted first: one the transport drops is taken back off in error_received.
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        self.datagram_stats.sent += 1
        transport.sendto(data)

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _drop_stats(self) -> DatagramStats:
        return self.datagram_stats

    def close(self) -> None:
        """Close the socket."""
        self._watch_close = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close the socket."""
        self._watch_close = True
        if self.transport is not None:
            self.transport.abort()
