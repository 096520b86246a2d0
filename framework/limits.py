"""Every runtime limit in one place, with its default and the reason for it.

Framing limits (``max_frame_size``) live on the framing itself; everything a
connection or server bounds is here. Pass a :class:`Limits` to a server or
client, or set the ``[limits]`` table of a config file.
"""

from __future__ import annotations

from typing import Any

import attrs

from framework._registry import limit_validator
from framework.errors import ConfigError

__all__ = ["Limits"]


def _positive_float(_instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if type(value) not in (int, float) or not value > 0:
        raise ConfigError(
            f"{attribute.name} must be a positive number of seconds or None, got {value!r}",
            option=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what one peer, and all of them, can make a server hold.

    ``None`` disables a limit; that is never the default.
    """

    #: Open stream connections at once; more are accepted and closed at once.
    #: 10,000 fits the default file-descriptor limits of servers (ulimit -n)
    #: with room left for the process's own files.
    max_connections: int | None = attrs.field(default=10_000, validator=limit_validator)
    #: Seconds without any bytes from a peer before its connection (or UDP
    #: peer state) is closed. Five minutes outlasts any sane keep-alive period.
    idle_timeout: float | None = attrs.field(default=300.0, validator=_positive_float)
    #: Seconds a TLS handshake may take: a peer that stalls it holds a socket.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive_float)
    #: Bytes queued for a peer before reading from it pauses. 256 KiB keeps
    #: a fast link busy while bounding what a non-reading peer can cost.
    write_high_water: int = attrs.field(default=256 * 1024, validator=limit_validator)
    #: Bytes queued below which reading resumes.
    write_low_water: int = attrs.field(default=64 * 1024, validator=limit_validator)
    #: Received values a client holds before it pauses reading until
    #: ``receive()`` catches up.
    max_queued: int = attrs.field(default=1024, validator=limit_validator)
    #: Largest UDP datagram accepted; larger ones are dropped and counted.
    #: 65,507 bytes is all an IPv4 UDP datagram can carry.
    max_datagram_size: int = attrs.field(default=65_507, validator=limit_validator)
    #: UDP peers tracked at once; datagrams from further new peers are dropped.
    max_peers: int = attrs.field(default=10_000, validator=limit_validator)
    #: Seconds a graceful shutdown waits for in-flight handlers before closing.
    shutdown_timeout: float = attrs.field(default=10.0, validator=_positive_float)
