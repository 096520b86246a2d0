"""One app on several endpoints at once: one state, every listener, one shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
from helpers_runtime import TlsFiles, echo_app, run, tls_files, within
from websockets.asyncio.client import connect as ws_connect

from framework import Pipeline, TransportError
from framework.runtime.app import App
from framework.runtime.client import connect
from framework.runtime.server import Server
from protocols.chat import create_app

__all__ = ["tls_files"]


async def _line(reader: asyncio.StreamReader) -> str:
    return (await within(reader.readline())).decode().rstrip("\r\n")


async def _until(reader: asyncio.StreamReader, part: str) -> str:
    """The next line that contains ``part`` (announcements before it are skipped)."""
    while True:
        line = await _line(reader)
        if part in line:
            return line


def test_a_tcp_client_and_a_websocket_client_share_one_chat_room(tls_files: TlsFiles) -> None:
    async def main() -> None:
        app = create_app()
        servers: list[Server] = []
        serving = asyncio.create_task(
            app.serve(
                ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/", "tls://127.0.0.1:0"],
                tls=tls_files.server_options(),
                ready=servers.append,
            )
        )
        while len(servers) < 3:
            await asyncio.sleep(0.01)
        tcp, ws_server, tls = servers
        assert [s.endpoint.scheme for s in servers] == ["tcp", "ws", "tls"]

        reader, writer = await asyncio.open_connection(tcp.endpoint.host, tcp.endpoint.port)
        assert (await _line(reader)).startswith("* welcome")
        writer.write(b"/nick nc\n")
        assert await _line(reader) == "* you are now nc"

        async with ws_connect(ws_server.url) as ws:
            assert (await within(ws.recv())).startswith("* welcome")
            await ws.send("/nick browser")
            assert await within(ws.recv()) == "* you are now browser"
            # The join and the rename, announced in the room.
            assert await _until(reader, "known as") == "* guest-2 is now known as browser"
            writer.write(b"hello from tcp\n")
            assert await within(ws.recv()) == "<nc> hello from tcp"
            await ws.send("hello from a browser")
            assert await _until(reader, "<") == "<browser> hello from a browser"
            async with connect(
                tls.url, Pipeline(framing="newline", codecs="utf-8"), tls=tls_files.client_options()
            ) as secure:
                assert (await within(secure.receive())).startswith("* welcome")
                await secure.send("/who")
                who = await within(secure.receive())
                assert "nc" in who
                assert "browser" in who
        writer.close()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        for server in servers:
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(server.endpoint.host, server.endpoint.port)

    run(main())


def test_start_all_is_all_or_nothing() -> None:
    async def main() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = echo_app(Pipeline(framing="newline", codecs="utf-8"))
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        with pytest.raises(TransportError, match=str(port)):
            await app.start_all([f"ws://127.0.0.1:{free_port}", f"tcp://127.0.0.1:{port}"])
        taken.close()
        # The first listener was closed again: its port is free.
        server = await app.start(f"tcp://127.0.0.1:{free_port}")
        await server.close()

    run(main())


def test_one_url_still_serves_as_before() -> None:
    async def main() -> None:
        app = echo_app(Pipeline(framing="newline", codecs="utf-8"))
        seen: list[Any] = []
        serving = asyncio.create_task(app.serve("tcp://127.0.0.1:0", ready=seen.append))
        while not seen:
            await asyncio.sleep(0.01)
        assert isinstance(seen[0], Server)
        async with connect(seen[0].url, app.pipeline) as conn:
            await conn.send("x")
            assert await within(conn.receive()) == "x"
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    run(main())


def test_serving_an_empty_list_is_a_config_error() -> None:
    app = App()
    with pytest.raises(ValueError, match="no endpoint URL"):
        run(app.serve([]))
