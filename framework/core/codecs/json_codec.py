"""JSON values (RFC 8259): UTF-8 text, no NaN or Infinity, bounded nesting."""

from __future__ import annotations

import json
from typing import Any, ClassVar, NoReturn

import attrs

from framework.core._registry import limit_validator
from framework.core.codecs._base import Codec, exceeds_depth, strict_utf8
from framework.core.errors import DecodeError, EncodeError

__all__ = ["JsonCodec"]

DEFAULT_MAX_DEPTH = 32


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON syntax but overflows to inf, which encode (and
    # other languages' parsers) refuse: refuse it here too.
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan
        raise ValueError(f"number {text} is out of range for a 64-bit float")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """A string in ``value`` (key or item) holding a lone UTF-16 surrogate, if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
    return None


@attrs.frozen(kw_only=True)
class JsonCodec(Codec):
    """JSON ⇄ Python values, compact on the wire.

    Input must be strict UTF-8 JSON; ``NaN``/``Infinity`` are refused both
    ways, since other languages' parsers reject them. ``max_depth`` bounds
    nesting.
    """

    name: ClassVar[str] = "json"
    text: ClassVar[bool] = True

    max_depth: int | None = attrs.field(default=DEFAULT_MAX_DEPTH, validator=limit_validator)
    _decoder: json.JSONDecoder = attrs.field(init=False, repr=False, eq=False)
    _encoder: json.JSONEncoder = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self,
            "_decoder",
            json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float),
        )
        object.__setattr__(
            self,
            "_encoder",
            json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False),
        )

    def decode(self, data: Any) -> Any:
        """Decode one JSON document; the error names the offset."""
        text = strict_utf8(data, self.name)
        try:
            value = self._decoder.decode(text)
        except json.JSONDecodeError as exc:
            raise DecodeError(
                f"invalid JSON at offset {exc.pos}: {exc.msg}", codec=self.name, offset=exc.pos
            ) from None
        except RecursionError:
            raise DecodeError("JSON nested too deeply to parse", codec=self.name) from None
        except ValueError as exc:
            # Integers longer than Python's int-string limit, NaN/Infinity.
            raise DecodeError(f"invalid JSON: {exc}", codec=self.name) from None
        depth = self.max_depth
        if depth is not None and len(data) > depth and exceeds_depth(value, depth):
            raise DecodeError(f"JSON value nested deeper than max_depth={depth}", codec=self.name)
        # A \ud800-style escape without its pair decodes to a str that is not
        # text (no UTF-8 can carry it): refuse it, as the utf-8 codec does.
        if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(value) is not None:
            raise DecodeError("JSON string holds an unpaired UTF-16 surrogate", codec=self.name)
        return value

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as compact UTF-8 JSON."""
        try:
            return self._encoder.encode(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}", codec=self.name) from exc
        except UnicodeEncodeError as exc:
            raise EncodeError(f"cannot encode as UTF-8 JSON: {exc}", codec=self.name) from exc
