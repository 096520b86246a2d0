"""Endpoint URLs: every scheme parses, and every malformed URL names its bad part."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.core.endpoints import SCHEMES, Endpoint, parse_url
from framework.core.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:9000", Endpoint("tcp", host="127.0.0.1", port=9000)),
        ("udp://127.0.0.1:53", Endpoint("udp", host="127.0.0.1", port=53)),
        ("tls://example.org:443", Endpoint("tls", host="example.org", port=443)),
        ("tcp://localhost:0", Endpoint("tcp", host="localhost", port=0)),
        ("tcp://0.0.0.0:65535", Endpoint("tcp", host="0.0.0.0", port=65535)),
        ("unix:///run/app.sock", Endpoint("unix", path="/run/app.sock")),
        ("unix:///tmp/with%20space.sock", Endpoint("unix", path="/tmp/with space.sock")),
        ("unix://@abstract", Endpoint("unix", path="@abstract")),
        ("memory://test-server", Endpoint("memory", path="test-server")),
        ("TCP://127.0.0.1:1", Endpoint("tcp", host="127.0.0.1", port=1)),
        ("ws://127.0.0.1:8000", Endpoint("ws", host="127.0.0.1", port=8000, path="/")),
        ("ws://127.0.0.1:8000/", Endpoint("ws", host="127.0.0.1", port=8000, path="/")),
        ("wss://example.org:443/chat", Endpoint("wss", host="example.org", port=443, path="/chat")),
        ("ws://[::1]:0/a/b", Endpoint("ws", host="::1", port=0, path="/a/b")),
    ],
)
def test_parse_every_scheme(url: str, expected: Endpoint) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("tcp://[::1]:9000", "::1"),
        ("udp://[::]:0", "::"),
        ("tls://[2001:db8::42]:443", "2001:db8::42"),
        ("tcp://[::ffff:127.0.0.1]:80", "::ffff:127.0.0.1"),
    ],
)
def test_parse_ipv6_literal_in_brackets(url: str, host: str) -> None:
    endpoint = parse_url(url)
    assert endpoint.host == host
    assert endpoint.url == url.lower()


def test_port_zero_asks_for_any_port() -> None:
    assert parse_url("tcp://127.0.0.1:0").port == 0
    assert parse_url("udp://[::1]:0").port == 0


@pytest.mark.parametrize(
    "url",
    [
        "tcp://127.0.0.1:9000",
        "udp://[::1]:5353",
        "tls://example.org:443",
        "unix:///tmp/x.sock",
        "memory://bus",
        "memory+udp://bus",
        "ws://127.0.0.1:8000",
        "wss://[::1]:443/game/live",
        "memory+ws://room",
        "memory+ws://room/chat",
    ],
)
def test_url_round_trips(url: str) -> None:
    assert parse_url(url).url == url
    assert str(parse_url(url)) == url
    assert parse_url(parse_url(url).url) == parse_url(url)


def test_stream_schemes() -> None:
    assert SCHEMES == {
        "tcp": True,
        "tls": True,
        "unix": True,
        "memory": True,
        "udp": False,
        "memory+udp": False,
        "ws": False,
        "wss": False,
        "memory+ws": False,
    }
    assert parse_url("tcp://h:1").is_stream
    assert parse_url("unix:///x").is_stream
    assert parse_url("memory://x").is_stream
    assert not parse_url("udp://h:1").is_stream
    assert not parse_url("memory+udp://x").is_stream


def test_in_memory_datagram_urls_name_a_socket() -> None:
    endpoint = parse_url("memory+udp://game-1")
    assert endpoint == Endpoint("memory+udp", path="game-1")
    assert endpoint.url == "memory+udp://game-1"
    assert parse_url("MEMORY+UDP://x").scheme == "memory+udp"
    with pytest.raises(ConfigError, match=r"name is empty \(memory\+udp://NAME\)"):
        parse_url("memory+udp://")


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("127.0.0.1:9000", "scheme"),
        ("tcp:/127.0.0.1:9000", "scheme"),
        ("", "scheme"),
        ("http://127.0.0.1:80", "scheme 'http'"),
        ("tcp://127.0.0.1", "port"),
        ("tcp://127.0.0.1:", "port"),
        ("tcp://127.0.0.1:http", "port 'http'"),
        ("tcp://127.0.0.1:+80", "port '+80'"),
        ("tcp://127.0.0.1: 80", "port ' 80'"),
        ("tcp://127.0.0.1:1_000", "port '1_000'"),
        ("tcp://127.0.0.1:-1", "port '-1'"),
        ("tcp://127.0.0.1:65536", "port 65536"),
        ("tcp://:9000", "host"),
        ("tcp://::1:9000", "host '::1'"),
        ("tcp://[::1:9000", "host"),
        ("tcp://[::1]", "port"),
        ("tcp://[::1]9000", "port"),
        ("tcp://[not-ipv6]:9000", "host [not-ipv6]"),
        ("tcp://[127.0.0.1]:9000", "host [127.0.0.1]"),
        ("tcp://user@host:9000", "host 'user@host'"),
        ("tcp://my host:9000", "host 'my host'"),
        ("tcp://127.0.0.1:9000/path", "address"),
        ("udp://127.0.0.1:53?x=1", "address"),
        ("tls://127.0.0.1:443#frag", "address"),
        ("unix://relative.sock", "path"),
        ("unix://", "path"),
        ("memory://", "name"),
    ],
)
def test_malformed_url_names_the_bad_part(url: str, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_url(url)
    assert f": {part} " in str(info.value)
    assert info.value.option == "url"
    assert info.value.value == url
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("url", [None, 9000, b"tcp://127.0.0.1:1"])
def test_non_string_url_is_a_config_error(url: object) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_url(url)  # type: ignore[arg-type]


def test_in_memory_websocket_urls_name_a_stream_and_a_path() -> None:
    assert parse_url("memory+ws://room/chat") == Endpoint("memory+ws", host="room", path="/chat")
    assert parse_url("memory+ws://room").path == "/"
    with pytest.raises(ConfigError, match="name is empty"):
        parse_url("memory+ws:///chat")


def test_websocket_urls_are_message_oriented() -> None:
    for url in ("ws://h:1", "wss://h:1/x", "memory+ws://x"):
        endpoint = parse_url(url)
        assert endpoint.is_websocket
        assert not endpoint.is_stream
    assert not parse_url("tcp://h:1").is_websocket


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("ws://127.0.0.1:80/chat?room=1", "path"),
        ("wss://127.0.0.1:443/a#frag", "path"),
        ("ws://127.0.0.1:80/with space", "path"),
        ("ws://127.0.0.1/chat", "port"),
        ("ws://:80/chat", "host"),
    ],
)
def test_bad_websocket_url_names_the_part(url: str, part: str) -> None:
    with pytest.raises(ConfigError, match=f"bad endpoint URL .*: {re.escape(part)}"):
        parse_url(url)


_SEGMENT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#/"),
    max_size=8,
)


@given(
    scheme=st.sampled_from(["ws", "wss"]),
    port=st.integers(0, 65535),
    segments=st.lists(_SEGMENT, max_size=4),
)
def test_websocket_url_path_round_trips(scheme: str, port: int, segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    endpoint = parse_url(f"{scheme}://127.0.0.1:{port}{path}")
    assert endpoint.path == path
    assert parse_url(endpoint.url) == endpoint
