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

The join handshake, sent once per player, starts with a 4-byte ASCII tag
instead, and never has those lengths::

    join       "JOIN" + 24-byte cookie       28 bytes
    challenge  "CHAL" + 24-byte cookie       28 bytes
    welcome    "WELC" + player (uint32)       8 bytes

The codec takes the place of ``msgpack`` in the stack: it turns bytes into
the same envelope maps (``{"type": "position", "x": ...}``) that the message
registry then turns into classes, so switching codecs is one line of config.
"""

from __future__ import annotations

import math
import struct
from typing import Any, ClassVar

from framework import TYPE_KEY, Codec, DecodeError, EncodeError
from protocols.game.messages import COOKIE_SIZE

__all__ = ["GameBinaryCodec"]

_POSITION = struct.Struct(">fffI")
_RELAYED = struct.Struct(">IfffI")
_WELCOME = struct.Struct(">4sI")
_FLOAT32_MAX = 3.4028234663852886e38
_COOKIE_TAGS = {b"JOIN": "join", b"CHAL": "challenge"}
_TAG_OF = {name: tag for tag, name in _COOKIE_TAGS.items()}


class GameBinaryCodec(Codec):
    """Envelope maps ⇄ 16-byte ``position`` / 20-byte ``relayed`` packets (float32 coordinates).

    Also the join handshake: 28-byte ``join`` and ``challenge``, 8-byte ``welcome``.
    """

    name: ClassVar[str] = "game-binary"

    def decode(self, data: Any) -> dict[str, Any]:
        """Decode a 16-byte position, a 20-byte relayed position or a handshake packet."""
        size = len(data)
        if size == _POSITION.size:
            x, y, z, count = _POSITION.unpack(data)
            return {TYPE_KEY: "position", "x": x, "y": y, "z": z, "count": count}
        if size == _RELAYED.size:
            player, x, y, z, count = _RELAYED.unpack(data)
            position = {"x": x, "y": y, "z": z, "count": count}
            return {TYPE_KEY: "relayed", "player": player, "position": position}
        tag = bytes(data[:4])
        if size == 4 + COOKIE_SIZE and tag in _COOKIE_TAGS:
            return {TYPE_KEY: _COOKIE_TAGS[tag], "cookie": bytes(data[4:])}
        if size == _WELCOME.size and tag == b"WELC":
            return {TYPE_KEY: "welcome", "player": _WELCOME.unpack(data)[1]}
        raise DecodeError(
            f"a game packet is 16 (position) or 20 (relayed) bytes, or a {4 + COOKIE_SIZE}-byte "
            f"JOIN/CHAL or {_WELCOME.size}-byte WELC packet; got {size} bytes",
            codec=self.name,
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
            if kind in _TAG_OF:
                return _TAG_OF[kind] + self._cookie(value["cookie"])
            if kind == "welcome":
                return _WELCOME.pack(b"WELC", self._uint32("player", value["player"]))
        except (KeyError, TypeError) as exc:
            raise EncodeError(f"malformed {kind} map: {exc!r}", codec=self.name) from exc
        raise EncodeError(
            "the game-binary codec encodes position, relayed, join, challenge and welcome "
            f"maps, not {value!r:.60}",
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

    def _cookie(self, cookie: Any) -> bytes:
        if type(cookie) is not bytes or len(cookie) != COOKIE_SIZE:
            raise EncodeError(
                f"a cookie is {COOKIE_SIZE} bytes in the binary layout, got {cookie!r:.60}",
                codec=self.name,
            )
        return cookie

    def _uint32(self, name: str, number: Any) -> int:
        if type(number) is not int or not 0 <= number < 2**32:
            raise EncodeError(f"{name}={number!r} does not fit a uint32", codec=self.name)
        return number
