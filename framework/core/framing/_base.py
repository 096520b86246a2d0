"""The framing contract: an immutable description that makes per-connection decoders."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

__all__ = ["Buffer", "FrameDecoder", "Framing"]

#: What a decoder accepts: any contiguous bytes-like chunk.
Buffer = bytes | bytearray | memoryview


class FrameDecoder(ABC):
    """Per-connection state that cuts a byte stream into frames.

    ``feed`` takes chunks of any size, from one byte to many megabytes, and
    returns every frame the chunk completes, in order, in one call. It raises a
    :class:`~framework.core.errors.FramingError` when the stream is malformed; the
    error's ``decoded`` holds the frames completed earlier in the same call.
    After an error the decoder refuses further input, unless the framing
    documents a way to recover (``Delimited(on_oversize="skip")``).
    """

    __slots__ = ()

    @abstractmethod
    def feed(self, data: Buffer) -> list[bytes]:
        """Add ``data`` to the stream; return the frames it completes."""

    @abstractmethod
    def end(self) -> None:
        """Declare end of stream: raises ``IncompleteFrame`` if a frame was cut short."""

    @property
    @abstractmethod
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""


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
