"""Hostile input on a WebSocket listener: each costs only its own connection, memory stays bounded.

The rows of the reliability matrix (docs/explanation/reliability.md) for
WebSocket: an oversize message, an unmasked client frame, bad UTF-8 in a
text frame, a handshake that never finishes, an HTTP request flood on the
page URL, one message in a flood of fragments, a ping flood, repeated or
malformed handshake headers. In every test a well-behaved client stays connected throughout
and is still answered at the end.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import echo_app, eventually, run, within
from helpers_websocket import http_request, open_raw_websocket, upgrade_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Opcode

from framework import LengthPrefix, Pipeline
from framework.core.connection import Role
from framework.core.limits import Limits
from framework.core.websocket import WebSocketOptions
from framework.runtime.server import Server
from framework.runtime.websocket import WebSocketConnection

LIMIT = 64 * 1024


@asynccontextmanager
async def bystander_and_server(**start: Any) -> AsyncIterator[tuple[Server, ClientConnection]]:
    """A server (messages up to 64 KiB) and one good client connected to it throughout."""
    pipeline = Pipeline(framing=LengthPrefix(max_frame_size=LIMIT), codecs="utf-8")
    server = await echo_app(pipeline, **start.pop("app", {})).start("ws://127.0.0.1:0/", **start)
    good = await ws_connect(server.url)
    try:
        yield server, good
        await good.send("still served")
        assert await within(good.recv()) == "still served"
    finally:
        await good.close()
        await server.close()


def test_oversize_message_is_refused_with_1009_before_it_is_buffered() -> None:
    async def main() -> None:
        async with bystander_and_server() as (server, _good):
            raw = await open_raw_websocket(server.url)
            # A header announcing 1 GiB, and not one byte of it: the server
            # must answer now, from the header alone.
            mask = b"\x00\x00\x00\x00"
            raw.writer.write(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + mask)
            frame = await within(raw.read_until_close())
            assert frame.close_code == 1009
            assert await within(raw.closed_by_server())
            raw.close()
            await eventually(lambda: len(server.connections) == 1)

    run(main())


def test_unmasked_client_frame_is_a_protocol_error_1002() -> None:
    async def main() -> None:
        async with bystander_and_server() as (server, _good):
            raw = await open_raw_websocket(server.url)
            raw.send_frame(Opcode.TEXT, b"not masked", mask=False)
            frame = await within(raw.read_until_close())
            assert frame.close_code == 1002
            assert await within(raw.closed_by_server())
            raw.close()

    run(main())


def test_bad_utf8_in_a_text_frame_closes_with_1007() -> None:
    async def main() -> None:
        async with bystander_and_server() as (server, _good):
            raw = await open_raw_websocket(server.url)
            raw.send_frame(Opcode.TEXT, b"fine")
            assert (await within(raw.read_frame())).payload == b"fine"
            raw.send_frame(Opcode.TEXT, b"\xed\xa0\x80 lone surrogate")
            frame = await within(raw.read_until_close())
            assert frame.close_code == 1007
            assert await within(raw.closed_by_server())
            raw.close()

    run(main())


def test_a_handshake_that_never_finishes_is_cut_after_handshake_timeout() -> None:
    async def main() -> None:
        async with bystander_and_server(limits=Limits(handshake_timeout=0.3)) as (server, good):
            endpoint = server.endpoint
            stalled = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                stalled.append((reader, writer))
            # Nothing from them for the timeout, then the end of the stream.
            for reader, writer in stalled:
                assert await within(reader.read(-1)) == b""
                writer.close()
            await eventually(lambda: len(server.connections) == 1)
            # The established connection is past its handshake: it stays,
            # however long it is quiet.
            await asyncio.sleep(0.4)
            assert good.state.name != "CLOSED"

    run(main())


def test_a_request_over_max_request_size_is_431_and_bounded() -> None:
    async def main() -> None:
        options = WebSocketOptions(max_request_size=4096)
        async with bystander_and_server(websocket=options) as (server, _good):
            headers = "".join(f"X-Filler-{n}: {'a' * 100}\r\n" for n in range(100))
            request = f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
            status, _, body = await within(http_request(server.url, request))
            assert status == 431
            assert b"4096" in body

    run(main())


def test_an_http_request_flood_on_the_page_url_costs_only_those_connections(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        site = tmp_path / "site"
        site.mkdir()
        (site / "index.html").write_text("<h1>page</h1>")
        limits = Limits(max_connections=50)
        async with bystander_and_server(limits=limits, app={"pages": site}) as (server, _good):
            url = server.url

            async def one() -> int:
                try:
                    status, _, _ = await http_request(url, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                except (ConnectionError, IndexError, ValueError):
                    return 0  # refused at max_connections: closed without an answer
                return status

            statuses = await within(asyncio.gather(*(one() for _ in range(300))), 20)
            # The first 49 (with the bystander, max_connections) are all answered.
            assert statuses.count(200) >= limits.max_connections - 1
            assert set(statuses) <= {200, 0}
            # Every flood connection is gone; none held more than its request.
            await eventually(lambda: len(server.connections) == 1)
            assert server.refused == statuses.count(0)

    run(main(), timeout=30)


def test_a_message_in_a_flood_of_fragments_closes_with_1009_past_max_message_frames() -> None:
    async def main() -> None:
        async with bystander_and_server() as (server, _good):
            limit = WebSocketOptions().max_message_frames
            raw = await open_raw_websocket(server.url)
            # Empty continuations cost nothing against max_frame_size: only
            # the count of frames in one message bounds them.
            raw.send_frame(Opcode.BINARY, b"x", fin=False)
            for _ in range(limit + 100):
                raw.send_frame(Opcode.CONT, b"", fin=False)
            frame = await within(raw.read_until_close())
            assert frame.close_code == 1009
            assert await within(raw.closed_by_server())
            raw.close()
            await eventually(lambda: len(server.connections) == 1)

    run(main())


def test_a_message_of_up_to_max_message_frames_fragments_is_served() -> None:
    async def main() -> None:
        options = WebSocketOptions(max_message_frames=50)
        async with bystander_and_server(websocket=options) as (server, _good):
            raw = await open_raw_websocket(server.url)
            raw.send_frame(Opcode.TEXT, b"a", fin=False)
            for _ in range(48):
                raw.send_frame(Opcode.CONT, b"b", fin=False)
            raw.send_frame(Opcode.CONT, b"c", fin=True)
            assert (await within(raw.read_frame())).payload == b"a" + b"b" * 48 + b"c"
            raw.send_frame(Opcode.TEXT, b"a", fin=False)
            for _ in range(50):
                raw.send_frame(Opcode.CONT, b"b", fin=False)
            assert (await within(raw.read_until_close())).close_code == 1009
            raw.close()

    run(main())


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CONT])
def test_ping_pong_and_fragment_floods_count_against_max_frames_per_second(
    opcode: Opcode,
) -> None:
    async def main() -> None:
        limits = Limits(max_frames_per_second=1000.0, frame_burst=20)
        async with bystander_and_server(limits=limits) as (server, _good):
            [good] = server.connections
            raw = await open_raw_websocket(server.url)
            if opcode is Opcode.CONT:
                raw.send_frame(Opcode.BINARY, b"", fin=False)
            for _ in range(200):
                raw.send_frame(opcode, b"", fin=opcode is not Opcode.CONT)
            raw.send_frame(Opcode.CONT if opcode is Opcode.CONT else Opcode.TEXT, b"end")
            # Paced, not dropped: the message behind the flood is answered.
            frame = await within(raw.read_frame())
            while frame.opcode == Opcode.PONG:
                frame = await within(raw.read_frame())
            assert frame.payload == b"end"
            [flooder] = [conn for conn in server.connections if conn is not good]
            assert flooder.stats.rate_limited >= 1
            raw.close()

    run(main())


def test_a_repeated_upgrade_header_is_400_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        loop_errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        async with bystander_and_server() as (server, _good):
            endpoint = server.endpoint
            request = upgrade_request(endpoint.host, endpoint.port, extra="Upgrade: websocket\r\n")
            status, _, body = await within(http_request(server.url, request))
            assert status == 400
            assert b"Upgrade" in body
            await eventually(lambda: len(server.connections) == 1)
        assert loop_errors == []

    with caplog.at_level(logging.INFO):
        run(main())
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


_NAMES = st.sampled_from(
    [
        "Host",
        "Upgrade",
        "Connection",
        "Origin",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Content-Length",
        "Transfer-Encoding",
        "X-Other",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        ["websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "http://x", "x", "", "0"]
    ),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=20),
)
_REQUESTS = st.one_of(
    st.builds(
        lambda method, path, headers: (
            f"{method} {path} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers)
            + "\r\n"
        ).encode("latin-1"),
        st.sampled_from(["GET", "HEAD", "POST", "G\u00e9T"]),
        st.one_of(
            st.sampled_from(["/", "/index.html", "/x?y", "*", "//", "/../etc/passwd"]),
            st.text(st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=30),
        ),
        st.lists(st.tuples(_NAMES, _VALUES), max_size=12),
    ),
    st.binary(max_size=200),
)


class _Transport(asyncio.Transport):
    """Just enough of a transport for a server connection: keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_REQUESTS, split=st.integers(min_value=1, max_value=64))
def test_any_request_gets_an_http_answer_or_a_clean_close(request: bytes, split: int) -> None:
    async def main() -> None:
        loop_errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        pipeline = Pipeline(framing=LengthPrefix(max_frame_size=LIMIT), codecs="utf-8")
        conn = WebSocketConnection(
            pipeline, router=None, limits=Limits(), role=Role.SERVER, options=WebSocketOptions()
        )
        transport = _Transport()
        conn.connection_made(transport)
        for start in range(0, len(request), split):  # in pieces, as TCP may deliver it
            if transport.closed:
                break
            conn.data_received(request[start : start + split])
        if not transport.closed:
            conn.eof_received()
        conn.connection_lost(None)
        assert loop_errors == []
        written = bytes(transport.written)
        if written:
            assert written.startswith(b"HTTP/1.1 "), written[:100]
            status = int(written[9:12])
            assert status == 101 or transport.closed
        else:
            assert transport.closed

    run(main())
