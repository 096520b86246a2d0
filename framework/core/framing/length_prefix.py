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
from collections.abc import Callable, Iterable
from typing import ClassVar, Literal, NamedTuple

import attrs

from framework.core._registry import limit_validator
from framework.core.errors import (
    ConfigError,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
)
from framework.core.framing._base import Buffer, FrameDecoder, Framing

__all__ = ["HeaderWriter", "LengthPrefix", "join_frames"]

_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
# 8 MiB: large enough for any message a protocol should send in one frame,
# small enough that a hostile length header cannot make us allocate much.
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
# Bytes that start a TLS record or an HTTP request: a peer speaking the wrong
# protocol is the likeliest source of an absurd length, so say so.
_FOREIGN_PREFIXES = (
    (b"\x16\x03", "a TLS handshake (is the client using tls:// on a plain port?)"),
    # What a TLS server answers a plaintext client with.
    (b"\x15\x03", "a TLS alert (is the server speaking tls://? connect with tls://)"),
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


class HeaderWriter(NamedTuple):
    """How a length prefix writes headers: the one table every encoder uses.

    For a frame of ``size`` bytes with ``low <= size <= high``, its header is
    ``pack(size - adjust)``, with no further check; ``header(size)`` gives
    the header of a frame of any size, or raises the precise error
    (``FrameTooLarge`` over the limit, ``InvalidFrame`` if the header cannot
    hold it). ``adjust`` is the framing's ``length_adjustment``: when it is
    0 (a *plain* header), ``pack(len(frame))`` is the header.
    """

    pack: Callable[[int], bytes]
    adjust: int
    low: int
    high: int
    header: Callable[[int], bytes]


def join_frames(writer: HeaderWriter, frames: Iterable[bytes]) -> bytes:
    """The wire bytes of ``frames``, each after the header ``writer`` writes for it."""
    pack, adjust, low, high, header = writer
    parts: list[bytes] = []
    append = parts.append
    for frame in frames:
        size = len(frame)
        append(pack(size - adjust) if low <= size <= high else header(size))
        append(frame)
    return b"".join(parts)


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
    _writer: HeaderWriter = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        order = ">" if self.byteorder == "big" else "<"
        layout = struct.Struct(order + _FORMATS[self.prefix_size])
        object.__setattr__(self, "_struct", layout)
        adjust = self.length_adjustment
        # Frame sizes whose header needs no check: the field holds them, the limit allows them.
        high = self.max_field_value + adjust
        if self.max_frame_size is not None:
            high = min(high, self.max_frame_size)
        writer = HeaderWriter(layout.pack, adjust, max(0, adjust), high, self._checked_header)
        object.__setattr__(self, "_writer", writer)

    @property
    def max_field_value(self) -> int:
        """The largest value the header can hold."""
        return (1 << (8 * self.prefix_size)) - 1

    def decoder(self) -> FrameDecoder:
        """Return fresh per-connection decoding state."""
        return _LengthPrefixDecoder(self)

    def header_writer(self) -> HeaderWriter | None:
        """How this framing writes headers, for encoders that frame values as they go.

        ``None`` when a subclass changes ``encode`` or ``encode_many``: the
        wire format may then be more than header and payload.
        """
        cls = type(self)
        if cls.encode is not LengthPrefix.encode or cls.encode_many is not LengthPrefix.encode_many:
            return None
        return self._writer

    def _checked_header(self, size: int) -> bytes:
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
        return self._checked_header(len(frame)) + frame

    def encode_many(self, frames: Iterable[bytes]) -> bytes:
        """Return the wire bytes of several frames as one buffer."""
        return join_frames(self._writer, frames)


class _LengthPrefixDecoder(FrameDecoder):
    # Two states. Between frames (or inside a header) at most ``prefix_size -
    # 1`` bytes wait in ``_head``. Once a header is known and its payload has
    # not all arrived, the payload's pieces are kept as they came in
    # ``_parts`` and joined once, when the last one arrives: a large frame
    # arriving in many chunks is copied once, not regrown with every chunk
    # (appending to a bytearray reallocates, and copies, on most appends:
    # quadratic in the number of chunks). The chunk that completes a frame is
    # then cut in place, without copying what follows the frame.
    #
    # ``buffered`` is a plain attribute, kept up to date by ``feed``: a
    # connection reads it after every read (for ``frame_timeout``), and an
    # attribute costs a fraction of a property call there.
    #
    # ``next_frame`` is the same rule one frame at a time, over the base
    # class's buffer: the reference the fast ``feed`` is tested against.
    __slots__ = (
        "_adjust",
        "_have",
        "_head",
        "_hsize",
        "_limit",
        "_need",
        "_parts",
        "_unpack",
        "buffered",
    )

    buffered: int  # an attribute here, a property in the base

    def __init__(self, framing: LengthPrefix) -> None:
        super().__init__()
        self._unpack = framing._struct.unpack_from
        self._hsize = framing.prefix_size
        self._adjust = framing.length_adjustment
        limit = framing.max_frame_size
        self._limit = limit if limit is not None else 1 << 64
        self._head = b""  # an incomplete header
        self._parts: list[bytes | memoryview] = []  # the payload so far of a known header
        self._have = 0  # payload bytes in _parts
        self._need = 0  # payload bytes the known header announced
        self.buffered = 0

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
        body = start + self._hsize
        if len(buffer) < body:
            return None
        length = self._unpack(buffer, start)[0] + self._adjust
        if length < 0 or length > self._limit:
            raise self._broken(buffer, start, length, self._offset + start)
        end = body + length
        if len(buffer) < end:
            return None
        return bytes(buffer[body:end]), end

    def feed(self, data: Buffer) -> list[bytes]:
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}", offset=self._offset)
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse its buffer; we keep pieces
        frames: list[bytes] = []
        parts = self._parts
        if parts:
            if not data:
                return frames
            parts.append(data)
            have = self._have + len(data)
            need = self._need
            if have < need:
                self._have = have
                self.buffered = self._hsize + have
                return frames
            cut = len(data) - (have - need)
            if cut < len(data):
                parts[-1] = memoryview(data)[:cut]
            frames.append(b"".join(parts))
            parts.clear()
            self._have = 0
            self._offset += self._hsize + need
            buf = data
            pos = cut
        elif self._head:
            buf = self._head + data
            self._head = b""
            pos = 0
        else:
            buf = data
            pos = 0
        hsize = self._hsize
        adjust = self._adjust
        limit = self._limit
        unpack = self._unpack
        append = frames.append
        end = len(buf)
        start = pos
        if not adjust and limit >= end:
            # The usual header, and a limit above the chunk's size: a frame
            # that fits in the chunk is within the limit and its length is
            # not negative, so this loop, once per frame, tests neither. A
            # frame that does not fit leaves it, to the loop below.
            last = end - hsize
            while pos <= last:
                body = pos + hsize
                stop = body + unpack(buf, pos)[0]
                if stop > end:
                    break
                append(buf[body:stop])
                pos = stop
        while end - pos >= hsize:
            body = pos + hsize
            length = unpack(buf, pos)[0]
            if adjust:
                length += adjust
                if length < 0:
                    break
            if length > limit:
                break
            stop = body + length
            if stop > end:
                # Keep only the payload's first piece (a copy: holding a view
                # would pin the whole chunk); the rest is appended as it comes.
                parts.append(buf[body:])
                self._have = end - body
                self._need = length
                self._offset += pos - start
                self.buffered = end - pos
                return frames
            append(buf[body:stop])
            pos = stop
        else:
            if pos < end:
                self._head = buf[pos:]
            self._offset += pos - start
            self.buffered = end - pos
            return frames
        # A length over the limit, or negative: the stream is broken here.
        self._offset += pos - start
        raise self._failure(buf, pos, length, frames)

    def _broken(self, buf: Buffer, pos: int, length: int, offset: int) -> FramingError:
        """The error for the header at ``pos`` announcing ``length`` bytes: negative or too many."""
        header = bytes(buf[pos : pos + self._hsize])
        if length < 0:
            return InvalidFrame(
                f"length header {header.hex()} at offset {offset} gives a negative "
                f"payload length ({length})",
                offset=offset,
            )
        return FrameTooLarge(
            f"length header at offset {offset} announces {length} bytes, over "
            f"max_frame_size={self._limit}{foreign_protocol_hint(bytes(buf[pos : pos + 4]))}",
            size=length,
            limit=self._limit,
            offset=offset,
        )

    def _failure(self, buf: bytes, pos: int, length: int, frames: list[bytes]) -> FramingError:
        """Record the stream as broken at ``pos``; return the error to raise."""
        error = self._broken(buf, pos, length, self._offset)
        error.decoded = frames
        self._failed = error
        self._head = b""
        self._parts.clear()
        self.buffered = 0
        return error

    def end(self) -> None:
        buffered = self.buffered
        if buffered:
            expected = self._hsize + self._need if self._parts else None
            raise IncompleteFrame(
                f"stream ended inside a frame: {buffered} bytes buffered"
                + (f" of {expected}" if expected is not None else " (header incomplete)"),
                buffered=buffered,
                expected=expected,
                offset=self._offset,
            )
