"""msgpack values, with explicit limits and no code execution.

Decoding never runs user code: extension types come back as
``msgpack.ExtType`` (timestamps as ``msgpack.Timestamp``), strings as ``str``
(invalid UTF-8 is a decode error), binary as ``bytes``, arrays as lists, and
map keys must be ``str`` or ``bytes``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import attrs
import msgpack

from framework.core._registry import limit_validator
from framework.core.codecs._base import Codec, exceeds_depth
from framework.core.errors import DecodeError, EncodeError

__all__ = ["MsgpackCodec", "MsgpackHooks"]

# 32 levels: JSON-like protocol messages rarely nest beyond a handful, and a
# low bound keeps recursive consumers of decoded values far from Python's
# recursion limit.
DEFAULT_MAX_DEPTH = 32
# A reused packer starts small (msgpack's default is 256 KiB, too much to keep
# per idle connection) and is dropped after packing more than _PACKER_KEEP.
_PACKER_BUFFER = 4096
_PACKER_KEEP = 64 * 1024


# Every array or map starts with one of these bytes (fixmap, fixarray,
# array16/32, map16/32), so their count bounds how deep a value can nest.
_CONTAINER_HEADERS = bytes([*range(0x80, 0xA0), *range(0xDC, 0xE0)])


def _may_nest(data: Any, depth: int) -> bool:
    """Cheap upper bound: could ``data`` hold containers nested over ``depth`` deep?"""
    if len(data) <= depth:
        return False
    raw = data if isinstance(data, bytes | bytearray) else bytes(data)
    return len(raw) - len(raw.translate(None, _CONTAINER_HEADERS)) > depth


class MsgpackHooks(NamedTuple):
    """What a pipeline that fuses msgpack with other stages calls instead of the codec.

    ``unpack`` is the bare ``unpackb`` with the codec's size limits (no
    error translation: on any exception, call ``decode`` for the precise
    ``DecodeError``); ``check_depth(data, value)`` applies ``max_depth``;
    ``new_packer()`` makes a ``msgpack.Packer`` that packs as ``encode``
    does, to be dropped after a value over ``packer_keep`` bytes;
    ``encoder()`` is the codec's own (see :meth:`MsgpackCodec.encoder`).
    """

    unpack: Callable[[Any], Any]
    check_depth: Callable[[Any, Any], None]
    new_packer: Callable[[], msgpack.Packer]
    packer_keep: int
    has_size_limits: bool
    encoder: Callable[[], Callable[[Any], bytes]]


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, buf_size=_PACKER_BUFFER)


@attrs.frozen(kw_only=True)
class MsgpackCodec(Codec):
    """msgpack ⇄ Python values.

    Size limits (``max_str_len``, ``max_bin_len``, ``max_array_len``,
    ``max_map_len``, ``max_ext_len``) default to ``None``: bounded by the
    frame's own size, which the framer already bounds; an announced size over
    a limit is rejected from the header, before anything is allocated.
    ``max_depth`` bounds nesting of arrays and maps.
    """

    name: ClassVar[str] = "msgpack"

    max_depth: int | None = attrs.field(default=DEFAULT_MAX_DEPTH, validator=limit_validator)
    max_str_len: int | None = attrs.field(default=None, validator=limit_validator)
    max_bin_len: int | None = attrs.field(default=None, validator=limit_validator)
    max_array_len: int | None = attrs.field(default=None, validator=limit_validator)
    max_map_len: int | None = attrs.field(default=None, validator=limit_validator)
    max_ext_len: int | None = attrs.field(default=None, validator=limit_validator)
    _unpack: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        options: dict[str, Any] = {}
        for key in ("max_str_len", "max_bin_len", "max_array_len", "max_map_len", "max_ext_len"):
            value = getattr(self, key)
            if value is not None:
                options[key] = value
        # raw=False, strict_map_key=True and use_list=True are msgpack's own
        # defaults (>= 1.0, pinned in pyproject): calling unpackb bare skips
        # keyword handling on every frame.
        unpack = functools.partial(msgpack.unpackb, **options) if options else msgpack.unpackb
        object.__setattr__(self, "_unpack", unpack)

    def decode(self, data: Any) -> Any:
        """Decode exactly one msgpack value; trailing bytes are an error."""
        try:
            value = self._unpack(data)
        except msgpack.ExtraData as exc:
            offset = len(data) - len(exc.extra)
            raise DecodeError(
                f"{len(exc.extra)} bytes after the msgpack value (at offset {offset})",
                codec=self.name,
                offset=offset,
            ) from None
        except msgpack.StackError:
            raise DecodeError(
                "msgpack value nested deeper than 1024 levels", codec=self.name
            ) from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # ValueError covers limits ("exceeds max_array_len"), FormatError,
            # truncated input and invalid UTF-8 in a str.
            reason = str(exc) or type(exc).__name__
            raise DecodeError(f"invalid msgpack: {reason}", codec=self.name) from None
        self._check_depth(data, value)
        return value

    def _check_depth(self, data: Any, value: Any) -> None:
        """Raise ``DecodeError`` if ``value`` (decoded from ``data``) nests over ``max_depth``."""
        depth = self.max_depth
        if depth is not None and _may_nest(data, depth) and exceeds_depth(value, depth):
            raise DecodeError(
                f"msgpack value nested deeper than max_depth={depth}", codec=self.name
            )

    def msgpack_hooks(self) -> MsgpackHooks | None:
        """The parts a fused pipeline stage calls; ``None`` if a subclass changed decode or encode.

        Not part of the public API: for the pipeline's fast paths.
        """
        cls = type(self)
        if cls.decode is not MsgpackCodec.decode or cls.encode is not MsgpackCodec.encode:
            return None
        limits = (
            self.max_str_len,
            self.max_bin_len,
            self.max_array_len,
            self.max_map_len,
            self.max_ext_len,
        )
        return MsgpackHooks(
            self._unpack,
            self._check_depth,
            _new_packer,
            _PACKER_KEEP,
            any(limit is not None for limit in limits),
            self.encoder,
        )

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; types msgpack cannot carry raise ``EncodeError``."""
        try:
            return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as msgpack: {exc}", codec=self.name) from exc

    def encoder(self) -> Callable[[Any], bytes]:
        """An ``encode`` with its own reusable ``msgpack.Packer``, for one owner.

        ``msgpack.packb`` builds a packer (and allocates its buffer) on every
        call; this reuses one, which more than halves the cost of a small
        value. The packer is not safe to share between threads: each
        connection makes its own (the pipeline's encoder does). It is created
        on first use, and dropped after an unusually large value so that one
        big message does not keep a big buffer alive.
        """
        packer: msgpack.Packer | None = None
        name = self.name

        def encode(value: Any) -> bytes:
            nonlocal packer
            if packer is None:
                packer = _new_packer()
            try:
                data: bytes = packer.pack(value)
            except (TypeError, ValueError, OverflowError) as exc:
                # The packer resets its buffer itself when packing fails.
                raise EncodeError(f"cannot encode as msgpack: {exc}", codec=name) from exc
            if len(data) > _PACKER_KEEP:
                packer = None
            return data

        return encode
