"""The codecs that need no library: raw bytes and UTF-8 text."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from framework.core.codecs._base import Codec, strict_utf8
from framework.core.errors import DecodeError, EncodeError

__all__ = ["BytesCodec", "Utf8Codec"]


@attrs.frozen
class BytesCodec(Codec):
    """The identity codec: a frame is its bytes."""

    name: ClassVar[str] = "bytes"

    def decode(self, data: Any) -> bytes:
        """Return the frame as ``bytes``; anything but a bytes-like value is refused."""
        if type(data) is bytes:
            return data
        # Never bytes(data) on any value: bytes(2**40) would allocate a terabyte.
        if isinstance(data, bytearray | memoryview):
            return bytes(data)
        raise DecodeError(
            f"the bytes codec decodes bytes-like values, not {type(data).__name__}",
            codec=self.name,
        )

    def encode(self, value: Any) -> bytes:
        """Accept ``bytes``, ``bytearray`` or ``memoryview``; refuse anything else."""
        if type(value) is bytes:
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise EncodeError(
            f"the bytes codec encodes bytes-like values, not {type(value).__name__}",
            codec=self.name,
        )


@attrs.frozen
class Utf8Codec(Codec):
    """Strict UTF-8 text: invalid input is a ``DecodeError`` naming its offset."""

    name: ClassVar[str] = "utf-8"
    text: ClassVar[bool] = True

    def decode(self, data: Any) -> str:
        """Decode strictly; a bad byte sequence raises with its offset."""
        return strict_utf8(data, self.name)

    def encode(self, value: Any) -> bytes:
        """Encode a ``str``; lone surrogates and non-strings are refused."""
        if type(value) is not str:
            raise EncodeError(
                f"the utf-8 codec encodes str, not {type(value).__name__}", codec=self.name
            )
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"cannot encode character at index {exc.start} as UTF-8: {exc.reason}",
                codec=self.name,
                offset=exc.start,
            ) from exc
