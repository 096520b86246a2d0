# ruff: noqa: PT017, PT018 - invariant checks in a fuzz target, not pytest assertions
"""Fuzz targets for every framer: length prefix, delimited, msgpack stream, datagram.

Each stream target builds a framing from the input's parameters, feeds the
payload in the input's chunking and checks (see :func:`_support.drive`):
only ``FramingError`` escapes, buffers stay within ``max_frame_size`` plus
``BUFFER_SLACK``, no frame is over the limit, a failed decoder refuses more
input, ``end()`` fails exactly when a frame is cut short; the same payload fed
in one chunk gives the same frames and errors; decoded frames re-encode and
decode to the same frames.
"""

from __future__ import annotations

from typing import Any

import msgpack

from framework.core.errors import FrameTooLarge, FramingError, IncompleteFrame
from framework.core.framing import Datagram, Delimited, Framing, LengthPrefix, MsgpackStream
from framework.core.pipeline import Pipeline

from ._support import (
    KNOWN_BUGS,
    Input,
    Target,
    Trace,
    drive,
    encodable,
    framing_roundtrip,
    seed,
    split,
)

__all__ = ["TARGETS", "msgpack_samples"]

PREFIX_SIZES = (1, 2, 4, 8)
BYTEORDERS = ("big", "little")
PREFIX_LIMITS = (1, 7, 64, 255, 256, 1000, None)
DELIMITERS = (b"\n", b"\r\n", b"\0\0", b"ab", b"|", b"\r\n\r\n", b"aba")
DELIMITED_LIMITS = (1, 5, 64, 1000, None)
MSGPACK_LIMITS = (1, 5, 16, 100, 1000, None)
DATAGRAM_LIMITS = (1, 16, 100, 65_507, None)
OVERSIZE = ("close", "skip")


def _adjustments(prefix_size: int) -> tuple[int, ...]:
    # 0: the default; -prefix_size: the length counts its header; the others
    # reach negative lengths and frames the header cannot describe.
    return (0, -prefix_size, 1, -1, 4)


def _check_frames(limit: int | None) -> Any:
    def check(frame: Any) -> None:
        assert type(frame) is bytes, f"a frame came out as {type(frame).__name__}"
        assert limit is None or len(frame) <= limit, f"{len(frame)}-byte frame over {limit}"

    return check


def _stream(framing: Framing, data: bytes, sizes: list[int], kind: Any) -> int:
    """The checks every stream framing shares; returns the number of frames."""
    limit = framing.max_frame_size
    check = _check_frames(limit)
    chunked = drive(framing.decoder(), split(data, sizes, kind), limit=limit, check=check)
    whole = drive(framing.decoder(), [data], limit=limit, check=check)
    if _straddling_bug(framing, chunked, whole):
        return 0
    assert chunked.same_as(whole, key=bytes), (
        f"{framing!r}: chunks {sizes} give {chunked}, one chunk gives {whole}"
    )
    framing_roundtrip(framing, chunked.values)
    return len(chunked.values)


def _straddling_bug(framing: Framing, chunked: Trace, whole: Trace) -> bool:
    """Whether a difference may be the open bug "delimited-straddling-delimiter"."""
    return (
        "delimited-straddling-delimiter" in KNOWN_BUGS
        and isinstance(framing, Delimited)
        and len(framing.delimiter) >= 3
        and "FrameTooLarge" in chunked.errors
        and whole.values[: len(chunked.values)] == chunked.values  # it loses frames, no more
    )


# -- length prefix -----------------------------------------------------------------


def _length_prefix(inp: Input) -> LengthPrefix:
    prefix_size = inp.pick(PREFIX_SIZES)
    return LengthPrefix(
        prefix_size=prefix_size,
        byteorder=inp.pick(BYTEORDERS),
        length_adjustment=inp.pick(_adjustments(prefix_size)),
        max_frame_size=inp.pick(PREFIX_LIMITS),
    )


def run_length_prefix(data: bytes) -> int:
    """Fuzz ``LengthPrefix`` with every prefix size, byte order and adjustment."""
    inp = Input(data)
    framing = _length_prefix(inp)
    sizes, kind = inp.chunking()
    return _stream(framing, inp.rest(), sizes, kind)


