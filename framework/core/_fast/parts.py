"""What a speed-up sees of a pipeline: its parts and its reference path."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from framework.core.codecs import BytesCodec, Codec, Utf8Codec
from framework.core.codecs.msgpack_codec import MsgpackHooks
from framework.core.framing import Framing
from framework.core.framing.length_prefix import HeaderWriter
from framework.core.messages import MessageRegistry

__all__ = ["Parts", "each", "header_writer", "msgpack_hooks"]


class Parts(NamedTuple):
    """A pipeline's parts, and its reference path that every speed-up falls back to."""

    framing: Framing
    codecs: tuple[Codec, ...]
    messages: MessageRegistry | None
    #: One frame → value, stage by stage.
    decode: Callable[[Any], Any]
    #: Value → frame, stage by stage, unchecked (see ``encode_frame``).
    encode: Callable[[Any], Any]
    #: Value → frame, checked to be bytes.
    encode_frame: Callable[[Any], bytes]
    #: Values → wire bytes: ``Pipeline.encode_many``.
    encode_many: Callable[[Iterable[Any]], bytes]

    @property
    def raw(self) -> bool:
        """Whether the stack is the bytes codec alone: frames are the values."""
        if self.messages is not None or len(self.codecs) != 1:
            return False
        cls = type(self.codecs[0])
        return cls.decode is BytesCodec.decode and cls.encode is BytesCodec.encode

    @property
    def text(self) -> bool:
        """Whether the stack is the utf-8 codec alone."""
        if self.messages is not None or len(self.codecs) != 1:
            return False
        cls = type(self.codecs[0])
        return cls.decode is Utf8Codec.decode and cls.encode is Utf8Codec.encode


def msgpack_hooks(parts: Parts) -> MsgpackHooks | None:
    """The msgpack codec's hooks, when it is the whole codec stack (messages aside)."""
    if len(parts.codecs) != 1:
        return None
    hooks = getattr(parts.codecs[0], "msgpack_hooks", None)
    found: MsgpackHooks | None = hooks() if hooks is not None else None
    return found


def header_writer(framing: Framing) -> HeaderWriter | None:
    """The framing's length-header table, if it offers one."""
    offer = getattr(framing, "header_writer", None)
    return offer() if offer is not None else None


def each(decode: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    """``decode`` over a read's frames, in one call: the reference ``decode_many``."""

    def decode_many(frames: list[Any]) -> list[Any]:
        return [decode(frame) for frame in frames]

    return decode_many
