"""The core's WebSocket rules, with bytes and strings: messages, text or binary, Origin."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework import ConfigError, Pipeline
from framework.core.connection import BadInput
from framework.core.errors import DecodeError, FrameTooLarge, InvalidFrame
from framework.core.websocket import (
    CloseCode,
    Due,
    MessageDecoder,
    WebSocketClock,
    WebSocketOptions,
    close_code_for,
    origin_allowed,
)

# Values each codec carries, for any choice of codec.
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
CASES: dict[str, tuple[Pipeline, st.SearchStrategy[Any]]] = {
    "bytes": (Pipeline(codecs="bytes"), st.binary(max_size=200)),
    "utf-8": (Pipeline(codecs="utf-8"), st.text(max_size=200)),
    "json": (Pipeline(codecs="json"), _JSONISH),
    "msgpack": (Pipeline(codecs="msgpack"), _JSONISH | st.binary(max_size=50)),
}
TEXT_CODECS = {"utf-8", "json"}


def _never() -> bool:
    return False


@given(data=st.data(), codec=st.sampled_from(sorted(CASES)))
def test_any_value_round_trips_as_one_message_of_the_codecs_kind(
    data: st.DataObject, codec: str
) -> None:
    pipeline, values = CASES[codec]
    value = data.draw(values)
    payload = pipeline.encode_frame(value)
    text = pipeline.writes_text
    assert text is (codec in TEXT_CODECS)
    if text:
        payload.decode("utf-8")  # a text frame's payload is always UTF-8
    decoder = MessageDecoder(pipeline, _never)
    assert decoder.decode(payload, text=text) == [value]
    # Received as the other kind of frame, it decodes all the same when the
    # payload is UTF-8 (a browser may send text to a binary codec, and back).
    if not text:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return
    assert decoder.decode(payload, text=not text) == [value]


@given(st.binary(min_size=1, max_size=50))
def test_a_text_message_that_is_not_utf8_is_fatal_bad_input(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    else:
        return
    [bad] = MessageDecoder(Pipeline(codecs="bytes"), lambda: True).decode(payload, text=True)
    assert isinstance(bad, BadInput)
    assert bad.fatal
    assert isinstance(bad.error, DecodeError)
    assert bad.error.offset == offset
    assert close_code_for(bad.error) == CloseCode.INVALID_DATA


def test_a_payload_that_does_not_decode_costs_only_itself_with_a_fallback() -> None:
    pipeline = Pipeline(codecs="msgpack")
    [bad] = MessageDecoder(pipeline, lambda: True).decode(b"\xc1", text=False)
    assert isinstance(bad, BadInput)
    assert not bad.fatal
    [fatal] = MessageDecoder(pipeline, _never).decode(b"\xc1", text=False)
    assert isinstance(fatal, BadInput)
    assert fatal.fatal


def test_close_codes_for_errors() -> None:
    assert close_code_for(FrameTooLarge("big", size=2, limit=1)) == 1009
    assert close_code_for(DecodeError("bad", codec="json")) == 1007
    assert close_code_for(InvalidFrame("bad frame")) == 1007


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed", "ok"),
    [
        (None, "h:1", False, (), True),  # a program, not a browser
        ("http://h:1", "h:1", False, (), True),  # the page this listener served
        ("HTTP://H:1/", "h:1", False, (), True),
        ("https://h:1", "h:1", True, (), True),
        ("http://h:1", "h:1", True, (), False),  # an http page on a wss listener
        ("http://h", "h:80", False, (), True),  # default port written or not
        ("https://h:443", "h", True, (), True),
        ("http://evil.example", "h:1", False, (), False),
        ("http://evil.example", None, False, (), False),
        ("https://game.example", "h:1", False, ("https://game.example",), True),
        ("https://other.example", "h:1", False, ("https://game.example",), False),
        ("null", "h:1", False, ("*",), True),
    ],
)
def test_origin_policy(
    origin: str | None, host: str | None, secure: bool, allowed: tuple[str, ...], ok: bool
) -> None:
    assert origin_allowed(origin, host, secure=secure, allowed=allowed) is ok


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"origins": "https://one.example"}, "origins"),
        ({"origins": [1]}, "origins"),
        ({"subprotocol": "has space"}, "subprotocol"),
        ({"subprotocol": ""}, "subprotocol"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"ping_timeout": None}, "ping_timeout"),
        ({"max_request_size": None}, "max_request_size"),
        ({"compression": "yes"}, "compression"),
        ({"max_message_frames": 0}, "max_message_frames"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebSocketOptions(**options)
    assert info.value.option == option


def test_options_normalise_origins() -> None:
    options = WebSocketOptions(origins=["https://Game.Example/"], ping_interval=None)
    assert options.origins == ("https://game.example",)
    assert options.ping_interval is None


def test_fragments_are_assembled_into_one_message() -> None:
    decoder = MessageDecoder(Pipeline(codecs="utf-8"), _never)
    assert decoder.fragment(b"frag", text=True, fin=False) == []
    assert decoder.fragment(b"men", text=None, fin=False) == []
    assert decoder.fragment(b"ted", text=None, fin=True) == ["fragmented"]
    # A UTF-8 character split across fragments is checked on the whole message.
    assert decoder.fragment("é".encode()[:1], text=True, fin=False) == []
    assert decoder.fragment("é".encode()[1:], text=None, fin=True) == ["é"]


@given(
    pieces=st.lists(st.binary(max_size=8), min_size=1, max_size=40),
    limit=st.integers(min_value=1, max_value=40),
)
def test_a_message_in_more_frames_than_max_frames_is_fatal_frame_too_large(
    pieces: list[bytes], limit: int
) -> None:
    decoder = MessageDecoder(Pipeline(codecs="bytes"), lambda: True, max_frames=limit)
    out: list[Any] = []
    for n, piece in enumerate(pieces):
        out += decoder.fragment(piece, text=False if n == 0 else None, fin=n == len(pieces) - 1)
    if len(pieces) <= limit:
        assert out == [b"".join(pieces)]
        return
    # Refused at the first frame over the limit, fatally, and nothing after
    # it is kept or decoded (the connection is closing with 1009).
    [bad] = out
    assert isinstance(bad, BadInput)
    assert bad.fatal
    assert isinstance(bad.error, FrameTooLarge)
    assert close_code_for(bad.error) == CloseCode.MESSAGE_TOO_BIG
    assert f"max_message_frames={limit}" in str(bad.error)
    # A new message starts afresh.
    assert decoder.fragment(b"next", text=False, fin=True) == [b"next"]


def _clock(**options: Any) -> WebSocketClock:
    settings = {
        "now": 100.0,
        "handshake_timeout": 10.0,
        "idle_timeout": 300.0,
        "ping_interval": 20.0,
        "ping_timeout": 5.0,
        "make_ping": lambda: b"ping",
    }
    settings.update(options)
    return WebSocketClock(**settings)


def test_the_opening_handshake_is_bounded() -> None:
    clock = _clock()
    assert clock.due() == 110.0
    assert clock.on_timer(109.9) is Due.NOTHING
    assert clock.on_timer(110.0) is Due.HANDSHAKE_TIMEOUT


def test_keepalive_pings_then_fails_without_a_pong() -> None:
    clock = _clock()
    clock.opened(101.0)
    assert clock.due() == 121.0  # the next ping, before the idle timeout
    assert clock.on_timer(121.0) is Due.PING
    assert clock.ping == b"ping"
    assert clock.due() == 126.0  # the pong's deadline
    clock.pong(b"other")  # not ours
    assert clock.on_timer(126.0) is Due.PONG_TIMEOUT


def test_a_pong_rearms_the_next_ping() -> None:
    clock = _clock()
    clock.opened(100.0)
    assert clock.on_timer(120.0) is Due.PING
    clock.pong(b"ping")
    assert clock.ping is None
    assert clock.due() == 140.0


def test_idle_and_close_deadlines() -> None:
    clock = _clock(ping_interval=None)
    clock.opened(100.0)
    clock.last_activity = 150.0
    assert clock.due() == 450.0
    assert clock.on_timer(449.0) is Due.NOTHING
    assert clock.on_timer(450.0) is Due.IDLE
    clock.closing_at = 450.0
    assert clock.due() == 460.0
    assert clock.on_timer(460.0) is Due.CLOSE_TIMEOUT


def test_a_client_without_keepalive_has_no_deadline_once_open() -> None:
    clock = _clock(idle_timeout=None, ping_interval=None)
    clock.opened(100.0)
    assert clock.due() is None
