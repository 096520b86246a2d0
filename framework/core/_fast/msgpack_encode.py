"""msgpack (+ typed messages) on the way out: one packer per encoder, msgspec for flat classes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

from framework.core._fast.parts import Parts, header_writer, msgpack_hooks
from framework.core.errors import WirekitError
from framework.core.messages import MessageRegistry

__all__ = ["framed", "length_prefixed", "stream", "with_msgspec"]

EncodeMany = Callable[[Iterable[Any]], bytes]
Offer = Callable[[Parts], EncodeMany | None]
# What packing or framing may raise: the reference then answers, or raises
# its own error (an error costs time, never a different answer).
_RETRY = (WirekitError, TypeError, ValueError, OverflowError)


def with_msgspec(offer: Callable[[Parts, bool], EncodeMany | None]) -> Offer:
    """``offer`` where msgspec writes flat classes' frames; ``None`` where it has none to write."""

    def offer_with_msgspec(parts: Parts) -> EncodeMany | None:
        registry = parts.messages
        if registry is None or not registry.flat_paths().wire_encoders:
            return None
        return offer(parts, True)

    return offer_with_msgspec


def _frame_encoder(parts: Parts, wire: bool) -> Callable[[Any], bytes] | None:
    """Value → frame through a packer kept for this encoder (and msgspec for flat classes)."""
    hooks = msgpack_hooks(parts)
    if hooks is None:
        return None
    pack = hooks.encoder()
    registry = parts.messages
    if registry is None:
        return pack
    paths = registry.flat_paths()
    fast_get = paths.encoders.get
    wire_get = (paths.wire_encoders if wire else {}).get
    envelope = registry.encode

    def encode(value: Any) -> bytes:
        wire = wire_get(type(value))
        if wire is not None:
            frame = wire(value)
            if frame is not None:
                return frame
        fast = fast_get(type(value))
        return pack(fast(value) if fast is not None else envelope(value))

    return encode


def _wire_batch(
    registry: MessageRegistry | None, wire: bool
) -> Callable[[list[Any]], list[bytes] | None] | None:
    """A read's replies → their frames by msgspec, when all are of one flat class; else ``None``.

    ``None`` in place of the function where the registry has no msgspec
    encoders (no msgspec, or no flat class), or ``wire`` is false.
    """
    encoders = registry.flat_paths().wire_batch_encoders if registry is not None else {}
    if not encoders or not wire:
        return None
    get = encoders.get

    def frames_of(values: list[Any]) -> list[bytes] | None:
        kinds = set(map(type, values))
        if len(kinds) != 1:
            return None
        encode_all = get(kinds.pop())
        return encode_all(values) if encode_all is not None else None

    return frames_of


def length_prefixed(parts: Parts, wire: bool = False) -> EncodeMany | None:
    """msgpack (+ messages) under a length prefix, in one loop with one packer.

    The loop calls the packer, and a flat message's envelope builder,
    directly; a read's replies of one flat class are written by msgspec
    and get their headers in one C loop. On anything refused it starts
    over with the reference, which answers or raises its own error.
    """
    hooks = msgpack_hooks(parts)
    writer = header_writer(parts.framing)
    if hooks is None or writer is None:
        return None
    pack_header, adjust, low, high, _ = writer
    precise = parts.encode_many
    keep = hooks.packer_keep
    new_packer = hooks.new_packer
    registry = parts.messages
    paths = registry.flat_paths() if registry is not None else None
    fast_get = paths.encoders.get if paths is not None else None
    wire_get = (paths.wire_encoders if wire else {}).get if paths is not None else None
    batch = _wire_batch(registry, wire)
    envelope = registry.encode if registry is not None else None
    packer: Any = None
    unadjust = (-adjust).__add__

    def packed_length_prefixed(values: Iterable[Any]) -> bytes:
        nonlocal packer
        if type(values) is not list:
            values = list(values)  # a retry must see them again
        if batch is not None and len(values) > 1:
            frames = batch(values)
            if frames is not None:
                # Every header in one C loop, where every size is in range.
                sizes = list(map(len, frames))
                if low <= min(sizes) and max(sizes) <= high:
                    headers = map(pack_header, map(unadjust, sizes) if adjust else sizes)
                    return b"".join(chain.from_iterable(zip(headers, frames, strict=True)))
        if packer is None:
            packer = new_packer()
        pack = packer.pack
        parts: list[bytes] = []
        append = parts.append
        try:
            if fast_get is None:
                for value in values:
                    frame = pack(value)
                    size = len(frame)
                    if not low <= size <= high:
                        return precise(values)
                    append(pack_header(size - adjust))
                    append(frame)
                    if size > keep:
                        packer = None  # do not keep a big buffer alive
            else:
                assert envelope is not None
                assert wire_get is not None
                for value in values:
                    # msgspec's writer of a flat class, when installed: the
                    # same bytes; None sends the value on to msgpack.
                    wire = wire_get(type(value))
                    frame = wire(value) if wire is not None else None
                    if frame is None:
                        fast = fast_get(type(value))
                        frame = pack(fast(value) if fast is not None else envelope(value))
                    size = len(frame)
                    if not low <= size <= high:
                        return precise(values)
                    append(pack_header(size - adjust))
                    append(frame)
                    if size > keep:
                        packer = None
        except _RETRY:
            # Refused (msgpack's packer has reset itself).
            return precise(values)
        return b"".join(parts)

    return packed_length_prefixed


def stream(parts: Parts, wire: bool = False) -> EncodeMany | None:
    """msgpack frames under a framing that takes a packer's output unparsed (msgpack-stream)."""
    encode_packed = getattr(parts.framing, "encode_packed", None)
    encode_frame = _frame_encoder(parts, wire) if encode_packed is not None else None
    if encode_packed is None or encode_frame is None:
        return None
    packed: Callable[[list[bytes]], bytes] = encode_packed
    batch = _wire_batch(parts.messages, wire)

    def msgpack_stream(values: Iterable[Any]) -> bytes:
        if batch is not None:
            if type(values) is not list:
                values = list(values)
            frames = batch(values) if len(values) > 1 else None
            if frames is not None:
                return packed(frames)
        return packed([encode_frame(value) for value in values])

    return msgpack_stream


def framed(parts: Parts, wire: bool = False) -> EncodeMany | None:
    """msgpack frames under any other framing: packed here, framed by the framing."""
    encode_frame = _frame_encoder(parts, wire)
    if encode_frame is None:
        return None
    encode_frames = parts.framing.encode_many

    def msgpack_framed(values: Iterable[Any]) -> bytes:
        return encode_frames([encode_frame(value) for value in values])

    return msgpack_framed
