"""msgpack → typed message in one function: the same values and errors as the two stages."""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from typing import Any

from framework.core._fast.parts import Parts, each, msgpack_hooks
from framework.core._flat import MISS
from framework.core.messages import TYPE_KEY

__all__ = ["fused", "fused_msgspec"]


# (decode, decode_many, value class): values of many classes, so no class promised.
Decoders = tuple[Callable[[Any], Any], Callable[[list[Any]], list[Any]], None]


def fused_msgspec(parts: Parts) -> Decoders | None:
    """:func:`fused`, where msgspec decodes whole frames of flat classes; else ``None``.

    A frame that starts as a flat class's envelope is decoded by msgspec in
    one step, and a read of such frames in one C loop; what msgspec
    refuses goes the msgpack way, which decides.
    """
    if parts.messages is None or not parts.messages.flat_paths().wire_decoders:
        return None
    hooks = msgpack_hooks(parts)
    if hooks is None or hooks.has_size_limits:
        return None  # msgspec would not apply the codec's size limits
    return _build(parts, wire=True)


def fused(parts: Parts) -> Decoders | None:
    """The decoder of one frame and that of a read's frames, for msgpack + messages.

    A flat message (scalar fields only) is built straight from the unpacked
    map, skipping the nesting check: a map of scalars is one level deep.
    Anything else takes the two stages' own path.
    """
    return _build(parts, wire=False)


def _build(parts: Parts, *, wire: bool) -> Decoders | None:
    registry = parts.messages
    hooks = msgpack_hooks(parts)
    if registry is None or hooks is None:
        return None
    codec_decode = parts.codecs[0].decode
    unpack = hooks.unpack
    check_depth = hooks.check_depth
    registry_decode = registry.decode
    paths = registry.flat_paths()
    fast_get = paths.decoders.get
    # msgspec's whole-frame decoders, keyed by the envelope's first bytes.
    wired = paths.wire_decoders if wire else {}
    wire_get = wired.get
    # The type name's fixstr header (the byte after the type key) gives the
    # prefix's length; a frame of any other shape matches no prefix.
    name_at = 2 + len(TYPE_KEY)

    def decode(frame: Any) -> Any:
        if wired:
            try:
                whole = wire_get(frame[: name_at + 1 + (frame[name_at] & 0x1F)])
            except (IndexError, TypeError):  # too short; a bytearray's slice
                whole = None
            if whole is not None:
                try:
                    return whole(frame)
                except Exception:
                    pass  # refused: the msgpack path below decides, precisely
        try:
            value = unpack(frame)
        except Exception:
            # Rare: let the codec raise its precise DecodeError.
            return registry_decode(codec_decode(frame))
        if type(value) is dict:
            name = value.get(TYPE_KEY)
            fast = fast_get(name) if type(name) is str else None
            if fast is not None:
                message = fast(value)
                if message is not MISS:
                    return message
        check_depth(frame, value)
        return registry_decode(value)

    if not wired:
        return decode, each(decode), None
    starts = bytes.startswith

    def decode_many(frames: list[Any]) -> list[Any]:
        # A read's frames are most often all one message class: msgspec then
        # decodes them in one C loop, after a C loop has checked that each
        # starts with that class's prefix. A frame of another class, or one
        # msgspec refuses, sends the whole read through decode, which decides.
        # A read of one frame (request/response) saves nothing that way.
        if len(frames) > 1:
            first = frames[0]
            try:
                prefix = first[: name_at + 1 + (first[name_at] & 0x1F)]
                whole = wire_get(prefix)
                if whole is not None and all(map(starts, frames, repeat(prefix))):
                    return list(map(whole, frames))
            except Exception:
                pass  # too short, not bytes, or refused
        return [decode(frame) for frame in frames]

    return decode, decode_many, None
