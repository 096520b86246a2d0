"""A fixed-layout binary codec for the game packets: the worked example of a custom codec.

``position`` is 16 bytes, network byte order (big-endian)::

    0        4        8        12       16
    +--------+--------+--------+--------+
    |   x    |   y    |   z    | count  |
    +--------+--------+--------+--------+
     float32  float32  float32  uint32

``relayed`` is the sender's player number (uint32) followed by those 16
bytes: 20 bytes. The length tells the two apart, so the codec needs no tag
byte and a game-engine client builds a packet with one ``struct.pack``.

The codec takes the place of ``msgpack`` in the stack: it turns bytes into
the same envelope maps (``{"type": "position", "x": ...}``) that the message
registry then turns into classes, so switching codecs is one line of config.
"""

from __future__ import annotations

import math
import struct
from typing import Any, ClassVar

from framework import TYPE_KEY, Codec, DecodeError, EncodeError

__all__ = ["GameBinaryCodec"]

_POSITION = struct.Struct(">fffI")
_RELAYED = struct.Struct(">IfffI")
_FLOAT32_MAX = 3.4028234663852886e38


class GameBinaryCodec(Codec):
    """Envelope maps ⇄ 16-byte ``position`` / 20-byte ``relayed`` packets (float32 coordinates)."""

    name: ClassVar[str] = "game-binary"

    def decode(self, data: Any) -> dict[str, Any]:
        """Decode a 16-byte position or a 20-byte relayed position into its envelope map."""
        size = len(data)
        if size == _POSITION.size:
            x, y, z, count = _POSITION.unpack(data)
            return {TYPE_KEY: "position", "x": x, "y": y, "z": z, "count": count}
        if size == _RELAYED.size:
            player, x, y, z, count = _RELAYED.unpack(data)
            position = {"x": x, "y": y, "z": z, "count": count}
            return {TYPE_KEY: "relayed", "player": player, "position": position}
        raise DecodeError(
            f"a game packet is 16 (position) or 20 (relayed) bytes, got {size}", codec=self.name
        )

    def encode(self, value: Any) -> bytes:
        """Encode a ``position`` or ``relayed`` envelope map; bad numbers raise ``EncodeError``."""
        kind = value.get(TYPE_KEY) if isinstance(value, dict) else None
        try:
            if kind == "position":
                return _POSITION.pack(*self._fields(value))
            if kind == "relayed":
                player = self._uint32("player", value["player"])
                return _RELAYED.pack(player, *self._fields(value["position"]))
        except (KeyError, TypeError) as exc:
            raise EncodeError(f"malformed {kind} map: {exc!r}", codec=self.name) from exc
        raise EncodeError(
            f"the game-binary codec encodes position and relayed maps, not {value!r:.60}",
            codec=self.name,
        )

    def _fields(self, fields: dict[str, Any]) -> tuple[float, float, float, int]:
        coordinates = [self._float32(name, fields[name]) for name in ("x", "y", "z")]
        return (
            coordinates[0],
            coordinates[1],
            coordinates[2],
            self._uint32("count", fields["count"]),
        )

    def _float32(self, name: str, number: Any) -> float:
        if type(number) not in (int, float) or (
            math.isfinite(number) and abs(number) > _FLOAT32_MAX
        ):
            raise EncodeError(f"{name}={number!r} does not fit a float32", codec=self.name)
        return float(number)

    def _uint32(self, name: str, number: Any) -> int:
        if type(number) is not int or not 0 <= number < 2**32:
            raise EncodeError(f"{name}={number!r} does not fit a uint32", codec=self.name)
        return number
