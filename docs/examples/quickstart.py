"""wirekit quick start: the game's position packet, end to end.

A game client sends where a player is: three float coordinates and a counter.
This script builds a pipeline for that packet, puts a few positions on the
wire, reads them back from bytes that arrive in pieces, swaps the wire format
without touching the message class, and shows what bad input looks like.

There is no socket here: wirekit's core turns bytes into values and back, and
whatever moves the bytes (a socket, a file, a test) just calls ``feed``.

Run it with ``make demo`` (or ``.venv/bin/python docs/examples/quickstart.py``).
"""

from __future__ import annotations

import attrs

from framework import (
    DecodeError,
    Delimited,
    FrameTooLarge,
    InvalidMessage,
    JsonCodec,
    LengthPrefix,
    MsgpackCodec,
    Pipeline,
    message,
)


# 1. The message: a plain attrs class, registered under a type name.
@message("position")
@attrs.frozen
class Position:
    x: float
    y: float
    z: float
    count: int


POSITIONS = [
    Position(1.5, 0.0, -2.0, 7),
    Position(1.75, 0.0, -2.25, 8),
    Position(2.0, 0.5, -2.5, 9),
]


def title(text: str) -> None:
    print(f"\n== {text} ==")


def hexdump(data: bytes, indent: str = "    ") -> str:
    """Bytes as hex, 16 to a line."""
    rows = [data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]
    return "\n".join(indent + row for row in rows)


def length_prefix_and_msgpack() -> None:
    title("1. length prefix + msgpack")
    # 2. The pipeline: framing (how frames are cut), codecs (how a frame
    #    becomes a value), messages (how a value becomes a Position).
    pipeline = Pipeline(framing=LengthPrefix(), codecs=[MsgpackCodec()], messages=[Position])

    one = pipeline.encode(POSITIONS[0])
    print(f"{POSITIONS[0]} is {len(one)} bytes on the wire:")
    print(hexdump(one))
    print(f"  {one[:4].hex(' ')}  is the length header: {len(one) - 4} bytes of payload follow")
    print(f"  {one[4]:02x}           starts a msgpack map of 5 pairs: type, x, y, z, count")

    wire = pipeline.encode_many(POSITIONS)
    print(f"\n{len(POSITIONS)} positions make {len(wire)} bytes.")

    # 3. Decoding is incremental. Feed one byte at a time: the decoder
    #    returns a Position as soon as its last byte arrives.
    decoder = pipeline.decoder()
    received = []
    for i in range(len(wire)):
        for position in decoder.feed(wire[i : i + 1]):
            print(f"  after byte {i + 1:3}: {position}")
            received.append(position)
    decoder.end()  # raises IncompleteFrame if the stream stopped mid-frame
    assert received == POSITIONS

    # Any chunking gives the same result, e.g. 10 bytes at a time.
    decoder = pipeline.decoder()
    chunked = []
    for i in range(0, len(wire), 10):
        chunked += decoder.feed(wire[i : i + 10])
    assert chunked == POSITIONS
    print("Fed 10 bytes at a time instead: the same three positions.")


def newline_and_json() -> None:
    title("2. newline + JSON, same Position class")
    pipeline = Pipeline(framing=Delimited(), codecs=[JsonCodec()], messages=[Position])

    wire = pipeline.encode_many(POSITIONS)
    print("The wire is now text, one message per line:")
    for line in wire.splitlines():
        print(f"    {line.decode()}")

    # A peer that ends lines with \r\n (telnet, many scripts) works too.
    from_telnet = wire.replace(b"\n", b"\r\n")
    decoder = pipeline.decoder()
    received = decoder.feed(from_telnet[:50]) + decoder.feed(from_telnet[50:])
    decoder.end()
    assert received == POSITIONS
    print("Decoded the same lines sent with \\r\\n endings, in two chunks: same positions.")


def bad_input() -> None:
    title("3. bad input gives a clear wirekit error")
    binary = Pipeline(framing=LengthPrefix(), codecs=[MsgpackCodec()], messages=[Position])

    # A length header of ff ff ff ff announces a frame of almost 4 GiB. It is
    # rejected as soon as the 4 header bytes arrive, before any payload.
    decoder = binary.decoder()
    try:
        decoder.feed(bytes.fromhex("ff ff ff ff"))
    except FrameTooLarge as error:
        print(f"FrameTooLarge: {error}")
        print(f"    size={error.size} limit={error.limit} offset={error.offset}")
        print(f"    bytes held by the decoder: {decoder.buffered}")
    else:
        raise AssertionError("a 4 GiB frame was not rejected")

    # A field of the wrong type: the error names the message and the field.
    text = Pipeline(framing=Delimited(), codecs=[JsonCodec()], messages=[Position])
    lines = (
        b'{"type":"position","x":1.5,"y":0.0,"z":-2.0,"count":7}\n'
        b'{"type":"position","x":"left","y":0.0,"z":-2.0,"count":8}\n'
        b'{"type":"position","x":2.0,"y":0.5,"z":-2.5,"count":9}\n'
    )
    decoder = text.decoder()
    try:
        decoder.feed(lines)
    except InvalidMessage as error:
        print(f"InvalidMessage: {error}")
        print(f"    field={error.field!r} expected={error.expected!r} actual={error.actual!r}")
        print(f"    decoded before the bad line: {error.decoded}")
    else:
        raise AssertionError("a string x was accepted")
    # One bad message does not break the stream: the rest is still there.
    after = decoder.feed(b"")
    print(f"    feed(b'') then returns the line after it: {after}")
    assert after == [POSITIONS[2]]

    # InvalidMessage is a DecodeError: catch that to skip any bad frame.
    assert issubclass(InvalidMessage, DecodeError)


def main() -> None:
    length_prefix_and_msgpack()
    newline_and_json()
    bad_input()
    print("\nDone. Next: docs/index.md")


if __name__ == "__main__":
    main()
