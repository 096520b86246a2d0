"""The framing contract: an immutable description that makes per-connection decoders."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

from framework.core.errors import FramingError, IncompleteFrame

__all__ = ["Buffer", "FrameDecoder", "Framing"]

#: What a decoder accepts: any contiguous bytes-like chunk.
Buffer = bytes | bytearray | memoryview


class FrameDecoder:
    """Per-connection state that cuts a byte stream into frames.

    A framer implements one method, :meth:`next_frame`: find the frame that
    starts at ``buffer[start]``. This class owns the rest, the way tokio's
    ``Decoder`` and Netty's ``ByteToMessageDecoder`` do: the buffer, the loop
    that asks for frames until one is incomplete, the latch that refuses
    input after an error, end of stream, and each error's ``decoded``.

    ``feed`` takes chunks of any size, from one byte to many megabytes, and
    returns every frame the chunk completes, in order, in one call. It raises a
    :class:`~framework.core.errors.FramingError` when the stream is malformed; the
    error's ``decoded`` holds the frames completed earlier in the same call.
    After an error the decoder refuses further input, unless the error is
    ``recoverable`` (``Delimited(on_oversize="skip")``).

    The built-in framings override :meth:`feed`, :meth:`end` and
    :attr:`buffered` with faster equivalents; their :meth:`next_frame` is the
    reference those are tested against.
    """

    __slots__ = ("_buffer", "_failed", "_offset")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0]
        self._failed: FramingError | None = None

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes | None, int] | None:
        """Find the frame that begins at ``buffer[start]``.

        Return ``(frame, end)``, where ``end`` is where the next frame
        begins; ``None`` for "need more bytes"; or raise a ``FramingError``
        (its ``offset``, if left unset, becomes the frame's stream offset). A
        ``None`` frame drops ``buffer[start:end]`` without delivering anything.
        After ``None`` the next call sees the same bytes at ``buffer[start:]``,
        followed by more, though ``start`` may differ: keep any memo (a header
        already read, how far a scan got) relative to ``start``.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement next_frame (or override feed, "
            "end and buffered)"
        )

    def feed(self, data: Buffer) -> list[bytes]:
        """Add ``data`` to the stream; return the frames it completes."""
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}", offset=self._offset)
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        try:
            while start < len(buffer):
                found = self.next_frame(buffer, start)
                if found is None:
                    break
                frame, end = found
                if end <= start:
                    # A frame of no bytes would be found again forever.
                    raise RuntimeError(f"{type(self).__qualname__}.next_frame consumed nothing")
                if frame is not None:
                    frames.append(frame)
                start = end
        except FramingError as error:
            if error.offset is None:
                error.offset = self._offset + start
            error.decoded = frames
            del buffer[:start]
            self._offset += start
            if not error.recoverable:
                self._failed = error
                buffer.clear()
            raise
        # Drop what was cut once per chunk, not once per frame.
        del buffer[:start]
        self._offset += start
        return frames

    def end(self) -> None:
        """Declare end of stream: raises ``IncompleteFrame`` if a frame was cut short."""
        buffered = len(self._buffer)
        if buffered:
            raise IncompleteFrame(
                f"stream ended inside a frame: {buffered} bytes buffered",
                buffered=buffered,
                offset=self._offset,
            )

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return len(self._buffer)


class Framing(ABC):
    """How a byte stream is cut into frames: an immutable, shareable description.

    One ``Framing`` serves any number of connections: each gets its own
    :meth:`decoder`. Encoding is stateless. Subclasses are attrs classes whose
    limit is the ``max_frame_size`` attribute (``None`` means unbounded, and is
    only ever a deliberate choice).
    """

    #: The name config files and the command line use.
    name: ClassVar[str]
    #: Whether this framing can cut a continuous byte stream (``Datagram`` cannot).
    streaming: ClassVar[bool] = True

    max_frame_size: int | None

    @abstractmethod
    def decoder(self) -> FrameDecoder:
        """Return fresh per-connection decoding state."""

    @abstractmethod
    def encode(self, frame: bytes) -> bytes:
        """Return the wire bytes of one frame."""

    def encode_many(self, frames: Iterable[bytes]) -> bytes:
        """Return the wire bytes of several frames, in order, as one buffer."""
        return b"".join([self.encode(frame) for frame in frames])
