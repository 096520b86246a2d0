"""Metrics of WebSocket listeners and of several listeners in one app: real servers, scrapes.

A ``ws://`` or ``wss://`` listener counts like any other, labelled with its
configured URL (port 0 resolved, path kept) and its own transport; one app
on several URLs shows each listener on its own.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from helpers_metrics import endpoint, health, scraped, total
from helpers_runtime import (
    Ping,
    TlsFiles,
    echo_app,
    eventually,
    run,
    tls_files,
    typed_pipeline,
    within,
)
from helpers_websocket import counted_echoes
from websockets.asyncio.client import connect as ws_connect

from framework import App, Pipeline
from framework.runtime import connect

__all__ = ["endpoint", "tls_files"]  # the fixtures, imported for pytest

RAW = Pipeline(framing="length-prefix", codecs="bytes")


def test_websocket_counters_match_every_byte_and_message_exactly(endpoint: str) -> None:
    sizes = [0, 1, 125, 126, 3000]  # every length encoding of a frame header

    async def main() -> None:
        server = await echo_app(RAW).start("ws://127.0.0.1:0/echo")
        try:
            port = server.endpoint.port
            assert server.url == f"ws://127.0.0.1:{port}/echo"
            written = read = 0
            for client in range(3):
                payloads = [bytes([client]) * size for size in sizes]
                sent, got = await counted_echoes(server.url, payloads)
                written += sent
                read += got
            await eventually(lambda: not server.connections)  # the closes reached the server
            samples = await scraped(endpoint)
            # The configured URL, port 0 resolved and path kept; the transport is ws.
            listener = {"listener": f"ws://127.0.0.1:{port}/echo", "transport": "ws"}
            messages = 3 * len(sizes)
            assert total(samples, "wirekit_frames_received_total", **listener) == messages
            assert total(samples, "wirekit_frames_sent_total", **listener) == messages
            # Handshakes and close frames included: what crossed the socket.
            assert total(samples, "wirekit_bytes_received_total", **listener) == written
            assert total(samples, "wirekit_bytes_sent_total", **listener) == read
            assert total(samples, "wirekit_connections_total", **listener) == 3
            assert total(samples, "wirekit_connections_active", **listener) == 0
            # Plain handlers timed through the timed WebSocket class, one per message.
            count = "wirekit_handler_duration_seconds_count"
            assert total(samples, count, **listener) == messages
            assert total(samples, "wirekit_listener_up", **listener) == 1
        finally:
            await server.close()

    run(main())


def test_websocket_errors_are_counted_by_kind(endpoint: str) -> None:
    pipeline = typed_pipeline()
    app = App(pipeline, handler_errors="keep")

    @app.on(Ping)
    def ping(msg: Ping, conn: Any) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        server = await app.start("ws://127.0.0.1:0")
        try:
            async with connect(server.url, pipeline) as conn:
                for n in range(3):
                    await conn.send(Ping(n))
                await eventually(lambda: sum(c.stats.errors for c in server.connections) == 3)
            async with ws_connect(server.url) as ws:
                await ws.send(b"\xc1 not msgpack")  # closes with 1007
                await within(ws.wait_closed())
            await eventually(lambda: not server.connections)
            samples = await scraped(endpoint)
            labels = {"listener": server.url, "transport": "ws"}
            errors = "wirekit_handler_errors_total"
            assert total(samples, errors, message_type="ping", **labels) == 3
            assert total(samples, errors, **labels) == 3
            assert total(samples, "wirekit_decode_errors_total", **labels) == 1
            assert total(samples, "wirekit_frames_received_total", **labels) == 3
            assert total(samples, "wirekit_connections_total", **labels) == 2
        finally:
            await server.close()

    run(main())


def test_an_async_websocket_handler_is_timed_from_start_to_end(endpoint: str) -> None:
    app = App(RAW)

    @app.on(bytes)
    async def slow(value: bytes, conn: Any) -> bytes:
        await asyncio.sleep(0.06)
        return value

    async def main() -> None:
        server = await app.start("ws://127.0.0.1:0")
        try:
            async with ws_connect(server.url) as ws:
                for _ in range(2):
                    await ws.send(b"z")
                    assert await within(ws.recv()) == b"z"
            samples = await scraped(endpoint)
            name = "wirekit_handler_duration_seconds"
            assert total(samples, f"{name}_count", listener=server.url) == 2
            assert total(samples, f"{name}_bucket", listener=server.url, le="0.05") == 0
            assert total(samples, f"{name}_sum", listener=server.url) >= 0.12
        finally:
            await server.close()

    run(main())


def test_wss_counts_messages_and_failed_handshakes_under_its_own_transport(
    endpoint: str, tls_files: TlsFiles
) -> None:
    async def main() -> None:
        server = await echo_app(RAW).start(
            "wss://127.0.0.1:0/secure", tls=tls_files.server_options()
        )
        try:
            port = server.endpoint.port
            context = ssl.create_default_context(cafile=tls_files.ca)
            async with ws_connect(server.url, ssl=context) as ws:
                for payload in (b"a", b"bc"):
                    await ws.send(payload)
                    assert await within(ws.recv()) == payload
            for _ in range(2):  # plaintext clients on the TLS port
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /secure HTTP/1.1\r\n\r\n")
                await writer.drain()
                writer.close()
            await eventually(lambda: server.handshake_failures == 2)
            await eventually(lambda: not server.connections)
            samples = await scraped(endpoint)
            labels = {"listener": f"wss://127.0.0.1:{port}/secure", "transport": "wss"}
            assert total(samples, "wirekit_frames_received_total", **labels) == 2
            assert total(samples, "wirekit_frames_sent_total", **labels) == 2
            assert total(samples, "wirekit_connections_total", **labels) == 1
            assert total(samples, "wirekit_tls_handshake_failures_total", **labels) == 2
        finally:
            await server.close()

    run(main())


def test_several_listeners_of_one_app_each_count_under_their_own_labels(endpoint: str) -> None:
    async def main() -> None:
        app = echo_app(RAW)
        tcp, ws, udp = await app.start_all(
            ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/game", "udp://127.0.0.1:0"]
        )
        try:
            for server, count in ((tcp, 2), (ws, 3), (udp, 4)):
                async with connect(server.url, RAW) as conn:
                    for n in range(count):
                        await conn.send(b"m" * (n + 1))
                        assert await within(conn.receive()) == b"m" * (n + 1)
            await eventually(lambda: not tcp.connections and not ws.connections)
            samples = await scraped(endpoint)
            for server, transport, count in ((tcp, "tcp", 2), (ws, "ws", 3), (udp, "udp", 4)):
                labels = {"listener": server.url, "transport": transport}
                assert total(samples, "wirekit_frames_received_total", **labels) == count
                assert total(samples, "wirekit_frames_sent_total", **labels) == count
                assert total(samples, "wirekit_listener_up", **labels) == 1
                count_name = "wirekit_handler_duration_seconds_count"
                assert total(samples, count_name, **labels) == count
            # Three listeners, none sharing another's samples.
            listeners = {
                dict(keys)["listener"] for name, keys in samples if name == "wirekit_listener_up"
            }
            assert {tcp.url, ws.url, udp.url} <= listeners
            assert ws.url.endswith("/game")
        finally:
            for server in (tcp, ws, udp):
                await server.close()

    run(main())


def test_healthz_reports_a_websocket_listener_that_is_down(endpoint: str) -> None:
    async def main() -> None:
        tcp, ws = await echo_app(RAW).start_all(["tcp://127.0.0.1:0", "ws://127.0.0.1:0/live"])
        try:
            assert await health(endpoint) == (200, "ok\n")
            # Break the WebSocket listener only: its socket closes under the server.
            assert ws._listener is not None
            ws._listener.close()
            assert await health(endpoint) == (503, f"listener {ws.url} is not serving\n")
            samples = await scraped(endpoint)
            assert total(samples, "wirekit_listener_up", listener=ws.url, transport="ws") == 0
            assert total(samples, "wirekit_listener_up", listener=tcp.url, transport="tcp") == 1
            await ws.close()
            assert await health(endpoint) == (200, "ok\n")  # the tcp:// one still serves
        finally:
            await tcp.close()
            await ws.close()

    run(main())
