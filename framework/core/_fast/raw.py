"""Raw bytes: the frames are the values, and a length header is all encoding adds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from framework.core._fast.parts import Parts, header_writer
from framework.core.framing import Buffer, Datagram
from framework.core.framing.length_prefix import join_frames

__all__ = ["datagram_decoder", "datagram_encoder", "length_prefixed", "passthrough", "plain_header"]


def passthrough(parts: Parts) -> tuple[Callable[[Any], Any], None, None] | None:
    """Decoding of a raw stack: no decode_many, the decoder hands the frames on."""
    return (parts.decode, None, None) if parts.raw else None


def plain_header(parts: Parts) -> tuple[Callable[[int], bytes], int] | None:
    """``(header, limit)``: for raw bytes under a length prefix with no adjustment."""
    writer = header_writer(parts.framing) if parts.raw else None
    if writer is None or writer.adjust:
        return None
    return writer.pack, writer.high


def length_prefixed(parts: Parts) -> Callable[[Iterable[Any]], bytes] | None:
    """Raw bytes under a length prefix: each value's header, then the value, in one loop.

    Anything else than ``bytes`` within the header's range (a bytearray, a
    value too large, a str) sends the whole batch to the reference, which
    answers, or raises its own error.
    """
    writer = header_writer(parts.framing) if parts.raw else None
    if writer is None:
        return None
    pack, adjust, _, high, _ = writer
    reference = parts.encode_many

    if adjust == 0:

        def raw_plain_prefixed(values: Iterable[Any]) -> bytes:
            # The usual header: the length is the field.
            if type(values) is list and len(values) == 1:
                # One reply per read (request/response): no list to join.
                value = values[0]
                if type(value) is bytes and len(value) <= high:
                    return pack(len(value)) + value
            values = values if type(values) is list else list(values)
            parts: list[bytes] = []
            append = parts.append
            for value in values:
                if type(value) is not bytes or len(value) > high:
                    return reference(values)
                append(pack(len(value)))
                append(value)
            return b"".join(parts)

        return raw_plain_prefixed

    def raw_length_prefixed(values: Iterable[Any]) -> bytes:
        values = values if type(values) is list else list(values)
        if set(map(type, values)) <= {bytes}:
            # What the reference does, without a codec call per value.
            return join_frames(writer, values)
        return reference(values)

    return raw_length_prefixed


def datagram_decoder(
    framing: Datagram, decode: Callable[[Any], Any], raw: bool
) -> Callable[[Buffer], list[Any]]:
    """One unpacked datagram → its value, in a list; a raw stack's datagram as it came."""
    check_size = framing.check_size
    limit = framing.max_frame_size if framing.max_frame_size is not None else 1 << 64
    if raw:

        def decode_raw(data: Buffer) -> list[Any]:
            if len(data) > limit:
                check_size(len(data))
            return [data if type(data) is bytes else decode(data)]

        return decode_raw

    def decode_one(data: Buffer) -> list[Any]:
        if len(data) > limit:
            check_size(len(data))
        return [decode(data)]

    return decode_one


def datagram_encoder(
    framing: Datagram, encode: Callable[[Any], bytes], raw: bool
) -> Callable[[Any], bytes]:
    """One value → one unpacked datagram; a raw stack's ``bytes`` need no codec call."""
    check_size = framing.check_size
    limit = framing.max_frame_size if framing.max_frame_size is not None else 1 << 64

    def encode_one(value: Any) -> bytes:
        data: bytes = value if raw and type(value) is bytes else encode(value)
        if len(data) > limit:
            check_size(len(data))
        return data

    return encode_one
