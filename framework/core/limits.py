"""Every runtime limit in one place, with its default and the reason for it.

Framing limits (``max_frame_size``) live on the framing itself; everything a
connection or server bounds is here. Pass a :class:`Limits` to a server or
client, or set the ``[limits]`` table of a config file.
"""

from __future__ import annotations

from typing import Any

import attrs

from framework.core._registry import check_limit, limit_validator
from framework.core.errors import ConfigError

__all__ = ["MAX_UDP_PAYLOAD", "Limits"]

#: The largest payload one UDP datagram can carry over IPv4: the IP packet's
#: 16-bit total length (65,535) less the 8-byte UDP header and the 20-byte
#: IPv4 header. The default of every datagram limit, so one number rules them.
MAX_UDP_PAYLOAD = 65_535 - 8 - 20


def _positive(attribute: Any, value: Any, *, allow_none: bool, unit: str = " of seconds") -> None:
    if value is None and allow_none:
        return
    # `not value > 0` also refuses NaN; inf is allowed (no bound in practice).
    if type(value) not in (int, float) or not value > 0:
        expected = f"a positive number{unit}" + (" or None" if allow_none else "")
        raise ConfigError(
            f"{attribute.name} must be {expected}, got {value!r}",
            option=attribute.name,
            value=value,
        )


def _positive_float(_instance: Any, attribute: Any, value: Any) -> None:
    _positive(attribute, value, allow_none=True)


def _positive_ratio(_instance: Any, attribute: Any, value: Any) -> None:
    _positive(attribute, value, allow_none=True, unit="")


def _required_float(_instance: Any, attribute: Any, value: Any) -> None:
    # These timeouts bound a wait that must end: None is not offered.
    _positive(attribute, value, allow_none=False)


def _required_limit(_instance: Any, attribute: Any, value: Any) -> None:
    # The code compares against these on every read: None is not offered.
    check_limit(attribute.name, value, allow_none=False)


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what one peer, and all of them, can make a server hold.

    ``None`` disables a limit where the type allows it (``max_connections``,
    ``idle_timeout``); that is never the default.
    """

    #: Open stream connections at once; more are accepted and closed at once.
    #: 10,000 fits the default file-descriptor limits of servers (ulimit -n)
    #: with room left for the process's own files.
    max_connections: int | None = attrs.field(default=10_000, validator=limit_validator)
    #: Seconds without any bytes from a peer before the server closes its
    #: connection (or forgets its UDP peer state); a connection still not
    #: flushed one more such period after that is aborted. Five minutes
    #: outlasts any sane keep-alive period. Servers only: a client's
    #: connection stays open, however quiet, until the client closes it.
    idle_timeout: float | None = attrs.field(default=300.0, validator=_positive_float)
    #: Seconds a TLS handshake, or a WebSocket's opening HTTP request (and its
    #: close handshake), may take: a peer that stalls it holds a socket.
    handshake_timeout: float = attrs.field(default=10.0, validator=_required_float)
    #: Bytes queued for a peer before reading from it pauses. 256 KiB keeps
    #: a fast link busy while bounding what a non-reading peer can cost.
    write_high_water: int = attrs.field(default=256 * 1024, validator=_required_limit)
    #: Bytes queued below which reading resumes.
    write_low_water: int = attrs.field(default=64 * 1024, validator=_required_limit)
    #: Received values a client holds before it pauses reading until
    #: ``receive()`` catches up.
    max_queued: int = attrs.field(default=1024, validator=_required_limit)
    #: Async handlers (and hooks) running at once for one connection or UDP
    #: peer. Past it, reading from that peer pauses (a UDP peer's datagrams
    #: are dropped and counted) until half of them have finished: a peer
    #: that pipelines requests to a slow handler cannot make us hold an
    #: unbounded number of tasks. 1,024 is far more than a pipelining client
    #: keeps outstanding.
    max_inflight_handlers: int = attrs.field(default=1024, validator=_required_limit)
    #: Largest UDP datagram accepted; larger ones are dropped and counted.
    #: 65,507 bytes (MAX_UDP_PAYLOAD) is all an IPv4 UDP datagram can carry.
    max_datagram_size: int = attrs.field(default=MAX_UDP_PAYLOAD, validator=_required_limit)
    #: UDP peers tracked at once; datagrams from further new peers are dropped.
    max_peers: int = attrs.field(default=10_000, validator=_required_limit)
    #: Seconds a stream peer may take to finish a frame it has started. A peer
    #: that trickles a byte every few seconds never trips ``idle_timeout``; this
    #: closes it, and frees what it made us buffer. 30 seconds moves a
    #: default-sized (8 MiB) frame at 280 KB/s.
    frame_timeout: float | None = attrs.field(default=30.0, validator=_positive_float)
    #: Open stream connections from one peer address. 1,000 leaves room for
    #: many clients behind one NAT while keeping any single address from
    #: taking all of ``max_connections``.
    max_connections_per_peer: int | None = attrs.field(default=1000, validator=limit_validator)
    #: Frames per second one stream connection, or datagrams per second one
    #: UDP peer, may send (a token bucket). Over it, a stream connection's
    #: reading pauses until the bucket refills (nothing is lost); a UDP
    #: peer's extra datagrams are dropped and counted. Off by default: only
    #: the application knows what rate is abuse.
    max_frames_per_second: float | None = attrs.field(default=None, validator=_positive_ratio)
    #: Frames (or datagrams) a peer may send at once above the rate: the
    #: bucket's size. ``None`` means one second's worth.
    frame_burst: int | None = attrs.field(default=None, validator=limit_validator)
    #: UDP servers: bytes sent to a peer whose address is not yet verified, as
    #: a multiple of the bytes received from it. 3 is the bound QUIC
    #: (RFC 9000, section 8) sets so that a spoofed source address cannot turn
    #: the server into a reflection amplifier. ``None`` turns the bound off.
    amplification_factor: float | None = attrs.field(default=3.0, validator=_positive_ratio)
    #: Seconds a graceful shutdown waits for in-flight handlers (then cancels
    #: them), and as long again for their replies to reach peers that read
    #: (then cuts the rest off). Ten seconds is what a request/response
    #: handler should never need; SIGTERM's sender usually waits longer.
    shutdown_timeout: float = attrs.field(default=10.0, validator=_required_float)

    def __attrs_post_init__(self) -> None:
        if self.write_low_water > self.write_high_water:
            raise ConfigError(
                f"write_low_water ({self.write_low_water}) must not exceed "
                f"write_high_water ({self.write_high_water})",
                option="write_low_water",
                value=self.write_low_water,
            )
