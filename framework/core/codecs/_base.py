"""The codec contract: a frame's bytes become a value, and back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from framework.core.errors import DecodeError

__all__ = ["Codec", "exceeds_depth", "strict_utf8"]


class Codec(ABC):
    """Maps a frame to a value (``decode``) and a value to a frame (``encode``).

    Codecs stack: in a pipeline the first codec is nearest the wire, so
    decoding runs the stack front to back and encoding back to front. A codec
    is stateless and shareable. ``decode`` raises only
    :class:`~framework.core.errors.DecodeError` (or a subclass) on bad input;
    ``encode`` raises :class:`~framework.core.errors.EncodeError` for values it
    cannot represent.
    """

    #: The name config files and the command line use.
    name: ClassVar[str]
    #: Whether what ``encode`` writes is always valid UTF-8 text: over a
    #: WebSocket, the frames of a stack whose wire-side codec writes text go
    #: out as text frames (a browser's ``event.data`` is then a string).
    text: ClassVar[bool] = False

    @abstractmethod
    def decode(self, data: Any) -> Any:
        """Turn the output of the stage below (bytes, for the first codec) into a value."""

    @abstractmethod
    def encode(self, value: Any) -> Any:
        """Turn a value into the input of the stage below."""


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether containers (lists, dicts) in ``value`` nest more than ``limit`` deep.

    Iterative, so a hostile value cannot exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            children = item.values()
        elif kind is list:
            children = item
        else:
            continue
        if depth > limit:
            return True
        for child in children:
            if type(child) is dict or type(child) is list:
                push((child, depth + 1))
    return False


def strict_utf8(data: Any, codec: str) -> str:
    """Decode ``data`` as strict UTF-8; bad input is a ``DecodeError`` naming its offset."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"invalid UTF-8 at offset {exc.start}: {exc.reason}", codec=codec, offset=exc.start
        ) from exc
    except TypeError as exc:
        raise DecodeError(
            f"the {codec} codec decodes bytes, not {type(data).__name__}", codec=codec
        ) from exc
