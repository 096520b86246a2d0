"""Length-prefixed frames: a fixed-width unsigned length, then the payload.

Default wire format (4-byte big-endian payload length, header not counted)::

    +--------+--------+--------+--------+----------------+
    |  0x00  |  0x00  |  0x00  |  0x05  | h  e  l  l  o  |
    +--------+--------+--------+--------+----------------+
      length = 5 (payload only)          payload

It is the format of Twisted's ``Int32StringReceiver``, Netty's
``LengthFieldPrepender(4)`` and tokio's ``LengthDelimitedCodec``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import ClassVar, Literal, NoReturn

import attrs

from framework._registry import limit_validator
from framework.errors import ConfigError, FrameTooLarge, FramingError, IncompleteFrame, InvalidFrame
from framework.framing._base import Buffer, FrameDecoder, Framing

__all__ = ["LengthPrefix"]

_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
# 8 MiB: large enough for any message a protocol should send in one frame,
# small enough that a hostile length header cannot make us allocate much.
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
# Bytes that start a TLS record or an HTTP request: a peer speaking the wrong
# protocol is the likeliest source of an absurd length, so say so.
_FOREIGN_PREFIXES = (
    (b"\x16\x03", "a TLS handshake (is the client using tls:// on a plain port?)"),
    (b"GET ", "an HTTP request"),
    (b"POST", "an HTTP request"),
    (b"PUT ", "an HTTP request"),
    (b"HEAD", "an HTTP request"),
    (b"SSH-", "an SSH banner"),
)


def _prefix_size_valid(_instance: object, _attribute: object, value: int) -> None:
    if value not in _FORMATS:
        raise ConfigError(
            f"prefix_size must be 1, 2, 4 or 8, got {value!r}", option="prefix_size", value=value
        )


def _byteorder_valid(_instance: object, _attribute: object, value: str) -> None:
    if value not in ("big", "little"):
        raise ConfigError(
            f"byteorder must be 'big' or 'little', got {value!r}", option="byteorder", value=value
        )


def _adjustment_valid(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int:
        raise ConfigError(
            f"length_adjustment must be an integer, got {value!r}",
            option="length_adjustment",
            value=value,
        )


def foreign_protocol_hint(header: bytes) -> str:
    """Return ``" (this looks like …)"`` when ``header`` starts another protocol."""
    for prefix, what in _FOREIGN_PREFIXES:
        if header.startswith(prefix):
            return f" (this looks like {what})"
    return ""


@attrs.frozen(kw_only=True)
class LengthPrefix(Framing):
    """Frames preceded by an unsigned integer length.

    ``prefix_size`` (1, 2, 4 or 8 bytes) and ``byteorder`` describe the
    header. ``length_adjustment`` is added to the header's value to get the
    payload length: ``-prefix_size`` when the length counts the header itself.
    ``max_frame_size`` bounds the payload; a larger announced length is
    rejected as soon as its header arrives, before any payload is buffered.
    """

    name: ClassVar[str] = "length-prefix"

    prefix_size: int = attrs.field(default=4, validator=_prefix_size_valid)
    byteorder: Literal["big", "little"] = attrs.field(default="big", validator=_byteorder_valid)
    length_adjustment: int = attrs.field(default=0, validator=_adjustment_valid)
    max_frame_size: int | None = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, validator=limit_validator
    )
    _struct: struct.Struct = attrs.field(init=False, repr=False, eq=False)
    # Frame sizes encode_many may write without further checks: [low, high].
    _encodable: tuple[int, int] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        order = ">" if self.byteorder == "big" else "<"
        object.__setattr__(self, "_struct", struct.Struct(order + _FORMATS[self.prefix_size]))
        adjust = self.length_adjustment
        high = self.max_field_value + adjust
        if self.max_frame_size is not None:
            high = min(high, self.max_frame_size)
        object.__setattr__(self, "_encodable", (max(0, adjust), high))

    @property
    def max_field_value(self) -> int:
        """The largest value the header can hold."""
        return (1 << (8 * self.prefix_size)) - 1

    def decoder(self) -> FrameDecoder:
        """Return fresh per-connection decoding state."""
        return _LengthPrefixDecoder(self)

    def _header(self, size: int) -> bytes:
        limit = self.max_frame_size
        if limit is not None and size > limit:
            raise FrameTooLarge(
                f"frame of {size} bytes exceeds max_frame_size={limit}", size=size, limit=limit
            )
        field = size - self.length_adjustment
        if not 0 <= field <= self.max_field_value:
            raise InvalidFrame(
                f"a {size}-byte frame cannot be described by a {self.prefix_size}-byte "
                f"length with length_adjustment={self.length_adjustment}"
            )
        return self._struct.pack(field)

    def encode(self, frame: bytes) -> bytes:
        """Return the header followed by ``frame``."""
        return self._header(len(frame)) + frame

    def encode_many(self, frames: Iterable[bytes]) -> bytes:
        """Return the wire bytes of several frames as one buffer."""
        low, high = self._encodable
        adjust = self.length_adjustment
        pack = self._struct.pack
        parts: list[bytes] = []
        append = parts.append
        for frame in frames:
            size = len(frame)
            if low <= size <= high:
                append(pack(size - adjust))
            else:
                append(self._header(size))  # raises the precise error
            append(frame)
        return b"".join(parts)


class _LengthPrefixDecoder(FrameDecoder):
    # State machine with two states folded into `_need`: while fewer than
    # `prefix_size` bytes are pending we wait for a header; once the header is
    # known, `_need` is header + payload, so a large frame arriving in many
    # small chunks is appended, never rescanned.
    __slots__ = (
        "_adjust",
        "_failed",
        "_hsize",
        "_limit",
        "_need",
        "_offset",
        "_pending",
        "_unpack",
    )

    def __init__(self, framing: LengthPrefix) -> None:
        self._unpack = framing._struct.unpack_from
        self._hsize = framing.prefix_size
        self._adjust = framing.length_adjustment
        limit = framing.max_frame_size
        self._limit = limit if limit is not None else 1 << 64
        self._pending = bytearray()
        self._need = self._hsize
        self._offset = 0  # stream offset of the first pending byte
        self._failed: FramingError | None = None

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: Buffer) -> list[bytes]:
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}", offset=self._offset)
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return []
            buf = bytes(pending)
            pending.clear()
        else:
            buf = data if type(data) is bytes else bytes(data)
        hsize = self._hsize
        adjust = self._adjust
        limit = self._limit
        unpack = self._unpack
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        need = hsize
        while end - pos >= hsize:
            length = unpack(buf, pos)[0] + adjust
            if length > limit or length < 0:
                self._fail(buf, pos, length, frames)
            start = pos + hsize
            stop = start + length
            if stop > end:
                need = hsize + length
                break
            frames.append(buf[start:stop])
            pos = stop
        if pos < end:
            pending += memoryview(buf)[pos:]
        self._need = need
        self._offset += pos
        return frames

    def _fail(self, buf: bytes, pos: int, length: int, frames: list[bytes]) -> NoReturn:
        offset = self._offset + pos
        header = buf[pos : pos + self._hsize]
        error: FramingError
        if length < 0:
            error = InvalidFrame(
                f"length header {header.hex()} at offset {offset} gives a negative "
                f"payload length ({length})",
                offset=offset,
            )
        else:
            error = FrameTooLarge(
                f"length header at offset {offset} announces {length} bytes, over "
                f"max_frame_size={self._limit}{foreign_protocol_hint(buf[pos : pos + 4])}",
                size=length,
                limit=self._limit,
                offset=offset,
            )
        error.decoded = frames
        self._failed = error
        self._pending.clear()
        raise error

    def end(self) -> None:
        if self._pending:
            buffered = len(self._pending)
            expected = self._need if buffered >= self._hsize else None
            raise IncompleteFrame(
                f"stream ended inside a frame: {buffered} bytes buffered"
                + (f" of {expected}" if expected is not None else " (header incomplete)"),
                buffered=buffered,
                expected=expected,
                offset=self._offset,
            )
