"""Framers: cut a byte stream into frames, and frames back into bytes.

Sans-I/O: nothing here touches a socket or an event loop.
"""

from __future__ import annotations

from typing import Any

from framework.core._registry import NameRegistry
from framework.core.framing._base import Buffer, FrameDecoder, Framing
from framework.core.framing.datagram import Datagram
from framework.core.framing.delimited import Delimited
from framework.core.framing.length_prefix import LengthPrefix
from framework.core.framing.msgpack_stream import MsgpackStream

__all__ = [
    "Buffer",
    "Datagram",
    "Delimited",
    "FrameDecoder",
    "Framing",
    "LengthPrefix",
    "MsgpackStream",
    "framing_names",
    "make_framing",
    "register_framing",
]

_FRAMINGS: NameRegistry[Framing] = NameRegistry("framing")
_FRAMINGS.register("length-prefix", LengthPrefix)
_FRAMINGS.register("newline", Delimited)
_FRAMINGS.register("delimiter", Delimited)
_FRAMINGS.register("msgpack-stream", MsgpackStream)
_FRAMINGS.register("datagram", Datagram)


def make_framing(name: str, /, **options: Any) -> Framing:
    """Build a framing by its registered name: ``make_framing("length-prefix", prefix_size=2)``."""
    return _FRAMINGS.make(name, **options)


def register_framing(name: str, factory: Any) -> None:
    """Make a custom framing buildable by name (from config files and the command line)."""
    _FRAMINGS.register(name, factory)


def framing_names() -> list[str]:
    """The registered framing names, sorted."""
    return list(_FRAMINGS)
