"""The transport side of a connection: what every adapter gives the shared dispatch.

:class:`~framework.runtime.connection.Connection` is the handlers' API and the
dispatch every transport shares; it does no I/O. What it needs from the
transport underneath is :class:`TransportSide`: write values, say whether
writing is backed up or closing, wait for a drain, pause and resume reading
for a named reason, and close. Each adapter implements all of it (the stream
adapter over asyncio's stream transports, the WebSocket adapter, the UDP peers
and client): ``Connection`` inherits the protocol explicitly and every method
is abstract, so an adapter that leaves one out fails when it is made (and
under mypy), instead of inheriting a method that silently does nothing.

A new transport is an asyncio protocol (or any code that receives bytes) that
subclasses ``Connection`` and implements these methods; see "How to add a
transport" in ``docs/explanation/layers.md``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, Protocol

from framework.core.connection import ReadPause

__all__ = ["Encoding", "TransportSide", "unframed"]


class Encoding(NamedTuple):
    """How a connection writes one value's payload: see ``Connection.send_encoded``.

    A value's payload is what its pipeline's codec stack makes of it
    (``conn.pipeline.encode_frame(value)``); ``frame`` turns that payload
    into what ``send_encoded`` takes. Connections whose ``key`` s are equal
    get the same bytes from ``frame`` (one pipeline, one kind of transport):
    a broadcaster encodes a value once per pipeline, frames it once per
    key, and hands the bytes to every connection.
    """

    #: Equal for the connections whose ``frame`` gives the same bytes; cheap to hash.
    key: Hashable
    #: A payload to one value's wire form (raises ``EncodeError``, e.g. ``FrameTooLarge``).
    frame: Callable[[bytes], bytes]


def unframed(payload: bytes) -> bytes:
    """An :attr:`Encoding.frame` for a transport that writes the payload as it is."""
    return payload


class TransportSide(Protocol):
    """What the shared dispatch asks of the transport (every method, none has a default).

    The names are private on purpose: they are the contract between
    ``Connection`` and its adapters, not part of the handlers' API.
    """

    @abc.abstractmethod
    def close(self) -> None:
        """Close gracefully: data already queued is sent first."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping unsent data."""

    @abc.abstractmethod
    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        """Encode and send ``values`` (raises ``ConnectionClosed`` once closing).

        ``strict`` (the application's own ``send``): an encoding error
        propagates. Otherwise (handler replies) a value that cannot be
        encoded is logged and counted, and the others still go out.
        """

    #: How this connection frames one value's payload for ``send_encoded``
    #: (each adapter sets it as it makes the connection).
    encoding: Encoding

    @abc.abstractmethod
    def _write_encoded(self, data: bytes) -> None:
        """Send one value ``encoding.frame`` made (``ConnectionClosed`` once closing)."""

    @abc.abstractmethod
    def _closing(self) -> bool:
        """Whether the transport is closing or closed: nothing more can be sent."""

    @abc.abstractmethod
    def _backed_up(self) -> bool:
        """Whether the data queued for the peer is over ``Limits.write_high_water``."""

    @abc.abstractmethod
    async def _drain(self) -> None:
        """Wait until the peer has read enough of what is queued (``send``'s wait)."""

    @abc.abstractmethod
    def _pause_reading(self, reason: ReadPause) -> None:
        """Stop reading from the peer for ``reason`` (reasons add up)."""

    @abc.abstractmethod
    def _resume_reading(self, reason: ReadPause) -> None:
        """``reason`` is gone: read again once no other reason is left."""

    @abc.abstractmethod
    def _pause_inbox(self) -> None:
        """``receive()``'s queue reached ``Limits.max_queued``: push back or drop."""

    @abc.abstractmethod
    def _resume_inbox(self) -> None:
        """``receive()``'s queue fell to half ``Limits.max_queued``."""

    @abc.abstractmethod
    def _stop_reading(self) -> None:
        """Read nothing more from the peer (graceful shutdown): no new work starts."""

    @abc.abstractmethod
    def _all_done(self) -> None:
        """Every handler has finished and nothing is held (a half-closed stream may close)."""
