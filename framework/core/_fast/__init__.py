"""The pipeline's speed-ups, kept apart from its reference path.

Each speed-up is a named entry in a table: a function that looks at what a
pipeline's parts are (the hooks they offer: a framing's ``header_writer()``,
a codec's ``msgpack_hooks()``, a registry's ``flat_paths()``) and returns an
accelerated callable, or ``None`` when it does not apply. The pipeline takes
the first entry that answers, else the reference path; a subclass that
changes what a hook stands for gets ``None`` from it, and the reference.
Every entry is tested against the reference, byte for byte and error class
for error class (tests/core/test_fast_paths.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from framework.core._fast import msgpack_decode, msgpack_encode, raw, utf8
from framework.core._fast.parts import Parts, each

__all__ = [
    "DECODE_PATHS",
    "ENCODE_PATHS",
    "Parts",
    "choose_decode",
    "choose_encode_many",
    "only",
    "plain_header",
    "text_join",
]

DecodeMany = Callable[[list[Any]], list[Any]]
EncodeMany = Callable[[Iterable[Any]], bytes]


class DecodePath(NamedTuple):
    """A chosen decoding path: its name, the decode of one frame and of a read's frames.

    ``value_class``: when not None, every value the path decodes is exactly
    of this class (not a subclass), which lets a dispatch loop skip asking
    each value its class.
    """

    name: str
    decode: Callable[[Any], Any]
    decode_many: DecodeMany | None
    value_class: type | None = None


DecodeOffer = Callable[[Parts], tuple[Callable[[Any], Any], DecodeMany | None, type | None] | None]
EncodeOffer = Callable[[Parts], EncodeMany | None]

#: Name → offer, in the order they are tried. An offer returns
#: ``(decode, decode_many, value_class)`` or ``None``.
DECODE_PATHS: dict[str, DecodeOffer] = {
    "passthrough": raw.passthrough,
    "msgpack-messages+msgspec": msgpack_decode.fused_msgspec,
    "msgpack-messages": msgpack_decode.fused,
    "utf-8-batch": utf8.decode_batch,
}

#: Name → offer, in the order they are tried. An offer returns an ``encode_many``.
#: "+msgspec": msgspec writes the frames of flat message classes.
ENCODE_PATHS: dict[str, EncodeOffer] = {
    "utf-8-batch": utf8.encode_batch,
    "raw-length-prefixed": raw.length_prefixed,
    "msgpack-length-prefixed+msgspec": msgpack_encode.with_msgspec(msgpack_encode.length_prefixed),
    "msgpack-length-prefixed": msgpack_encode.length_prefixed,
    "msgpack-stream+msgspec": msgpack_encode.with_msgspec(msgpack_encode.stream),
    "msgpack-stream": msgpack_encode.stream,
    "msgpack-framed+msgspec": msgpack_encode.with_msgspec(msgpack_encode.framed),
    "msgpack-framed": msgpack_encode.framed,
}

# Which entries may be chosen; None: all. Tests narrow it to compare one
# speed-up with the reference.
_enabled: frozenset[str] | None = None


@contextlib.contextmanager
def only(*names: str) -> Iterator[None]:
    """Within the block, pipelines and encoders built choose among ``names`` only."""
    global _enabled
    unknown = set(names) - DECODE_PATHS.keys() - ENCODE_PATHS.keys()
    if unknown:
        raise ValueError(f"unknown speed-ups: {sorted(unknown)}")
    saved, _enabled = _enabled, frozenset(names)
    try:
        yield
    finally:
        _enabled = saved


def choose_decode(parts: Parts) -> DecodePath:
    """The first decoding speed-up that applies to ``parts``, else the reference."""
    for name, offer in DECODE_PATHS.items():
        if _enabled is None or name in _enabled:
            found = offer(parts)
            if found is not None:
                return DecodePath(name, *found)
    return DecodePath("reference", parts.decode, each(parts.decode))


def choose_encode_many(parts: Parts) -> tuple[str, EncodeMany]:
    """The first ``encode_many`` speed-up that applies to ``parts``, else the reference."""
    for name, offer in ENCODE_PATHS.items():
        if _enabled is None or name in _enabled:
            found = offer(parts)
            if found is not None:
                return name, found
    return "reference", parts.encode_many


def text_join(parts: Parts) -> Callable[[list[str]], bytes | None] | None:
    """For a UTF-8 text stack whose framing joins lines: the joiner, else ``None``.

    ``join(values)``, for a non-empty list of values each exactly a ``str``,
    is their wire form in one pass, or None where it cannot vouch for it
    (``encode_many`` then says what they make): a caller that knows its
    values are all ``str`` may skip asking ``encode_many`` to check.
    """
    if _enabled is not None and "utf-8-batch" not in _enabled:
        return None
    return utf8.text_join(parts)


def plain_header(parts: Parts) -> tuple[Callable[[int], bytes], int] | None:
    """``(header, limit)`` when raw bytes go under a plain length prefix, else ``None``.

    ``header(len(v)) + v`` is then the wire form of a ``bytes`` value ``v``
    of up to ``limit`` bytes: a caller may frame values as they come.
    """
    if _enabled is not None and "raw-length-prefixed" not in _enabled:
        return None
    return raw.plain_header(parts)
