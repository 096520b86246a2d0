"""Codecs: turn a frame into a value and back; they stack in a pipeline.

Sans-I/O: nothing here touches a socket or an event loop.
"""

from __future__ import annotations

from typing import Any

from framework.core._registry import NameRegistry
from framework.core.codecs._base import Codec, exceeds_depth
from framework.core.codecs.basic import BytesCodec, Utf8Codec
from framework.core.codecs.json_codec import JsonCodec
from framework.core.codecs.msgpack_codec import MsgpackCodec

__all__ = [
    "BytesCodec",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "Utf8Codec",
    "codec_names",
    "exceeds_depth",
    "make_codec",
    "register_codec",
]

_CODECS: NameRegistry[Codec] = NameRegistry("codec")
_CODECS.register("bytes", BytesCodec)
_CODECS.register("utf-8", Utf8Codec)
_CODECS.register("msgpack", MsgpackCodec)
_CODECS.register("json", JsonCodec)


def make_codec(name: str, /, **options: Any) -> Codec:
    """Build a codec by its registered name: ``make_codec("msgpack", max_depth=8)``."""
    return _CODECS.make(name, **options)


def register_codec(name: str, factory: Any) -> None:
    """Make a custom codec buildable by name (from config files and the command line)."""
    _CODECS.register(name, factory)


def codec_names() -> list[str]:
    """The registered codec names, sorted."""
    return list(_CODECS)
