"""Hostile input on a WebSocket listener: each costs only its own connection, memory stays bounded.

The rows of the reliability matrix (docs/explanation/reliability.md) for
WebSocket: an oversize message, an unmasked client frame, bad UTF-8 in a
text frame, a handshake that never finishes, an HTTP request flood on the
page URL. In every test a well-behaved client stays connected throughout
and is still answered at the end.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from helpers_runtime import echo_app, eventually, run, within
from helpers_websocket import http_request, open_raw_websocket
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Opcode

from framework import LengthPrefix, Pipeline
from framework.core.limits import Limits
from framework.core.websocket import WebSocketOptions
from framework.runtime.server import Server

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
