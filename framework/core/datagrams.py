"""The rules of a datagram socket, without I/O: which datagrams get in, which replies go out.

A UDP socket has no connection to end and no stream to resync: a datagram
that fails a check is dropped, counted by reason, and the socket serves every
other peer. Both ends run the same :class:`DatagramGate`, in this order:

1. size: over ``Limits.max_datagram_size`` or the datagram framing's
   ``max_frame_size`` (:attr:`Drop.OVERSIZE`);
2. authentication, when the framing has ``auth``: forged, truncated or
   unknown-key datagrams (:attr:`Drop.UNAUTHENTICATED`) and replays
   (:attr:`Drop.REPLAYED`) never reach a peer, a hook or a decoder;
3. on a server, the peer's rate (:attr:`Drop.RATE_LIMITED`) and the work it
   already has running (:attr:`Drop.NO_CAPACITY`).

Then decoding: :func:`decode_datagram` gives the values, with a
:class:`~framework.core.connection.BadInput` in the place of a frame that did
not decode, as a stream does (:meth:`StreamState.receive_data
<framework.core.connection.StreamState.receive_data>`); on a datagram it is
never fatal.

On the way out, :class:`PeerState` bounds what a server sends to an address
it has not verified to ``Limits.amplification_factor`` times what it
received from it, so a spoofed source address cannot turn the server into an
amplifier.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from framework.core.connection import BadInput, ConnectionStats
from framework.core.errors import (
    AuthenticationError,
    DecodeError,
    FramingError,
    ReplayedDatagram,
    WirekitError,
)
from framework.core.limits import Limits
from framework.core.ratelimit import TokenBucket
from framework.core.security import AuthResponder, AuthSession

if TYPE_CHECKING:
    from framework.core.framing import Datagram
    from framework.core.pipeline import Pipeline

__all__ = [
    "DatagramGate",
    "DatagramStats",
    "Drop",
    "Dropped",
    "PeerState",
    "datagram_framer",
    "decode_datagram",
    "max_datagram_size",
    "seal",
    "sealer",
    "undecodable",
]


class Drop(enum.Enum):
    """Why a datagram was not handled (the value is the log's word for it)."""

    OVERSIZE = "oversize"
    UNAUTHENTICATED = "unauthenticated"
    REPLAYED = "replayed"
    RATE_LIMITED = "rate-limited"
    NO_CAPACITY = "no-capacity"
    UNDECODABLE = "undecodable"
    #: A reply, not sent: over ``amplification_factor`` to an unverified peer.
    AMPLIFICATION = "amplification"
    #: A datagram to send, dropped: the socket's buffer and the send queue were full.
    SEND_QUEUE = "send-queue"


@attrs.define
class DatagramStats:
    """Counters of a UDP socket, over all peers.

    ``received`` counts every datagram that arrived; each ``dropped_*``
    counts those dropped for one reason, ``dropped_amplification`` and
    ``dropped_send_queue`` count datagrams not sent, and ``sent`` those
    sent (handed to the socket, or queued for it).
    """

    received: int = 0
    dropped_oversize: int = 0
    dropped_undecodable: int = 0
    dropped_no_capacity: int = 0
    #: Forged, truncated, unknown-key or misdirected (``AuthenticationError``).
    dropped_unauthenticated: int = 0
    #: Authentic but seen before, or older than the anti-replay window.
    dropped_replayed: int = 0
    #: Over the peer's ``Limits.max_frames_per_second``.
    dropped_rate_limited: int = 0
    #: Replies not sent: over ``Limits.amplification_factor`` to an unverified peer.
    dropped_amplification: int = 0
    #: Datagrams not sent: the socket's buffer was full and its send queue at its bound.
    dropped_send_queue: int = 0
    sent: int = 0

    def count(self, reason: Drop) -> None:
        """Count one datagram dropped for ``reason``."""
        field = _COUNTERS[reason]
        setattr(self, field, getattr(self, field) + 1)

    def not_sent(self, size: int, conn: ConnectionStats | None) -> None:
        """Take back a ``size``-byte datagram counted as sent: the send queue dropped it."""
        self.sent -= 1
        self.dropped_send_queue += 1
        if conn is not None:
            conn.frames_out -= 1
            conn.bytes_out -= size


_COUNTERS = {
    Drop.OVERSIZE: "dropped_oversize",
    Drop.UNAUTHENTICATED: "dropped_unauthenticated",
    Drop.REPLAYED: "dropped_replayed",
    Drop.RATE_LIMITED: "dropped_rate_limited",
    Drop.NO_CAPACITY: "dropped_no_capacity",
    Drop.UNDECODABLE: "dropped_undecodable",
    Drop.AMPLIFICATION: "dropped_amplification",
    Drop.SEND_QUEUE: "dropped_send_queue",
}


@attrs.frozen
class Dropped:
    """A datagram the gate refused: why, and the error that said so (if any)."""

    reason: Drop
    error: WirekitError | None = None


#: What authentication makes of a datagram: the sender's session and the payload.
Opened = tuple[AuthSession | None, bytes]


class DatagramGate:
    """The checks before decoding, shared by a UDP server and a UDP client.

    ``max_size`` is the largest datagram accepted. ``opener`` authenticates
    a datagram and returns its session and payload, raising
    :class:`~framework.core.errors.AuthenticationError` for a forgery; None
    when the framing has no ``auth``.
    """

    __slots__ = ("max_size", "opener")

    def __init__(self, *, max_size: int, opener: Callable[[bytes], Opened] | None = None) -> None:
        self.max_size = max_size
        self.opener = opener

    @classmethod
    def for_server(cls, max_size: int, responder: AuthResponder | None) -> DatagramGate:
        """A server's gate: any client's session is opened by the responder."""
        return cls(max_size=max_size, opener=responder.open if responder is not None else None)

    @classmethod
    def for_client(cls, max_size: int, session: AuthSession | None) -> DatagramGate:
        """A client's gate: only its own session's datagrams get in."""
        if session is None:
            return cls(max_size=max_size)

        def opener(data: bytes) -> Opened:
            return session, session.open(data)

        return cls(max_size=max_size, opener=opener)

    @property
    def plain(self) -> bool:
        """Whether a datagram within ``max_size`` needs no other check (no auth)."""
        return self.opener is None

    def check(self, data: bytes) -> Opened | Dropped:
        """Size, then authentication: the session and payload, or why it was dropped."""
        if len(data) > self.max_size:
            return Dropped(Drop.OVERSIZE)
        if self.opener is None:
            return None, data
        try:
            return self.opener(data)
        except ReplayedDatagram as exc:
            return Dropped(Drop.REPLAYED, exc)
        except AuthenticationError as exc:
            return Dropped(Drop.UNAUTHENTICATED, exc)


class PeerState:
    """What a server keeps about one peer address: its rate, its session, its verification.

    ``now`` is the clock's reading when the peer's first datagram arrived.
    """

    __slots__ = ("bucket", "factor", "last_activity", "session", "stats", "verified")

    def __init__(self, limits: Limits, *, now: float) -> None:
        rate = limits.max_frames_per_second
        self.bucket = TokenBucket(rate, limits.frame_burst, now=now) if rate is not None else None
        self.factor = limits.amplification_factor
        self.last_activity = now
        #: The authentication session of this address's client: replies are sealed for it.
        self.session: AuthSession | None = None
        #: Whether the peer is known to receive what is sent to its address.
        self.verified = False
        #: The peer's counters; ``bytes_in`` and ``bytes_out`` bound the replies.
        self.stats = ConnectionStats()

    def authenticated(self, session: AuthSession) -> None:
        """An authentic datagram came from this address: it is verified, and replies go to it."""
        self.session = session
        self.verified = True

    def admit(self, now: float, *, size: int, busy: bool) -> Drop | None:
        """Rate, then capacity, for a datagram of ``size`` bytes; None if it may be handled."""
        self.stats.bytes_in += size
        self.last_activity = now
        bucket = self.bucket
        if bucket is not None and not bucket.take(now):
            return Drop.RATE_LIMITED
        if busy:
            # UDP cannot push back: a peer with too much work running loses
            # the datagram, as it would to a full socket buffer.
            return Drop.NO_CAPACITY
        return None

    def may_send(self, size: int) -> bool:
        """Whether a reply of ``size`` bytes may go out to this address now."""
        factor = self.factor
        if factor is None or self.verified:
            return True
        stats = self.stats
        return stats.bytes_out + size <= factor * stats.bytes_in


def decode_datagram(decode: Callable[[bytes], list[Any]], payload: bytes) -> list[Any]:
    """The values of one datagram; a non-fatal :class:`BadInput` where decoding failed."""
    try:
        return decode(payload)
    except (DecodeError, FramingError) as exc:
        return undecodable(exc)


def undecodable(exc: DecodeError | FramingError) -> list[Any]:
    """What a datagram that failed to decode gives: the values before it, then a BadInput."""
    # A packed datagram's frames before the bad one still count.
    values = exc.decoded
    exc.decoded = []
    return [*values, BadInput(exc, fatal=False)]


def sealer(
    session: AuthSession, framing: Datagram, encode: Callable[[Any], bytes]
) -> Callable[[Any], bytes]:
    """``encode`` then seal: one authenticated datagram per value, size checked after sealing."""

    def encode_sealed(value: Any) -> bytes:
        return seal(session, framing, encode(value))

    return encode_sealed


def datagram_framer(pipeline: Pipeline) -> Callable[[bytes], bytes]:
    """One value's payload (``pipeline.encode_frame``'s) to its datagram: size checked,
    cut by the stream framing first if the datagram is packed."""
    framing = pipeline.datagram_framing
    if not framing.packed:
        return framing.encode
    stream = pipeline.framing

    def frame(payload: bytes) -> bytes:
        data = stream.encode(payload)
        framing.check_size(len(data))
        return data

    return frame


def seal(session: AuthSession, framing: Datagram, data: bytes) -> bytes:
    """One encoded datagram, sealed for ``session``; its size checked after sealing."""
    sealed = session.seal(data)
    framing.check_size(len(sealed))
    return sealed


def max_datagram_size(pipeline: Pipeline, limits: Limits) -> int:
    """The largest datagram accepted: the smaller of the two limits that bound it."""
    framing = pipeline.datagram_framing
    if framing.max_frame_size is None:
        return limits.max_datagram_size
    return min(limits.max_datagram_size, framing.max_frame_size)
