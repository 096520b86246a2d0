"""The inputs every scenario works on, built deterministically (fixed seeds).

Buffers are about 1 MiB, cut into whole frames; ``chunks`` cuts a buffer the
way a socket delivers it, 64 KiB at a time, so frames straddle chunk edges.
"""

from __future__ import annotations

import random
import struct

import attrs
import msgpack

from framework import message

__all__ = [
    "BUFFER_SIZE",
    "CHUNK_SIZE",
    "Position",
    "chunks",
    "length_prefixed",
    "msgpack_values",
    "positions",
    "text_lines",
]

BUFFER_SIZE = 1024 * 1024
CHUNK_SIZE = 64 * 1024
PAYLOAD_SIZE = 64
POSITION_COUNT = 10_000


@message("position")
@attrs.frozen
class Position:
    """The typed message of the quick start: a point and a counter."""

    x: float
    y: float
    z: float
    count: int


def chunks(buf: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    """Cut ``buf`` into consecutive ``size``-byte pieces, as reads from a socket."""
    return [buf[start : start + size] for start in range(0, len(buf), size)]


def length_prefixed(payload_size: int = PAYLOAD_SIZE) -> tuple[bytes, int]:
    """As many ``payload_size``-byte frames with a 4-byte big-endian header as fit in 1 MiB.

    Returns the buffer and its number of frames.
    """
    rng = random.Random(1)
    header = struct.pack(">I", payload_size)
    count = BUFFER_SIZE // (4 + payload_size)
    buf = b"".join(header + rng.randbytes(payload_size) for _ in range(count))
    return buf, count


# Mostly ASCII, with a few multi-byte UTF-8 words.
_WORDS = (
    "move", "north", "east", "west", "south", "take", "drop", "look", "inventory", "say",
    "hello", "world", "the", "a", "lamp", "key", "door", "open", "close", "status", "ok",
    "error", "retry", "0", "1", "42", "1024", "-7", "3.14",
    "naïve", "café", "Grüße", "→", "✓",
)  # fmt: skip


def text_lines(mean_size: int = 64) -> tuple[bytes, int]:
    """Newline-terminated UTF-8 lines of about ``mean_size`` bytes, up to 1 MiB.

    Mostly ASCII words with a few multi-byte ones, no ``\\r``. Returns the
    buffer and its number of lines.
    """
    rng = random.Random(2)
    lines: list[bytes] = []
    total = 0
    while True:
        target = rng.randint(mean_size // 2, mean_size * 3 // 2)
        words: list[str] = []
        size = 0
        while size < target:
            word = rng.choice(_WORDS)
            words.append(word)
            size += len(word.encode("utf-8")) + 1
        line = " ".join(words).encode("utf-8") + b"\n"
        if total + len(line) > BUFFER_SIZE:
            return b"".join(lines), len(lines)
        lines.append(line)
        total += len(line)


_SMALL_VALUES = (
    0,
    1,
    -1,
    127,
    300,
    70_000,
    2**33,
    1.5,
    -2.25,
    True,
    False,
    None,
    "ok",
    "hello world",
    b"\x00\x01\x02\x03",
    [1, 2, 3],
    ["move", 3, None],
    {"id": 7, "ok": True},
    {"method": "ping", "params": [1, "a"]},
)


def msgpack_values() -> tuple[bytes, int]:
    """Small msgpack values back to back (ints, floats, short strings, tiny
    arrays and maps), up to 1 MiB. Returns the buffer and its number of values."""
    encoded = [msgpack.packb(value) for value in _SMALL_VALUES]
    parts: list[bytes] = []
    total = 0
    index = 0
    while total + len(encoded[index]) <= BUFFER_SIZE:
        parts.append(encoded[index])
        total += len(encoded[index])
        index = (index + 1) % len(encoded)
    return b"".join(parts), len(parts)


def positions(count: int = POSITION_COUNT) -> list[Position]:
    """``count`` positions with random coordinates and counters."""
    rng = random.Random(3)
    uniform = rng.uniform
    return [
        Position(uniform(-1e3, 1e3), uniform(-1e3, 1e3), uniform(-1e3, 1e3), rng.randrange(2**20))
        for _ in range(count)
    ]
