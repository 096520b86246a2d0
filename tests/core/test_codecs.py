"""Codecs: bytes, utf-8, msgpack and json, through the kit's laws and by example."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import msgpack
import pytest
from helpers_core import at_most

from framework import (
    BytesCodec,
    Codec,
    ConfigError,
    DecodeError,
    EncodeError,
    JsonCodec,
    MsgpackCodec,
    Utf8Codec,
    codec_names,
    make_codec,
    register_codec,
)
from framework.testing import check_codec_roundtrip, check_decode_total

CODECS = [
    BytesCodec(),
    Utf8Codec(),
    MsgpackCodec(),
    MsgpackCodec(max_depth=2),
    MsgpackCodec(max_depth=None),
    JsonCodec(),
    JsonCodec(max_depth=2),
]

# Size limits are not known to the value strategies: only the totality law.
LIMITED = [
    MsgpackCodec(max_str_len=4, max_bin_len=4, max_array_len=2, max_map_len=2, max_ext_len=1),
    JsonCodec(max_depth=1),
]


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.fixture
def peak_allocation() -> Iterator[Callable[[], int]]:
    """The peak of memory allocated by Python code during the test, in bytes."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- the kit's laws ------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_values_round_trip(codec: Codec) -> None:
    check_codec_roundtrip(codec, settings=at_most(100))


@pytest.mark.parametrize("codec", CODECS + LIMITED, ids=repr)
def test_any_frame_decodes_or_raises_decode_error(codec: Codec) -> None:
    check_decode_total(codec, settings=at_most(100))


# -- bytes and utf-8 -----------------------------------------------------------------


def test_bytes_codec_is_the_identity() -> None:
    codec = BytesCodec()
    assert codec.decode(b"\x00\xff") == b"\x00\xff"
    assert codec.decode(memoryview(b"ab")) == b"ab"
    assert codec.encode(bytearray(b"ab")) == b"ab"


def test_bytes_codec_refuses_values_that_are_not_bytes_like() -> None:
    with pytest.raises(EncodeError, match="str"):
        BytesCodec().encode("text")
    with pytest.raises(DecodeError, match="int"):
        BytesCodec().decode(2**40)  # never bytes(2**40): a terabyte of zeros


def test_utf8_round_trips_text() -> None:
    codec = Utf8Codec()
    assert codec.encode("héllo ✓") == "héllo ✓".encode()
    assert codec.decode("héllo ✓".encode()) == "héllo ✓"


def test_invalid_utf8_is_a_decode_error_naming_the_offset() -> None:
    with pytest.raises(DecodeError) as caught:
        Utf8Codec().decode(b"abc\xffdef")
    assert caught.value.offset == 3
    assert caught.value.codec == "utf-8"
    assert "offset 3" in str(caught.value)


def test_truncated_utf8_sequence_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as caught:
        Utf8Codec().decode(b"ok \xe2\x82")  # the first two bytes of the euro sign
    assert caught.value.offset == 3


def test_utf8_encode_refuses_lone_surrogates_and_non_text() -> None:
    with pytest.raises(EncodeError) as caught:
        Utf8Codec().encode("ab\udc80")
    assert caught.value.offset == 2
    with pytest.raises(EncodeError):
        Utf8Codec().encode(b"bytes")


def test_utf8_decode_refuses_non_bytes() -> None:
    with pytest.raises(DecodeError):
        Utf8Codec().decode(12)


# -- msgpack -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bomb",
    [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"],
    ids=["array32", "map32", "str32"],
)
def test_header_announcing_4_billion_items_in_a_5_byte_frame_is_a_decode_error(
    bomb: bytes, peak_allocation: Callable[[], int]
) -> None:
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(bomb)
    assert peak_allocation() < 1024 * 1024


def test_nesting_deeper_than_max_depth_is_a_decode_error() -> None:
    codec = MsgpackCodec(max_depth=4)
    assert codec.decode(b"\x91\x91\x91\x90") == [[[[]]]]  # 4 levels
    with pytest.raises(DecodeError, match="max_depth=4"):
        codec.decode(b"\x91\x91\x91\x91\x90")  # 5 levels
    with pytest.raises(DecodeError, match="max_depth=4"):
        codec.decode(b"\x81\xa1a" * 5 + b"\xc0")  # maps count too


def test_nesting_of_2000_levels_is_a_decode_error(peak_allocation: Callable[[], int]) -> None:
    for codec in (MsgpackCodec(), MsgpackCodec(max_depth=None)):
        with pytest.raises(DecodeError, match="nested"):
            codec.decode(b"\x91" * 2000 + b"\x90")
    assert peak_allocation() < 1024 * 1024


