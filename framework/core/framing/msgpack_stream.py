"""Self-delimiting msgpack values, back to back, with no extra bytes.

A msgpack value says where it ends, so a stream of them needs no framing
bytes: this is how msgpack-RPC peers (Neovim, fluentd) talk::

    93 01 02 03  a5 68 65 6c 6c 6f
    └ [1,2,3] ┘  └──── "hello" ──┘

Each frame is the raw bytes of one complete value; a codec decodes it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import ClassVar, NoReturn

import attrs
import msgpack

from framework.core._registry import limit_validator
from framework.core.errors import FrameTooLarge, FramingError, IncompleteFrame, InvalidFrame
from framework.core.framing._base import Buffer, FrameDecoder, Framing

__all__ = ["MsgpackStream"]

DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
# Input is handed to msgpack's unpacker in pieces of at most this many bytes
# when no limit is set, so one huge `feed` cannot balloon its buffer at once.
_UNBOUNDED_PIECE = 1024 * 1024

# Top-level headers whose announced byte length we can read before the body
# arrives: (header size, struct format, bytes before the body besides the length).
_SIZED_HEADERS: dict[int, tuple[int, str]] = {
    0xC4: (2, ">B"), 0xC5: (3, ">H"), 0xC6: (5, ">I"),  # bin 8/16/32
    0xD9: (2, ">B"), 0xDA: (3, ">H"), 0xDB: (5, ">I"),  # str 8/16/32
    0xC7: (3, ">B"), 0xC8: (4, ">H"), 0xC9: (6, ">I"),  # ext 8/16/32 (+ type byte)
}  # fmt: skip


# msgpack's Unpacker.skip() takes an ext 32 header announcing 2**32 - 1 bytes
# for a complete 5-byte value (the length plus its type byte overflows 32
# bits), and the frames after it are then cut in the wrong places. Frames
# completed in a chunk holding these bytes are checked with _value_end.
_EXT32_OVERFLOW = b"\xc9\xff\xff\xff\xff"

# Every first byte from 0xc4 up: (bytes before the payload or children,
# struct format of the length, what the length counts: 0 payload bytes,
# 1 children, 2 key/value pairs). No format: a value of fixed size.
_LAYOUT: dict[int, tuple[int, str | None, int]] = {
    0xC4: (2, ">B", 0), 0xC5: (3, ">H", 0), 0xC6: (5, ">I", 0),  # bin
    0xC7: (3, ">B", 0), 0xC8: (4, ">H", 0), 0xC9: (6, ">I", 0),  # ext (+ type byte)
    0xCA: (5, None, 0), 0xCB: (9, None, 0),  # float 32/64
    0xCC: (2, None, 0), 0xCD: (3, None, 0), 0xCE: (5, None, 0), 0xCF: (9, None, 0),  # uint
    0xD0: (2, None, 0), 0xD1: (3, None, 0), 0xD2: (5, None, 0), 0xD3: (9, None, 0),  # int
    0xD4: (3, None, 0), 0xD5: (4, None, 0), 0xD6: (6, None, 0), 0xD7: (10, None, 0),
    0xD8: (18, None, 0),  # fixext 1/2/4/8/16
    0xD9: (2, ">B", 0), 0xDA: (3, ">H", 0), 0xDB: (5, ">I", 0),  # str
    0xDC: (3, ">H", 1), 0xDD: (5, ">I", 1),  # array
    0xDE: (3, ">H", 2), 0xDF: (5, ">I", 2),  # map
}  # fmt: skip


def _value_end(buf: bytes) -> int | None:
    """Where the msgpack value at the start of ``buf`` ends; ``None`` if after ``buf``.

    A plain-Python twin of ``Unpacker.skip`` without its ext 32 overflow;
    raises ``ValueError`` for the byte 0xc1, which msgpack never uses.
    """
    pos, end, todo = 0, len(buf), 1
    while todo:
        if pos >= end:
            return None
        byte = buf[pos]
        todo -= 1
        if byte <= 0x7F or byte >= 0xE0 or byte in (0xC0, 0xC2, 0xC3):
            pos += 1
        elif byte <= 0x8F:  # fixmap
            todo += 2 * (byte & 0x0F)
            pos += 1
        elif byte <= 0x9F:  # fixarray
            todo += byte & 0x0F
            pos += 1
        elif byte <= 0xBF:  # fixstr
            pos += 1 + (byte & 0x1F)
        elif byte == 0xC1:
            raise ValueError("0xc1 is not a msgpack type")
        else:
            header, fmt, counts = _LAYOUT[byte]
            if fmt is None:
                pos += header
                continue
            if pos + header > end:
                return None
            (length,) = struct.unpack_from(fmt, buf, pos + 1)
            pos += header
            if counts:
                todo += counts * length
            else:
                pos += length
    return pos if pos <= end else None


def _announced_size(buf: bytes | bytearray) -> int | None:
    """Total size of the str/bin/ext value starting ``buf``, if its header says so."""
    if not buf:
        return None
    entry = _SIZED_HEADERS.get(buf[0])
    if entry is None:
        return None
    header, fmt = entry
    if len(buf) < 1 + struct.calcsize(fmt):  # an ext's type byte may not be here yet
        return None
    (length,) = struct.unpack_from(fmt, buf, 1)
    return int(header + length)


@attrs.frozen(kw_only=True)
class MsgpackStream(Framing):
    """Back-to-back msgpack values, each one a frame.

    The framer checks that the bytes are well-formed msgpack (nesting is
    bounded by msgpack's own stack of 1024 levels) but does not build the
    values: the ``msgpack`` codec does that, with its own limits.
    ``max_frame_size`` bounds one value's encoded size; a str, bin or ext
    value announcing more is rejected from its header.
    """

    name: ClassVar[str] = "msgpack-stream"

    max_frame_size: int | None = attrs.field(
        default=DEFAULT_MAX_FRAME_SIZE, validator=limit_validator
    )

    def decoder(self) -> FrameDecoder:
        """Return fresh per-connection decoding state."""
        return _MsgpackStreamDecoder(self.max_frame_size)

    def encode(self, frame: bytes) -> bytes:
        """Return ``frame``, which must hold exactly one msgpack value."""
        limit = self.max_frame_size
        if limit is not None and len(frame) > limit:
            raise FrameTooLarge(
                f"frame of {len(frame)} bytes exceeds max_frame_size={limit}",
                size=len(frame),
                limit=limit,
            )
        # Checked by the decoder itself, so that every frame it delivers can
        # be sent back (unpackb would refuse valid values it cannot build,
        # such as a map keyed by an array, or an ext type it does not know).
        data = bytes(frame)
        checker = _MsgpackStreamDecoder(limit)
        try:
            frames = checker.feed(data)
        except FramingError as exc:
            raise InvalidFrame(f"a msgpack-stream frame must be one msgpack value: {exc}") from exc
        if frames != [data]:
            raise InvalidFrame(
                "a msgpack-stream frame must be one msgpack value: "
                + ("it is cut short" if not frames else f"it holds {len(frames)} values or more")
            )
        return data

    def encode_packed(self, frames: Iterable[bytes]) -> bytes:
        """Wire bytes of frames a msgpack packer produced: only their size is checked.

        :meth:`encode` parses each frame to refuse anything but one msgpack
        value; a pipeline's encoder whose codec nearest the wire is
        ``msgpack`` knows its frames are exactly that, and skips the parse.
        """
        limit = self.max_frame_size
        frames = frames if isinstance(frames, list) else list(frames)
        if limit is not None:
            for frame in frames:
                if len(frame) > limit:
                    raise FrameTooLarge(
                        f"frame of {len(frame)} bytes exceeds max_frame_size={limit}",
                        size=len(frame),
                        limit=limit,
                    )
        return b"".join(frames)


class _MsgpackStreamDecoder(FrameDecoder):
    # `next_frame` is the same rule one value at a time, each with a fresh
    # unpacker (rescanning: it is the reference the fast `feed` is tested
    # against, not a path that serves connections).
    __slots__ = ("_base", "_limit", "_pending", "_piece", "_unpacker")

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self._limit = limit if limit is not None else 1 << 64
        self._piece = limit if limit is not None else _UNBOUNDED_PIECE
        # Complete values are skipped after every piece, so the unpacker holds
        # at most one partial value (<= limit) plus one piece.
        buffer_size = 0 if limit is None else 2 * limit
        self._unpacker = msgpack.Unpacker(max_buffer_size=buffer_size)
        self._pending = bytearray()  # raw bytes of the value in progress
        self._base = 0  # stream offset of pending[0]

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
        rest = bytes(buffer[start:])
        offset = self._offset + start
        limit = self._limit
        announced = _announced_size(rest)
        if announced is not None and announced > limit:
            raise self._too_large(announced, offset)
        unpacker = msgpack.Unpacker(max_buffer_size=len(rest) or 1)
        unpacker.feed(rest)
        try:
            unpacker.skip()
        except msgpack.OutOfData:
            if len(rest) > limit:
                raise self._too_large(len(rest), offset) from None
            return None
        except msgpack.StackError as exc:
            raise InvalidFrame("msgpack value nested deeper than 1024 levels") from exc
        except (ValueError, msgpack.UnpackException) as exc:
            raise InvalidFrame(f"malformed msgpack at offset {offset}") from exc
        size = unpacker.tell()
        if size > limit:
            raise self._too_large(size, offset)
        frame = rest[:size]
        if _EXT32_OVERFLOW in rest:
            try:
                whole = _value_end(frame) == size
            except ValueError as exc:
                raise InvalidFrame(f"malformed msgpack at offset {offset}") from exc
            if not whole:
                raise InvalidFrame(
                    f"msgpack ext value announcing 2**32 - 1 bytes at offset {offset}"
                )
        return frame, start + size

    def _too_large(self, size: int, offset: int) -> FrameTooLarge:
        return FrameTooLarge(
            f"msgpack value at offset {offset} is at least {size} bytes, over "
            f"max_frame_size={self._limit}",
            size=size,
            limit=self._limit,
            offset=offset,
        )

    def feed(self, data: Buffer) -> list[bytes]:
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}", offset=self._base)
        frames: list[bytes] = []
        size = len(data)
        piece = self._piece
        if size <= piece:
            self._feed_piece(data if type(data) is bytes else bytes(data), frames)
        else:
            view = memoryview(data)
            for start in range(0, size, piece):
                self._feed_piece(bytes(view[start : start + piece]), frames)
        return frames

    def _feed_piece(self, chunk: bytes, frames: list[bytes]) -> None:
        unpacker = self._unpacker
        unpacker.feed(chunk)
        pending = self._pending
        if not self._skip(frames):
            # Nothing completed: append without copying what is already held.
            pending += chunk
            self._check_partial(frames)
            return
        if pending:
            pending += chunk
            buf = bytes(pending)
            pending.clear()
        else:
            buf = chunk
        base = self._base
        prev = base
        limit = self._limit
        append = frames.append
        suspect = _EXT32_OVERFLOW in buf
        pos = unpacker.tell()
        while True:
            if pos - prev > limit:
                self._fail_size(pos - prev, prev, frames)
            frame = buf[prev - base : pos - base]
            if suspect:
                self._check_frame(frame, frames)
            append(frame)
            prev = self._base = pos  # errors name the offset of the value at fault
            if not self._skip(frames):
                break
            pos = unpacker.tell()
        if prev - base < len(buf):
            pending += memoryview(buf)[prev - base :]
            self._check_partial(frames)

    def _skip(self, frames: list[bytes]) -> bool:
        try:
            self._unpacker.skip()
        except msgpack.OutOfData:
            return False
        except msgpack.StackError as exc:
            self._fail(InvalidFrame("msgpack value nested deeper than 1024 levels"), exc, frames)
        except (ValueError, msgpack.UnpackException) as exc:
            self._fail(InvalidFrame(f"malformed msgpack at offset {self._base}"), exc, frames)
        return True

    def _check_frame(self, frame: bytes, frames: list[bytes]) -> None:
        """Fail if ``frame`` is not one whole value: skip() read an ext 32 overflow."""
        try:
            end = _value_end(frame)
        except ValueError as exc:
            self._fail(InvalidFrame(f"malformed msgpack at offset {self._base}"), exc, frames)
        if end == len(frame):
            return
        announced = _announced_size(frame)
        if announced is not None and announced > self._limit:
            self._fail_size(announced, self._base, frames)
        self._fail(
            InvalidFrame(f"msgpack ext value announcing 2**32 - 1 bytes at offset {self._base}"),
            None,
            frames,
        )

    def _check_partial(self, frames: list[bytes]) -> None:
        pending = self._pending
        announced = _announced_size(pending)
        if announced is not None and announced > self._limit:
            self._fail_size(announced, self._base, frames)
        if len(pending) > self._limit:
            self._fail_size(len(pending), self._base, frames)

    def _fail_size(self, size: int, offset: int, frames: list[bytes]) -> NoReturn:
        self._fail(self._too_large(size, offset), None, frames)

    def _fail(self, error: FramingError, cause: Exception | None, frames: list[bytes]) -> NoReturn:
        error.offset = self._base if error.offset is None else error.offset
        error.decoded = frames
        self._failed = error
        self._pending.clear()
        raise error from cause

    def end(self) -> None:
        if self._pending:
            raise IncompleteFrame(
                f"stream ended inside a msgpack value: {len(self._pending)} bytes buffered",
                buffered=len(self._pending),
                expected=_announced_size(self._pending),
                offset=self._base,
            )
