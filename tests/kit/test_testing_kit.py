"""The testing kit catches bugs: broken parts fail the laws, sound ones pass them.

Laws that must fail run with few examples and ``derandomize=True``: the
search is then short and the same on every run.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from framework import (
    Codec,
    ConfigError,
    DecodeError,
    Delimited,
    FrameDecoder,
    FrameTooLarge,
    Framing,
    IncompleteFrame,
    InvalidFrame,
    LengthPrefix,
    MessageRegistry,
    MsgpackCodec,
    Pipeline,
)
from framework.testing import (
    BUFFER_SLACK,
    check_codec_roundtrip,
    check_decode_total,
    check_framing_roundtrip,
    check_message_roundtrip,
    check_rejects_oversize,
    chunkings,
    codec_values,
    frame_payloads,
    garbage,
    json_values,
    message_instances,
    msgpack_values,
    register_frames,
    register_values,
    utf8_text,
)

KIT = settings(max_examples=30, derandomize=True, database=None, report_multiple_bugs=False)


# -- broken codecs -------------------------------------------------------------------


@attrs.frozen
class DropsLastByte(Codec):
    name: ClassVar[str] = "drops-last-byte"

    def encode(self, value: Any) -> bytes:
        return bytes(value)[:-1]

    def decode(self, data: Any) -> bytes:
        return bytes(data)


@attrs.frozen
class KeyErrorOnGarbage(Codec):
    """Looks a prefix up in a table, and lets KeyError escape for unknown ones."""

    name: ClassVar[str] = "key-error"
    table: ClassVar[dict[int, str]] = {0: "zero", 1: "one"}

    def encode(self, value: Any) -> bytes:
        return bytes([next(k for k, v in self.table.items() if v == value)])

    def decode(self, data: Any) -> str:
        return self.table[bytes(data)[0]]


@attrs.frozen
class Rot13(Codec):
    """A sound custom codec: text shifted by 13 letters, as UTF-8."""

    name: ClassVar[str] = "rot13"

    def encode(self, value: Any) -> bytes:
        return value.translate(_ROT13).encode()  # type: ignore[no-any-return]

    def decode(self, data: Any) -> str:
        try:
            return bytes(data).decode().translate(_ROT13)
        except UnicodeDecodeError as exc:
            raise DecodeError("not UTF-8", codec=self.name, offset=exc.start) from None


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ROT13 = str.maketrans(
    _LOWER + _LOWER.upper(), _LOWER[13:] + _LOWER[:13] + (_LOWER[13:] + _LOWER[:13]).upper()
)


def test_codec_roundtrip_catches_a_codec_that_loses_a_byte() -> None:
    with pytest.raises(AssertionError):
        check_codec_roundtrip(DropsLastByte(), values=st.binary(min_size=1), settings=KIT)


def test_codec_roundtrip_catches_a_codec_that_fails_on_its_own_output() -> None:
    with pytest.raises(DecodeError, match="max_depth"):
        check_codec_roundtrip(
            MsgpackCodec(max_depth=1), values=st.just([[1]]), settings=KIT
        )  # encodes depth 2, then refuses to decode it


def test_decode_total_catches_a_codec_raising_key_error_on_garbage() -> None:
    with pytest.raises(KeyError):
        check_decode_total(KeyErrorOnGarbage(), inputs=st.binary(min_size=1), settings=KIT)


def test_decode_total_catches_a_codec_raising_index_error_on_empty_input() -> None:
    with pytest.raises(IndexError):
        check_decode_total(KeyErrorOnGarbage(), inputs=st.just(b""), settings=KIT)


def test_sound_custom_codec_passes_with_explicit_values() -> None:
    check_codec_roundtrip(Rot13(), values=utf8_text(), settings=KIT)
    check_decode_total(Rot13(), settings=KIT)


# -- broken framings -----------------------------------------------------------------


class _LinesDecoder(FrameDecoder):
    """Newline-separated frames; ``limit`` is enforced only if ``check``."""

    __slots__ = ("_buf", "_check", "_limit", "_lose_partial")

    def __init__(self, limit: int | None, *, check: bool, lose_partial: bool = False) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._check = check
        self._lose_partial = lose_partial

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: Any) -> list[bytes]:
        self._buf += data
        *frames, rest = bytes(self._buf).split(b"\n")
        self._buf[:] = b"" if self._lose_partial else rest
        if self._check and self._limit is not None:
            for size in [len(self._buf), *map(len, frames)]:
                if size > self._limit:
                    raise FrameTooLarge("line too long", size=size, limit=self._limit)
        return frames

    def end(self) -> None:
        if self._buf:
            raise IncompleteFrame("partial line", buffered=len(self._buf))


@attrs.frozen(kw_only=True)
class UnboundedLines(Framing):
    """Declares a limit, then buffers a line of any length: a classic bug."""

    name: ClassVar[str] = "unbounded-lines"
    max_frame_size: int | None = 64

    def decoder(self) -> FrameDecoder:
        return _LinesDecoder(self.max_frame_size, check=False)

    def encode(self, frame: bytes) -> bytes:
        return frame + b"\n"


@attrs.frozen(kw_only=True)
class ForgetfulLines(Framing):
    """Drops the start of a line that arrives in two chunks: a chunking bug."""

    name: ClassVar[str] = "forgetful-lines"
    max_frame_size: int | None = None

    def decoder(self) -> FrameDecoder:
        return _LinesDecoder(None, check=False, lose_partial=True)

    def encode(self, frame: bytes) -> bytes:
        return frame + b"\n"


@attrs.frozen(kw_only=True)
class HexLines(Framing):
    """A sound custom framing: each frame hex-encoded on a line of its own."""

    name: ClassVar[str] = "hex-lines"
    max_frame_size: int | None = None

    def decoder(self) -> FrameDecoder:
        return _HexLinesDecoder()

    def encode(self, frame: bytes) -> bytes:
        return frame.hex().encode() + b"\n"


class _HexLinesDecoder(FrameDecoder):
    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = Delimited(max_frame_size=4096).decoder()

    @property
    def buffered(self) -> int:
        return self._lines.buffered

    def feed(self, data: Any) -> list[bytes]:
        try:
            return [bytes.fromhex(line.decode("ascii")) for line in self._lines.feed(data)]
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise InvalidFrame(f"not a hex line: {exc}") from exc

    def end(self) -> None:
        self._lines.end()


def test_rejects_oversize_catches_a_framing_that_buffers_without_limit() -> None:
    with pytest.raises(AssertionError):
        check_rejects_oversize(UnboundedLines(), oversize_frame=lambda n: b"x" * n, settings=KIT)


def test_rejects_oversize_passes_once_the_limit_is_enforced() -> None:
    @attrs.frozen(kw_only=True)
    class BoundedLines(UnboundedLines):
        def decoder(self) -> FrameDecoder:
            return _LinesDecoder(self.max_frame_size, check=True)

    check_rejects_oversize(BoundedLines(), oversize_frame=lambda n: b"x" * n, settings=KIT)


def test_decode_total_catches_a_decoder_that_holds_more_than_its_limit() -> None:
    long_line = st.binary(min_size=64 + BUFFER_SLACK + 1, max_size=200).map(
        lambda data: data.replace(b"\n", b"")
    )
    with pytest.raises(AssertionError):
        check_decode_total(UnboundedLines(), inputs=long_line, settings=KIT)


def test_framing_roundtrip_catches_a_decoder_that_loses_split_frames() -> None:
    lines = st.binary(min_size=1, max_size=20).map(lambda data: data.replace(b"\n", b"") or b"x")
    with pytest.raises(AssertionError):
        check_framing_roundtrip(ForgetfulLines(), frames=lines, settings=KIT)


def test_sound_custom_framing_passes_with_explicit_frames() -> None:
    check_framing_roundtrip(HexLines(), frames=st.binary(max_size=50), settings=KIT)
    check_decode_total(HexLines(), settings=KIT)


class _ByteCountedDecoder(FrameDecoder):
    """One byte of length, then the payload: only ``next_frame``, the base class does the rest."""

    def __init__(self, limit: int | None, *, check: bool = True) -> None:
        super().__init__()
        self.limit = limit
        self.check = check

    def next_frame(self, buffer: bytearray, start: int) -> tuple[bytes, int] | None:
        if len(buffer) <= start:
            return None
        size = buffer[start]
        if self.check and self.limit is not None and size > self.limit:
            raise FrameTooLarge(f"{size} bytes announced", size=size, limit=self.limit)
        end = start + 1 + size
        return (bytes(buffer[start + 1 : end]), end) if len(buffer) >= end else None


@attrs.frozen(kw_only=True)
class ByteCounted(Framing):
    """A framing written the short way: its decoder implements next_frame only."""

    name: ClassVar[str] = "byte-counted"
    max_frame_size: int | None = 100

    def decoder(self) -> FrameDecoder:
        return _ByteCountedDecoder(self.max_frame_size)

    def encode(self, frame: bytes) -> bytes:
        limit = self.max_frame_size
        if limit is not None and len(frame) > limit:
            raise FrameTooLarge("too long", size=len(frame), limit=limit)
        if len(frame) > 255:
            raise InvalidFrame("one byte of length holds at most 255")
        return bytes([len(frame)]) + frame


register_frames(ByteCounted, lambda framing: st.binary(max_size=framing.max_frame_size or 255))


def test_a_framing_written_with_next_frame_passes_every_framing_law() -> None:
    for framing in (ByteCounted(), ByteCounted(max_frame_size=3)):
        check_framing_roundtrip(framing, settings=KIT)
        check_rejects_oversize(framing, settings=KIT)
        check_decode_total(framing, settings=KIT)
        check_decode_total(Pipeline(framing=framing, codecs="utf-8"), settings=KIT)


def test_rejects_oversize_catches_a_next_frame_that_ignores_the_limit() -> None:
    @attrs.frozen(kw_only=True)
    class Careless(ByteCounted):
        def decoder(self) -> FrameDecoder:
            return _ByteCountedDecoder(self.max_frame_size, check=False)

    with pytest.raises(AssertionError):
        check_rejects_oversize(Careless(max_frame_size=3), settings=KIT)


class _CarelessHexLinesDecoder(_HexLinesDecoder):
    __slots__ = ()

    def feed(self, data: Any) -> list[bytes]:
        return [bytes.fromhex(line.decode("ascii")) for line in self._lines.feed(data)]


@attrs.frozen(kw_only=True)
class CarelessHexLines(HexLines):
    """Lets ValueError escape on a line that is not hex."""

    def decoder(self) -> FrameDecoder:
        return _CarelessHexLinesDecoder()


def test_decode_total_catches_a_framing_raising_a_builtin_error() -> None:
    with pytest.raises(ValueError, match="hex"):
        check_decode_total(CarelessHexLines(), inputs=st.just(b"not hex\n"), settings=KIT)


# -- registering strategies for custom parts -----------------------------------------


@attrs.frozen
class Shouting(Rot13):
    """A subclass: the strategy registered for its base class serves it too."""

    name: ClassVar[str] = "shouting"


def test_register_values_teaches_the_laws_a_custom_codec() -> None:
    @attrs.frozen
    class Unknown(Rot13):
        name: ClassVar[str] = "unknown"

    register_values(Rot13, lambda codec: utf8_text(max_size=20))
    check_codec_roundtrip(Rot13(), settings=KIT)
    check_codec_roundtrip(Shouting(), settings=KIT)

    register_values(Unknown, lambda codec: st.just("only this"))
    assert find(codec_values(Unknown()), lambda value: True) == "only this"


def test_codec_values_without_a_registration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="register_values"):
        codec_values(DropsLastByte())


def test_register_frames_teaches_the_laws_a_custom_framing() -> None:
    register_frames(HexLines, lambda framing: st.binary(max_size=30))
    check_framing_roundtrip(HexLines(), settings=KIT)


def test_frame_payloads_without_a_registration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="register_frames"):
        frame_payloads(ForgetfulLines())


def test_laws_that_need_a_limit_or_messages_say_so() -> None:
    with pytest.raises(ConfigError, match="max_frame_size"):
        check_rejects_oversize(LengthPrefix(max_frame_size=None))
    with pytest.raises(ConfigError, match="messages"):
        check_message_roundtrip(Pipeline(codecs="msgpack"))


# -- strategies ----------------------------------------------------------------------


@given(st.binary(max_size=300), st.data())
def test_chunkings_concatenate_to_the_input(data: bytes, draw: st.DataObject) -> None:
    chunks = draw.draw(chunkings(data))
    assert b"".join(chunks) == data
    assert all(type(chunk) is bytes for chunk in chunks)


def test_chunkings_include_whole_and_one_byte_at_a_time() -> None:
    data = b"abcdef"
    search = settings(database=None, max_examples=500)
    assert find(chunkings(data), lambda chunks: chunks == [data], settings=search) == [data]
    bytewise = [bytes([byte]) for byte in data]
    assert find(chunkings(data), lambda chunks: chunks == bytewise, settings=search) == bytewise


@given(garbage(st.just(b"\x00\x00\x00\x03abc")))
def test_garbage_is_bytes(data: bytes) -> None:
    assert type(data) is bytes


@given(msgpack_values(max_depth=3))
def test_msgpack_values_round_trip_through_the_msgpack_codec(value: Any) -> None:
    codec = MsgpackCodec(max_depth=3)
    assert codec.decode(codec.encode(value)) == value


@given(json_values())
def test_json_values_are_json(value: Any) -> None:
    import json

    assert json.loads(json.dumps(value, allow_nan=False)) == value


class Mood(enum.Enum):
    CALM = "calm"
    ANGRY = "angry"


@attrs.frozen
class Leaf:
    weight: float
    label: str | None


@attrs.frozen
class Branch:
    mood: Mood
    leaves: list[Leaf]
    notes: dict[str, int]
    blob: bytes
    root: Leaf | None = None


@attrs.frozen
class Tree:
    value: int
    children: list[Tree] = attrs.Factory(list)


REGISTRY = MessageRegistry()
REGISTRY.register(Branch, "branch")
REGISTRY.register(Tree, "tree")


@given(message_instances(Branch))
def test_message_instances_are_valid_instances(branch: Branch) -> None:
    assert isinstance(branch, Branch)
    assert all(isinstance(leaf, Leaf) for leaf in branch.leaves)
    assert REGISTRY.decode(REGISTRY.encode(branch)) == branch


@settings(max_examples=20)
@given(message_instances(Tree))
def test_message_instances_of_a_class_that_contains_itself(tree: Tree) -> None:
    assert REGISTRY.decode(REGISTRY.encode(tree)) == tree


def test_message_instances_of_an_unknown_field_type_say_so() -> None:
    @attrs.frozen
    class Odd:
        value: complex

    with pytest.raises(ConfigError, match="complex"):
        find(message_instances(Odd), lambda value: True)
