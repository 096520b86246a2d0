"""Hand-written baselines: the plain Python a user would write without wirekit.

Each is the fastest straightforward code for the job, with no limits, no
error reporting and no configurability, so the ratio wirekit/baseline is the
price of those features. Splitters return ``(frames, rest)``: the complete
frames and the unfinished tail.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import msgpack

from benchmarks.workloads import Position

__all__ = [
    "Incremental",
    "decode_lines",
    "decode_positions",
    "encode_positions",
    "find_decode_lines",
    "find_lines",
    "split_length_prefixed",
    "split_length_prefixed_view",
    "split_lines",
    "unpacker_frames",
    "unpacker_values",
]

_HEADER = struct.Struct(">I")

Split = Callable[[bytes], tuple[list, bytes]]


def split_length_prefixed(buf: bytes) -> tuple[list[bytes], bytes]:
    """Cut 4-byte big-endian length-prefixed frames with ``unpack_from`` and bytes slices."""
    unpack = _HEADER.unpack_from
    frames: list[bytes] = []
    append = frames.append
    pos = 0
    end = len(buf)
    while end - pos >= 4:
        (length,) = unpack(buf, pos)
        stop = pos + 4 + length
        if stop > end:
            break
        append(buf[pos + 4 : stop])
        pos = stop
    return frames, buf[pos:]


def split_length_prefixed_view(buf: bytes) -> tuple[list[memoryview], bytes]:
    """The same, with zero-copy ``memoryview`` frames instead of bytes slices."""
    unpack = _HEADER.unpack_from
    view = memoryview(buf)
    frames: list[memoryview] = []
    append = frames.append
    pos = 0
    end = len(buf)
    while end - pos >= 4:
        (length,) = unpack(view, pos)
        stop = pos + 4 + length
        if stop > end:
            break
        append(view[pos + 4 : stop])
        pos = stop
    return frames, buf[pos:]


def split_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """Cut newline-terminated lines with one ``bytes.split``."""
    lines = buf.split(b"\n")
    rest = lines.pop()
    return lines, rest


def find_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """Cut newline-terminated lines with a ``bytes.find`` loop."""
    find = buf.find
    lines: list[bytes] = []
    append = lines.append
    pos = 0
    index = find(b"\n")
    while index >= 0:
        append(buf[pos:index])
        pos = index + 1
        index = find(b"\n", pos)
    return lines, buf[pos:]


def decode_lines(buf: bytes) -> list[str]:
    """Split lines, then decode each one as UTF-8."""
    lines, _ = split_lines(buf)
    return list(map(bytes.decode, lines))


def find_decode_lines(buf: bytes) -> list[str]:
    """Find lines and decode each one as UTF-8 in the same loop."""
    find = buf.find
    lines: list[str] = []
    append = lines.append
    pos = 0
    index = find(b"\n")
    while index >= 0:
        append(buf[pos:index].decode())
        pos = index + 1
        index = find(b"\n", pos)
    return lines


class Incremental:
    """Feed a splitter chunk by chunk, keeping the unfinished tail between chunks."""

    __slots__ = ("_rest", "_split")

    def __init__(self, split: Split) -> None:
        self._split = split
        self._rest = b""

    def feed(self, chunk: bytes) -> list:
        """Return the frames that ``chunk`` completes."""
        data = self._rest + chunk if self._rest else chunk
        frames, self._rest = self._split(data)
        return frames


def unpacker_values(buf: bytes) -> list:
    """Feed a ``msgpack.Unpacker`` and iterate it: every value, decoded."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(buf)
    return list(unpacker)


def unpacker_frames(buf: bytes) -> list[bytes]:
    """Feed a ``msgpack.Unpacker`` and ``skip``/``tell`` through it: each value's raw bytes."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(buf)
    skip = unpacker.skip
    tell = unpacker.tell
    frames: list[bytes] = []
    append = frames.append
    prev = 0
    while True:
        try:
            skip()
        except msgpack.OutOfData:
            return frames
        pos = tell()
        append(buf[prev:pos])
        prev = pos


def decode_positions(buf: bytes) -> list[Position]:
    """Split frames, ``unpackb`` each, pop ``"type"`` and build ``Position(**fields)``."""
    frames, _ = split_length_prefixed(buf)
    unpackb = msgpack.unpackb
    values: list[Position] = []
    append = values.append
    for frame in frames:
        fields = unpackb(frame)
        fields.pop("type")
        append(Position(**fields))
    return values


def encode_positions(items: Sequence[Position]) -> bytes:
    """``packb`` a dict per position, prefix each with a struct header, join."""
    packb = msgpack.packb
    pack = _HEADER.pack
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        payload = packb(
            {"type": "position", "x": item.x, "y": item.y, "z": item.z, "count": item.count}
        )
        append(pack(len(payload)))
        append(payload)
    return b"".join(parts)
