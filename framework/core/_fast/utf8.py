"""A text stack over a read's frames, or a batch of replies: one C loop each."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from framework.core._fast.parts import Parts

__all__ = ["decode_batch", "encode_batch", "text_join"]


def decode_batch(
    parts: Parts,
) -> tuple[Callable[[Any], Any], Callable[[list[Any]], list[Any]], type[str]] | None:
    """``bytes.decode`` over the frames; the codec frame by frame at the first bad one.

    Every value is exactly a ``str`` (never a subclass): both ways build one.
    """
    if not parts.text:
        return None
    decode = parts.decode
    text = bytes.decode  # strict UTF-8, as Utf8Codec decodes bytes

    def decode_many(frames: list[Any]) -> list[Any]:
        try:
            return list(map(text, frames))
        except (UnicodeDecodeError, TypeError):
            # The codec's own decode raises its precise error at the bad frame.
            return [decode(frame) for frame in frames]

    return decode, decode_many, str


def encode_batch(parts: Parts) -> Callable[[Iterable[Any]], bytes] | None:
    """Every value encoded in one C loop, then framed; the reference on anything unusual.

    A framing that offers ``text_joiner`` (newline-delimited) joins and
    encodes the whole batch in one pass instead.
    """
    if not parts.text:
        return None
    encode_frames = parts.framing.encode_many
    reference = parts.encode_many
    text = str.encode  # strict UTF-8, as Utf8Codec encodes a str
    join = text_join(parts)
    only_str = {str}.issuperset

    def utf8_many(values: Iterable[Any]) -> bytes:
        if type(values) is not list:
            values = list(values)
        # Utf8Codec refuses str subclasses; str.encode would not.
        if only_str(map(type, values)):
            if join is not None and values:
                data = join(values)
                if data is not None:
                    return data
            try:
                frames = list(map(text, values))
            except UnicodeEncodeError:
                pass  # a lone surrogate: the reference says where
            else:
                return encode_frames(frames)
        return reference(values)

    return utf8_many


def text_join(parts: Parts) -> Callable[[list[str]], bytes | None] | None:
    """The framing's ``text_joiner`` for a UTF-8 stack (newline-delimited), else ``None``."""
    if not parts.text:
        return None
    offer = getattr(parts.framing, "text_joiner", None)
    join: Callable[[list[str]], bytes | None] | None = offer() if offer is not None else None
    return join