def test_size_limits_are_checked_from_the_header() -> None:
    codec = make_codec("msgpack", max_str_len=4, max_array_len=2)
    assert codec.decode(pack(["abcd", "e"])) == ["abcd", "e"]
    with pytest.raises(DecodeError):
        codec.decode(pack("abcde"))
    with pytest.raises(DecodeError):
        codec.decode(pack([1, 2, 3]))


def test_trailing_bytes_after_a_msgpack_value_are_a_decode_error_with_offset() -> None:
    with pytest.raises(DecodeError) as caught:
        MsgpackCodec().decode(pack([1, 2]) + b"\x01\x02")
    assert caught.value.offset == 3
    assert caught.value.codec == "msgpack"


@pytest.mark.parametrize(
    "frame",
    [b"", b"\xc1", b"\x93\x01", b"\xa3ab", b"\xd9"],
    ids=["empty", "never-used-byte", "short-array", "short-str", "lone-header"],
)
def test_malformed_msgpack_is_a_decode_error(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(frame)


def test_ext_types_come_back_as_ext_type_and_are_never_executed() -> None:
    # The bytes of a classic pickle exploit: to msgpack they are opaque data.
    payload = b"cos\nsystem\n(S'echo owned'\ntR."
    value = MsgpackCodec().decode(pack([msgpack.ExtType(1, payload)]))
    assert value == [msgpack.ExtType(1, payload)]
    assert type(value[0]) is msgpack.ExtType


def test_timestamp_ext_comes_back_as_a_timestamp() -> None:
    value = MsgpackCodec().decode(pack(msgpack.Timestamp(1_700_000_000, 5)))
    assert value == msgpack.Timestamp(1_700_000_000, 5)


def test_str_is_str_and_bin_is_bytes() -> None:
    value = MsgpackCodec().decode(b"\x82\xa1s\xa2hi\xa1b\xc4\x02hi")
    assert value == {"s": "hi", "b": b"hi"}
    assert type(value["s"]) is str
    assert type(value["b"]) is bytes


def test_invalid_utf8_in_a_msgpack_str_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(b"\xa2\xff\xfe")


def test_non_str_map_keys_are_rejected() -> None:
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(b"\x81\x01\x02")  # {1: 2}
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(b"\x81\x91\x01\x02")  # {[1]: 2}
    assert MsgpackCodec().decode(b"\x81\xc4\x01k\x02") == {b"k": 2}


def test_msgpack_wire_format_is_standard() -> None:
    assert MsgpackCodec().encode({"a": [1, b"\x00", "é"]}) == (
        b"\x81\xa1a\x93\x01\xc4\x01\x00\xa2\xc3\xa9"
    )


@pytest.mark.parametrize(
    "value",
    [object(), 2**64, -(2**63) - 1, {1, 2}, {"nested": [object()]}],
    ids=["object", "uint64-overflow", "int64-underflow", "set", "nested-object"],
)
def test_values_msgpack_cannot_carry_are_encode_errors(value: Any) -> None:
    with pytest.raises(EncodeError) as caught:
        MsgpackCodec().encode(value)
    assert caught.value.codec == "msgpack"


# -- json ----------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [b"NaN", b"[Infinity]", b'{"x": -Infinity}'], ids=repr)
def test_json_refuses_nan_and_infinity_on_decode(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(frame)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]], ids=repr)
def test_json_refuses_nan_and_infinity_on_encode(value: Any) -> None:
    with pytest.raises(EncodeError):
        JsonCodec().encode(value)


def test_json_nesting_deeper_than_max_depth_is_a_decode_error() -> None:
    codec = JsonCodec(max_depth=3)
    assert codec.decode(b"[[[]]]") == [[[]]]
    with pytest.raises(DecodeError, match="max_depth=3"):
        codec.decode(b"[[[[]]]]")
    with pytest.raises(DecodeError, match="max_depth=3"):
        codec.decode(b'{"a":{"b":{"c":{}}}}')


def test_json_nesting_of_100000_brackets_is_a_decode_error() -> None:
    for codec in (JsonCodec(), JsonCodec(max_depth=None)):
        with pytest.raises(DecodeError):
            codec.decode(b"[" * 100_000)
        with pytest.raises(DecodeError):
            codec.decode(b"[" * 100_000 + b"]" * 100_000)


def test_json_invalid_utf8_is_a_decode_error_naming_the_offset() -> None:
    with pytest.raises(DecodeError) as caught:
        JsonCodec().decode(b'{"a": "\xff"}')
    assert caught.value.offset == 7