def seeds_length_prefix() -> list[bytes]:
    """Valid streams for a spread of header layouts, whole and in small chunks."""
    out = []
    frames = [b"", b"hello", b"x" * 40, bytes(range(7))]
    for p, prefix_size in enumerate(PREFIX_SIZES):
        for b, byteorder in enumerate(BYTEORDERS):
            for a, adjust in enumerate(_adjustments(prefix_size)[:2]):
                framing = LengthPrefix(
                    prefix_size=prefix_size, byteorder=byteorder, length_adjustment=adjust
                )
                wire = framing.encode_many(frames)
                limit = PREFIX_LIMITS.index(64)
                out.append(seed(wire, [p, b, a, limit, 0, 0]))
                out.append(seed(wire, [p, b, a, limit, 2, 1, 3, 1]))
    # A 4 GiB length header, and a TLS ClientHello where a header should be.
    out.append(seed(b"\xff\xff\xff\xff" + b"x" * 8, [2, 0, 0, 2, 0, 0]))
    out.append(seed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", [2, 0, 0, 5, 0, 0]))
    return out


# -- delimited ---------------------------------------------------------------------


def _delimited(inp: Input) -> Delimited:
    return Delimited(
        delimiter=inp.pick(DELIMITERS),
        strip_cr=inp.pick((True, False)),
        max_frame_size=inp.pick(DELIMITED_LIMITS),
        on_oversize=inp.pick(OVERSIZE),
    )


def run_delimited(data: bytes) -> int:
    """Fuzz ``Delimited``: several delimiters, ``strip_cr``, both ``on_oversize`` modes."""
    inp = Input(data)
    framing = _delimited(inp)
    sizes, kind = inp.chunking()
    return _stream(framing, inp.rest(), sizes, kind)


def seeds_delimited() -> list[bytes]:
    """Valid streams for each delimiter, and over-long lines in both modes."""
    out = []
    for d, delimiter in enumerate(DELIMITERS):
        framing = Delimited(delimiter=delimiter, max_frame_size=64)
        lines = [b"hello", b"", b"x" * 30, b"a\rb"]
        wire = framing.encode_many([line for line in lines if delimiter not in line])
        for o in range(len(OVERSIZE)):
            out.append(seed(wire, [d, 0, 2, o, 0, 0]))
            out.append(seed(wire, [d, 1, 2, o, 1, 3, 2]))
            # An over-long line between two good ones.
            long = b"ok" + delimiter + b"y" * 80 + delimiter + b"next" + delimiter
            out.append(seed(long, [d, 0, 2, o, 2, 7, 1, 0]))
    out.append(seed(b"telnet line\r\nnext\r\n", [0, 0, 2, 0, 1, 1, 0]))
    return out


# -- msgpack stream ----------------------------------------------------------------


def run_msgpack_stream(data: bytes) -> int:
    """Fuzz ``MsgpackStream``: back-to-back msgpack values, bounded by size and depth."""
    inp = Input(data)
    framing = MsgpackStream(max_frame_size=inp.pick(MSGPACK_LIMITS))
    sizes, kind = inp.chunking()
    return _stream(framing, inp.rest(), sizes, kind)


def msgpack_samples() -> list[Any]:
    """One value of every msgpack type."""
    return [
        0,
        -1,
        2**63,
        1.5,
        "text",
        "é" * 20,
        b"\x00\xff",
        [1, [2, [3, []]]],
        {"type": "position", "x": 1.0, "y": 2.0},
        msgpack.ExtType(5, b"abc"),
        None,
        True,
    ]


def seeds_msgpack_stream() -> list[bytes]:
    """Every msgpack type back to back, plus the bombs: huge announced sizes, deep nesting."""
    wire = b"".join(msgpack.packb(v, use_bin_type=True) for v in msgpack_samples())
    return [
        seed(wire, [MSGPACK_LIMITS.index(100), 0, 0]),
        seed(wire, [MSGPACK_LIMITS.index(1000), 2, 1, 5, 2]),
        seed(b"\xdb\xff\xff\xff\xff", [MSGPACK_LIMITS.index(1000), 0, 0]),  # str 32 of 4 GiB
        seed(b"\xdd\xff\xff\xff\xff", [MSGPACK_LIMITS.index(100), 0, 0]),  # array 32 of 4 G items
        seed(b"\xc9\xff\xff\xff\xff\x01", [MSGPACK_LIMITS.index(None), 0, 0]),  # ext 32 overflow
        seed(b"\x91" * 1100 + b"\xc0", [MSGPACK_LIMITS.index(None), 0, 0]),  # 1,100 levels deep
    ]


# -- datagram ----------------------------------------------------------------------

_PACKED: tuple[Framing | None, ...] = (
    None,
    LengthPrefix(prefix_size=2, max_frame_size=100),
    Delimited(max_frame_size=100),
    MsgpackStream(max_frame_size=100),
)


def run_datagram(data: bytes) -> int:
    """Fuzz ``Datagram``: one datagram one frame, and packed datagrams cut by a framing."""
    inp = Input(data)
    stream = inp.pick(_PACKED)
    limit = inp.pick(DATAGRAM_LIMITS)
    payload = inp.rest()
    if stream is None:
        framing = Datagram(max_frame_size=limit)
        try:
            frames = framing.decoder().feed(memoryview(payload))
        except FrameTooLarge as exc:
            assert limit is not None and len(payload) > limit, f"refused wrongly: {exc}"
            return 0
        assert frames == [payload], "a datagram frame differs from the datagram"
        assert framing.decoder().feed(framing.encode(payload)) == frames
        return 1
    pipeline = Pipeline(framing=stream, datagram=Datagram(max_frame_size=limit, packed=True))
    try:
        values = pipeline.decode_datagram(payload)
    except FramingError as exc:
        reference = _reference(stream, payload)
        too_big = limit is not None and len(payload) > limit
        assert too_big or reference.failed or reference.incomplete, (
            f"packed datagram refused ({exc!r}) though its frames are fine: {reference}"
        )
        assert isinstance(exc, FrameTooLarge | IncompleteFrame) or reference.failed
        return 0
    reference = _reference(stream, payload)
    assert not (reference.failed or reference.incomplete), f"accepted a bad datagram: {reference}"
    assert values == reference.values, "a packed datagram decodes unlike the stream it holds"
    sendable = [value for value in values if encodable(stream, value)]
    assert pipeline.decode_datagram(pipeline.encode_datagram(*sendable)) == sendable
    return len(values)


def _reference(stream: Framing, payload: bytes) -> Trace:
    return drive(stream.decoder(), [payload], limit=stream.max_frame_size)


def seeds_datagram() -> list[bytes]:
    """One datagram per stream framing, packed with several frames."""
    frames = [b"one", b"two", b"", b"three"]
    out = [seed(b"a plain datagram", [0, 3]), seed(b"x" * 40, [0, 1])]
    for index, stream in enumerate(_PACKED):
        if stream is None:
            continue
        sent = [msgpack.packb(f) for f in frames] if isinstance(stream, MsgpackStream) else frames
        out.append(seed(stream.encode_many(sent), [index, 2]))
        out.append(seed(stream.encode_many(sent)[:-1], [index, 3]))  # the last frame cut short
    return out


TARGETS = [
    Target(
        "length-prefix",
        "LengthPrefix: prefix sizes 1/2/4/8, both byte orders, length adjustments, small limits",
        run_length_prefix,
        seeds_length_prefix,
    ),
    Target(
        "delimited",
        "Delimited: newline, CRLF and multi-byte self-overlapping delimiters, "
        "on_oversize close/skip",
        run_delimited,
        seeds_delimited,
    ),
    Target(
        "msgpack-stream",
        "MsgpackStream: back-to-back msgpack values, size limits, nesting bombs",
        run_msgpack_stream,
        seeds_msgpack_stream,
    ),
    Target(
        "datagram",
        "Datagram: one frame per datagram, and packed datagrams cut by each stream framing",
        run_datagram,
        seeds_datagram,
    ),
]
