"""Delimited frames: each frame ends with a delimiter, ``b"\\n"`` by default.

::

    h  e  l  l  o \\r \\n  w  o  r  l  d \\n
    └──── "hello" ────┘  └── "world" ──┘      (a trailing \\r is stripped)

The limit is enforced while scanning: a peer that never sends the delimiter
is rejected once ``max_frame_size`` bytes have arrived without one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar, Literal

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

__all__ = ["Delimited"]

# 64 KiB: far longer than any line a text protocol exchanges, and the same
# order as the line limits of common servers (asyncio streams default to 64 KiB).
DEFAULT_MAX_LINE = 64 * 1024


def _delimiter_valid(_instance: object, _attribute: object, value: bytes) -> None:
    if type(value) is not bytes or not value:
        raise ConfigError(
            f"delimiter must be non-empty bytes, got {value!r}", option="delimiter", value=value
        )


def _on_oversize_valid(_instance: object, _attribute: object, value: str) -> None:
    if value not in ("close", "skip"):
        raise ConfigError(
            f"on_oversize must be 'close' or 'skip', got {value!r}",
            option="on_oversize",
            value=value,
        )


def _delimiter_converter(value: bytes | str) -> bytes:
    # Config files are text: accept "\n" as a str and encode it.
    return value.encode("utf-8") if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class Delimited(Framing):
    """Frames separated by ``delimiter`` (a newline by default).

    With the default ``b"\\n"`` delimiter and ``strip_cr=True`` a ``\\r``
    before the newline is removed, so ``\\r\\n`` peers (telnet) work.
    ``max_frame_size`` counts the bytes before the delimiter.

    ``on_oversize`` chooses what follows an over-long frame: ``"close"`` (the
    decoder fails, the connection should end) or ``"skip"`` (the error is
    raised once, the decoder discards through the next delimiter and goes on:
    the next ``feed`` call, ``feed(b"")`` will do, returns the frames that
    followed the long one in the same chunk).
    """

    name: ClassVar[str] = "newline"

    delimiter: bytes = attrs.field(
        default=b"\n", converter=_delimiter_converter, validator=_delimiter_valid
    )
    strip_cr: bool = True
    max_frame_size: int | None = attrs.field(default=DEFAULT_MAX_LINE, validator=limit_validator)
    on_oversize: Literal["close", "skip"] = attrs.field(
        default="close", validator=_on_oversize_valid
    )

    @property
    def _strips_cr(self) -> bool:
        return self.strip_cr and self.delimiter == b"\n"

    def decoder(self) -> FrameDecoder:
        """Return fresh per-connection decoding state."""
        return _DelimitedDecoder(self)

    def _check(self, frame: bytes) -> None:
        delimiter = self.delimiter
        if delimiter in frame:
            raise InvalidFrame(f"frame contains the delimiter {delimiter!r}")
        if len(delimiter) > 1:
            # A delimiter that overlaps itself (b"\0\0", b"\r\n\r\n") can begin
            # inside the frame's last bytes: the decoder would cut there.
            tail = frame[1 - len(delimiter) :] + delimiter
            if tail.find(delimiter) != len(tail) - len(delimiter):
                raise InvalidFrame(
                    f"frame ends with bytes that, followed by the delimiter {delimiter!r}, "
                    "contain the delimiter early"
                )
        if self._strips_cr and frame.endswith(b"\r"):
            raise InvalidFrame("frame ends with '\\r', which the decoder would strip")
        limit = self.max_frame_size
        if limit is not None and len(frame) > limit:
            raise FrameTooLarge(
                f"frame of {len(frame)} bytes exceeds max_frame_size={limit}",
                size=len(frame),
                limit=limit,
            )

    def encode(self, frame: bytes) -> bytes:
        """Return ``frame`` followed by the delimiter."""
        self._check(frame)
        return frame + self.delimiter

    def encode_many(self, frames: Iterable[bytes]) -> bytes:
        """Return the wire bytes of several frames as one buffer."""
        frames = list(frames)
        if not frames:
            return b""
        delimiter = self.delimiter
        if len(delimiter) == 1 and set(map(type, frames)) == {bytes}:
            # Checked on the joined bytes, in C: no frame holds the delimiter
            # if the delimiters counted are exactly those joined in, and none
            # ends with '\r' if no '\r\n' appears (no frame holds '\n').
            data = delimiter.join(frames) + delimiter
            limit = self.max_frame_size
            if (
                data.count(delimiter) == len(frames)
                and not (self._strips_cr and b"\r" in data and b"\r\n" in data)
                and (limit is None or max(map(len, frames)) <= limit)
            ):
                return data
        for frame in frames:
            self._check(frame)  # raises the error of the first bad frame
        return delimiter.join(frames) + delimiter

    def text_joiner(self) -> Callable[[list[str]], bytes | None] | None:
        """For a UTF-8 text encoder: the wire bytes of ``str`` frames in one C pass.

        The returned function encodes a list of ``str`` frames joined by the
        delimiter, or returns None when it cannot vouch for the result (a
        frame holds the delimiter, would lose a ``\\r``, may be too long, or
        cannot be encoded): the caller then encodes frame by frame, which
        raises the precise error. ``None`` when a subclass changes
        ``encode_many``, or the delimiter is not one ASCII byte.
        """
        delimiter = self.delimiter
        if type(self).encode_many is not Delimited.encode_many or not (
            len(delimiter) == 1 and delimiter[0] < 128
        ):
            return None
        sep = delimiter.decode("ascii")
        strips = self._strips_cr
        limit = self.max_frame_size if self.max_frame_size is not None else 1 << 64

        def join(frames: list[str]) -> bytes | None:
            try:
                data = (sep.join(frames) + sep).encode("utf-8")
            except UnicodeEncodeError:
                return None
            # The checks of encode_many, on the joined bytes: delimiters are
            # only those joined in, no '\r\n' (no frame ends with '\r'),
            # and no frame over the limit.
            count = len(frames)
            if (
                data.count(delimiter) != count
                or (strips and b"\r" in data and b"\r\n" in data)
                or (
                    len(data) - count > limit
                    and not _short_lines(data, delimiter, len(data), limit)
                )
            ):
                return None
            return data

        return join


def _short_lines(data: bytes, delim: bytes, stop: int, limit: int) -> bool:
    """Whether no frame of ``data[:stop]`` is over ``limit`` bytes, by a few ``find`` calls.

    False means "not known": count the frames' lengths. A frame over the
    limit holds a whole block of ``(limit + 1) // 2`` bytes, aligned on a
    multiple of that size, with no delimiter starting in it; so if a
    delimiter starts in every such block, no frame is over the limit. Worth
    it only for a few blocks: a read a little over a long limit.
    """
    step = (limit + 1) // 2
    if not step or stop > 8 * step:
        return False
    reach = step + len(delim) - 1
    find = data.find
    return all(find(delim, start, start + reach) >= 0 for start in range(0, stop - step + 1, step))


def _may_end_in_time(pending: Buffer, size: int, delim: bytes, limit: int) -> bool:
    """Whether a delimiter starting within ``limit`` could still complete ``pending[:size]``."""
    first = max(0, size - len(delim) + 1)
    last = min(limit, size - 1)
    return any(delim.startswith(pending[start:size]) for start in range(first, last + 1))


class _DelimitedDecoder(FrameDecoder):
    # `_scanned` remembers how far the pending bytes are known to hold no
    # delimiter, so a long line arriving a byte at a time is scanned once.
    #
    # `next_frame` is the same rule one line at a time over the base class's
    # buffer (rescanning: it is the reference the fast `feed` is tested
    # against, not a path that serves connections); `_skipping` and `_tail`
    # are its discarding state.
    __slots__ = (
        "_delim",
        "_discarding",
        "_limit",
        "_pending",
        "_scanned",
        "_skip",
        "_skipping",
        "_strip_cr",
        "_tail",
    )

    def __init__(self, framing: Delimited) -> None:
        super().__init__()
        self._skipping = False
        self._delim = framing.delimiter
        self._strip_cr = framing._strips_cr
        limit = framing.max_frame_size
        self._limit = limit if limit is not None else 1 << 64
        self._skip = framing.on_oversize == "skip"
        self._pending = bytearray()
        self._scanned = 0
        self._offset = 0  # stream offset of the first pending byte
        self._discarding = False
        # While discarding: the last len(delimiter) - 1 bytes seen, which may
        # begin a delimiter that the next chunk completes.
        self._tail = b""

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
        delim = self._delim
        index = buffer.find(delim, start)
        if self._skipping:
            return self._skip_line(buffer, start, index)
        limit = self._limit
        if index < 0:
            size = len(buffer) - start
            if size > limit and not _may_end_in_time(buffer[start:], size, delim, limit):
                offset = self._offset + start
                self._skipping = self._skip
                if self._skip:
                    # Drop the long line now; keep aside what may begin a delimiter.
                    keep = len(delim) - 1
                    self._tail = bytes(buffer[max(start, len(buffer) - keep) :]) if keep else b""
                    self._drop(buffer, start, len(buffer))
                raise self._too_long(
                    f"no delimiter within max_frame_size={limit} bytes (at least {size} "
                    f"bytes buffered) at offset {offset}",
                    size,
                    offset,
                )
            return None
        size = index - start
        if size > limit:
            offset = self._offset + start
            if self._skip:
                self._drop(buffer, start, index + len(delim))  # the next frame follows
            raise self._too_long(
                f"frame of {size} bytes at offset {offset} exceeds max_frame_size={limit}",
                size,
                offset,
            )
        if self._strip_cr and size and buffer[index - 1] == 13:
            return bytes(buffer[start : index - 1]), index + len(delim)
        return bytes(buffer[start:index]), index + len(delim)

    def _skip_line(self, buffer: bytearray, start: int, index: int) -> tuple[None, int]:
        """While skipping a long line: drop through its delimiter, or all the bytes so far."""
        delim = self._delim
        keep = len(delim) - 1
        tail = self._tail
        # A delimiter may straddle the bytes kept aside and these.
        straddle = (tail + bytes(buffer[start : start + keep])).find(delim) if tail else -1
        if straddle >= 0 or index >= 0:
            self._skipping = False
            self._tail = b""
            if straddle >= 0:
                return None, start + straddle + len(delim) - len(tail)
            return None, index + len(delim)
        self._tail = (tail + bytes(buffer[start:]))[-keep:] if keep else b""
        return None, len(buffer)

    def _drop(self, buffer: bytearray, start: int, stop: int) -> None:
        """Skip ``buffer[start:stop]`` before raising a recoverable error, as ``feed`` does."""
        del buffer[start:stop]
        self._offset += stop - start

    def _too_long(self, message: str, size: int, offset: int) -> FrameTooLarge:
        error = FrameTooLarge(message, size=size, limit=self._limit, offset=offset)
        error.recoverable = self._skip
        return error

    def feed(self, data: Buffer) -> list[bytes]:
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}", offset=self._offset)
        delim = self._delim
        if self._discarding:
            after = self._discard(data)
            if after is None:
                return []
            data = after
        pending = self._pending
        if pending:
            pending += data
            first = pending.find(delim, self._scanned)
            if first < 0:
                self._after_partial(len(pending), [])
                return []
            buf = bytes(pending)
            pending.clear()
        else:
            buf = data if type(data) is bytes else bytes(data)
            first = buf.find(delim)
        limit = self._limit
        strip_cr = self._strip_cr
        if first >= 0 and not (strip_cr and b"\r" in buf):
            # Every line of the chunk cut by bytes.split, in C. split cuts
            # where the loop below would (leftmost, non-overlapping); the
            # loop stays for what needs a line at a time: a line over the
            # limit (its precise error) and carriage returns to strip.
            frames = buf.split(delim)
            last = frames.pop()
            # No line is longer than all of them together; a read longer
            # than the limit is checked by a few searches (_short_lines),
            # else by a pass over the lines' lengths.
            cut = len(buf) - len(last)
            if (
                cut <= limit
                or _short_lines(buf, delim, cut, limit)
                or max(map(len, frames)) <= limit
            ):
                self._offset += cut
                if last:
                    pending += last
                    self._after_partial(len(last), frames)
                return frames
        frames = []
        append = frames.append
        dlen = len(delim)
        pos = 0
        index = first
        while index >= 0:
            if index - pos > limit:
                self._oversize(buf, pos, index, frames)
                return frames  # unreachable unless skipping: _oversize raises
            if strip_cr and index > pos and buf[index - 1] == 13:
                append(buf[pos : index - 1])
            else:
                append(buf[pos:index])
            pos = index + dlen
            index = buf.find(delim, pos)
        rest = len(buf) - pos
        self._offset += pos
        if rest:
            pending += memoryview(buf)[pos:]
            self._after_partial(rest, frames)
        return frames

    def _discard(self, data: Buffer) -> Buffer | None:
        """Drop bytes through the next delimiter; return what follows it, if it came."""
        delim = self._delim
        keep = len(delim) - 1
        chunk = data if type(data) is bytes else bytes(data)
        tail = self._tail
        # A delimiter may straddle the previous chunk and this one.
        index = (tail + chunk[:keep]).find(delim) if tail else -1
        if index >= 0:
            skipped = index + len(delim) - len(tail)
        else:
            index = chunk.find(delim)
            if index < 0:
                self._offset += len(chunk)
                self._tail = (tail + chunk[-keep:])[-keep:] if keep else b""
                return None
            skipped = index + len(delim)
        self._discarding = False
        self._tail = b""
        self._offset += skipped
        return memoryview(chunk)[skipped:]

    def _after_partial(self, size: int, frames: list[bytes]) -> None:
        # The delimiter may straddle two chunks: rescan its last len-1 bytes.
        delim = self._delim
        self._scanned = max(0, size - len(delim) + 1)
        # The buffered tail may still be the start of a delimiter that ends a
        # frame no longer than the limit: not over it yet.
        if size > self._limit and not _may_end_in_time(self._pending, size, delim, self._limit):
            keep = len(delim) - 1
            self._tail = bytes(self._pending[-keep:]) if keep else b""
            self._pending.clear()
            self._scanned = 0
            error = self._too_long(
                f"no delimiter within max_frame_size={self._limit} bytes "
                f"(at least {size} bytes buffered) at offset {self._offset}",
                size,
                self._offset,
            )
            error.decoded = frames
            if self._skip:
                self._discarding = True
                self._offset += size
            else:
                self._failed = error
            raise error

    def _oversize(self, buf: bytes, pos: int, index: int, frames: list[bytes]) -> None:
        size = index - pos
        offset = self._offset + pos
        error = self._too_long(
            f"frame of {size} bytes at offset {offset} exceeds max_frame_size={self._limit}",
            size,
            offset,
        )
        error.decoded = frames
        if self._skip:
            # Keep what follows the long line: it is the next frame's start.
            after = index + len(self._delim)
            self._offset = offset + (after - pos)
            self._pending[:] = memoryview(buf)[after:]
            self._scanned = 0
        else:
            self._failed = error
        raise error

    def end(self) -> None:
        if self._pending:
            raise IncompleteFrame(
                f"stream ended inside a frame: {len(self._pending)} bytes without a delimiter",
                buffered=len(self._pending),
                offset=self._offset,
            )