def test_json_syntax_error_names_the_offset() -> None:
    with pytest.raises(DecodeError) as caught:
        JsonCodec().decode(b'{"a": 1} trailing')
    assert caught.value.offset == 9
    assert caught.value.codec == "json"


def test_json_integers_are_exact() -> None:
    codec = JsonCodec()
    assert codec.decode(b"123456789012345678901234567890") == 123456789012345678901234567890
    assert codec.encode(2**100) == str(2**100).encode()
    assert codec.decode(b"-0") == 0
    assert type(codec.decode(b"1")) is int
    assert type(codec.decode(b"1.0")) is float


def test_json_integer_too_long_to_convert_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(b"1" * 5000)


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"a": [1, 2], "é": "✓"}) == '{"a":[1,2],"é":"✓"}'.encode()


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, b"bytes", "lone \udc80", {("a",): 1}],
    ids=["object", "set", "bytes", "lone-surrogate", "tuple-key"],
)
def test_values_json_cannot_carry_are_encode_errors(value: Any) -> None:
    with pytest.raises(EncodeError) as caught:
        JsonCodec().encode(value)
    assert caught.value.codec == "json"


def test_json_output_is_standard_json() -> None:
    value = {"list": [1, 2.5, None, True], "text": "line\nbreak"}
    assert json.loads(JsonCodec().encode(value)) == value


# -- building codecs by name ---------------------------------------------------------


def test_builtin_codec_names() -> None:
    assert {"bytes", "utf-8", "msgpack", "json"} <= set(codec_names())


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("bytes", {}, BytesCodec()),
        ("utf-8", {}, Utf8Codec()),
        (
            "msgpack",
            {"max_depth": 8, "max_str_len": 100},
            MsgpackCodec(max_depth=8, max_str_len=100),
        ),
        ("json", {"max_depth": None}, JsonCodec(max_depth=None)),
    ],
    ids=lambda item: item if isinstance(item, str) else "",
)
def test_make_codec_by_name_with_options(
    name: str, options: dict[str, Any], expected: Codec
) -> None:
    assert make_codec(name, **options) == expected


def test_unknown_codec_name_is_a_config_error_naming_it_and_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'cbor'") as caught:
        make_codec("cbor")
    assert "msgpack" in str(caught.value)
    assert caught.value.value == "cbor"


def test_unknown_codec_option_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_deep"):
        make_codec("msgpack", max_deep=3)
    with pytest.raises(ConfigError, match="max_depth"):
        make_codec("utf-8", max_depth=3)


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("msgpack", "max_depth", 0),
        ("msgpack", "max_depth", -1),
        ("msgpack", "max_depth", "32"),
        ("msgpack", "max_str_len", True),
        ("msgpack", "max_array_len", 1.5),
        ("json", "max_depth", 0),
    ],
    ids=repr,
)
def test_bad_option_values_are_config_errors_naming_the_option(
    name: str, option: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=option) as caught:
        make_codec(name, **{option: value})
    assert caught.value.option == option
    assert caught.value.value == value


@attrs.frozen
class _Reversed(Codec):
    name = "test-codecs-reversed"

    def decode(self, data: Any) -> bytes:
        return bytes(data)[::-1]

    def encode(self, value: Any) -> bytes:
        return bytes(value)[::-1]


def test_registered_codec_is_built_by_name() -> None:
    register_codec("test-codecs-reversed", _Reversed)
    assert "test-codecs-reversed" in codec_names()
    assert make_codec("test-codecs-reversed").encode(b"abc") == b"cba"


@pytest.mark.parametrize("text", [b"1e400", b"[-1e999]", b'{"x": 2e308}'])
def test_json_refuses_numbers_that_overflow_a_float(text: bytes) -> None:
    with pytest.raises(DecodeError, match="out of range"):
        JsonCodec().decode(text)


@pytest.mark.parametrize("text", [b'"\\ud800"', b'["a\\udfff"]', b'{"\\udc00": 1}', b'"\\uDBFF"'])
def test_json_refuses_an_unpaired_surrogate_escape(text: bytes) -> None:
    with pytest.raises(DecodeError, match="unpaired UTF-16 surrogate"):
        JsonCodec().decode(text)


def test_json_accepts_a_surrogate_pair_and_encodes_it_back() -> None:
    codec = JsonCodec()
    value = codec.decode(b'["\\ud83d\\ude00", 1.5e300]')
    assert value == ["\U0001f600", 1.5e300]
    assert codec.decode(codec.encode(value)) == value
