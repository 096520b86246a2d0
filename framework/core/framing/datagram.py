"""Datagram framing: one datagram is one frame, with nothing added on the wire.

Unless ``auth`` is set: then the UDP runtime seals every datagram it sends
and opens every datagram it receives with that
:class:`~framework.core.security.HmacAuth` (a header and a tag around the
payload), before any decoding.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from framework.core._registry import limit_validator
from framework.core.errors import ConfigError, FrameTooLarge
from framework.core.framing._base import Buffer, FrameDecoder, Framing
from framework.core.limits import MAX_UDP_PAYLOAD
from framework.core.security import OVERHEAD, HmacAuth

__all__ = ["Datagram"]


def _check_auth(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, HmacAuth):
        raise ConfigError(f"auth must be an HmacAuth or None, got {value!r}", option="auth")


@attrs.frozen(kw_only=True)
class Datagram(Framing):
    """One datagram, one frame: the boundary is the packet's own.

    ``packed=True`` lets one datagram carry several frames, cut by the
    pipeline's stream framing; a frame cut short by the end of a datagram is
    then an error. ``max_frame_size`` bounds the datagram (65,507 bytes, all
    that IPv4 UDP can carry), authentication included.

    ``auth=HmacAuth(keys)`` authenticates every datagram (see
    :mod:`framework.core.security`): the UDP runtime opens each one it receives
    and drops forged, replayed and truncated ones before decoding them, and
    seals each one it sends. ``Pipeline.decode_datagram`` and
    ``encode_datagram`` handle the payload inside; the runtime does the rest.

    A ``Datagram`` framing cannot cut a byte stream: a pipeline whose framing
    is ``Datagram`` serves datagram transports only.
    """

    name: ClassVar[str] = "datagram"
    streaming: ClassVar[bool] = False

    max_frame_size: int | None = attrs.field(default=MAX_UDP_PAYLOAD, validator=limit_validator)
    packed: bool = False
    auth: HmacAuth | None = attrs.field(default=None, validator=_check_auth)

    @property
    def overhead(self) -> int:
        """Bytes the framing adds to each datagram: the authentication header and tag, or 0."""
        return OVERHEAD if self.auth is not None else 0

    def check_size(self, size: int) -> None:
        """Raise ``FrameTooLarge`` if a datagram of ``size`` bytes is over the limit."""
        limit = self.max_frame_size
        if limit is not None and size > limit:
            raise FrameTooLarge(
                f"datagram of {size} bytes exceeds max_frame_size={limit}", size=size, limit=limit
            )

    def decoder(self) -> FrameDecoder:
        """Return a decoder that treats each ``feed`` as one whole datagram."""
        return _DatagramDecoder(self)

    def encode(self, frame: bytes) -> bytes:
        """Return ``frame`` unchanged, after checking its size."""
        self.check_size(len(frame))
        return bytes(frame)


class _DatagramDecoder(FrameDecoder):
    # Not a stream: each feed is a whole datagram, so this decoder replaces
    # the base class's loop (and buffer) instead of finding frames in it.
    __slots__ = ("_framing",)

    def __init__(self, framing: Datagram) -> None:
        self._framing = framing

    @property
    def buffered(self) -> int:
        return 0

    def feed(self, data: Buffer) -> list[bytes]:
        self._framing.check_size(len(data))
        return [data if type(data) is bytes else bytes(data)]

    def end(self) -> None:
        return None
