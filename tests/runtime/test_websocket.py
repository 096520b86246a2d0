"""ws:// and wss:// over loopback, with the websockets library's client as the independent peer.

Messages (text or binary by codec), close codes both ways, Origin and
subprotocol checks, keepalive, TLS, hooks, limits and shutdown.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from helpers_runtime import TlsFiles, echo_app, eventually, run, tls_files, within
from helpers_websocket import open_raw_websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError, InvalidMessage, InvalidStatus
from websockets.frames import Opcode

from framework import ConnectionClosed, LengthPrefix, Pipeline, TransportError
from framework.core.websocket import WebSocketOptions
from framework.runtime.app import App
from framework.runtime.client import connect

__all__ = ["tls_files"]  # the fixture, imported for pytest

URL = "ws://127.0.0.1:0/"


def text_pipeline() -> Pipeline:
    return Pipeline(framing="newline", codecs="utf-8")


def msgpack_pipeline() -> Pipeline:
    return Pipeline(framing="length-prefix", codecs="msgpack")


def test_text_codecs_send_text_frames_and_accept_binary_ones() -> None:
    async def main() -> None:
        app = App(text_pipeline())

        @app.on(str)
        def shout(line: str, conn: Any) -> str:
            return line.upper()

        server = await app.start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("hello")
            assert await within(ws.recv()) == "HELLO"  # a str: a text frame
            await ws.send(b"bytes in")
            assert await within(ws.recv()) == "BYTES IN"
        await server.close()

    run(main())


def test_binary_codecs_send_binary_frames() -> None:
    async def main() -> None:
        server = await echo_app(msgpack_pipeline()).start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send(b"\x93\x01\x02\x03")  # msgpack [1, 2, 3]
            assert await within(ws.recv()) == b"\x93\x01\x02\x03"  # bytes: a binary frame
        await server.close()

    run(main())


def test_one_message_is_one_frame_without_stream_framing() -> None:
    # A newline inside a message is part of it: the stream framing is not applied.
    async def main() -> None:
        server = await echo_app(text_pipeline()).start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("two\nlines")
            assert await within(ws.recv()) == "two\nlines"
        await server.close()

    run(main())


def test_fragmented_messages_are_assembled() -> None:
    async def main() -> None:
        server = await echo_app(text_pipeline()).start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send(iter(["frag", "mented ", "message"]))
            assert await within(ws.recv()) == "fragmented message"
        await server.close()

    run(main())


def test_wirekit_client_round_trips_with_a_wirekit_server() -> None:
    async def main() -> None:
        pipeline = msgpack_pipeline()
        server = await echo_app(pipeline).start("ws://127.0.0.1:0/game")
        assert server.url.endswith("/game")
        async with connect(server.url, pipeline) as conn:
            values = [{"x": 1}, [1, 2], "text", b"raw"]
            for value in values:
                await conn.send(value)
            assert [await within(conn.receive()) for _ in values] == values
        await server.close()

    run(main())


def test_pipelined_messages_are_answered_in_order() -> None:
    async def main() -> None:
        server = await echo_app(text_pipeline()).start(URL)
        async with ws_connect(server.url) as ws:
            for n in range(500):
                await ws.send(f"m{n}")
            assert [await within(ws.recv()) for _ in range(500)] == [f"m{n}" for n in range(500)]
        await server.close()

    run(main())


# -- close codes -------------------------------------------------------------------------


async def _close_code(app: App, send: Any, **start: Any) -> tuple[int, str]:
    server = await app.start(URL, **start)
    try:
        async with ws_connect(server.url) as ws:
            await ws.send(send)
            with pytest.raises(ConnectionClosedError) as info:
                await within(ws.recv())
            assert info.value.rcvd is not None
            return info.value.rcvd.code, info.value.rcvd.reason
    finally:
        await server.close()


def test_a_message_that_does_not_decode_closes_with_1007() -> None:
    code, reason = run(_close_code(echo_app(msgpack_pipeline()), b"\xc1"))
    assert code == 1007
    assert reason == "DecodeError"


def test_a_text_message_that_is_not_utf8_closes_with_1007() -> None:
    async def main() -> None:
        server = await echo_app(msgpack_pipeline()).start(URL)
        raw = await open_raw_websocket(server.url)
        raw.send_frame(Opcode.TEXT, b"caf\xc3")
        frame = await within(raw.read_until_close())
        assert frame.close_code == 1007
        raw.close()
        await server.close()

    run(main())


def test_an_oversize_message_closes_with_1009() -> None:
    pipeline = Pipeline(framing=LengthPrefix(max_frame_size=1000), codecs="bytes")
    code, _ = run(_close_code(echo_app(pipeline), b"x" * 1001))
    assert code == 1009


def test_a_handler_error_that_closes_sends_1011() -> None:
    app = App(text_pipeline())

    @app.on(str)
    def broken(line: str, conn: Any) -> None:
        raise RuntimeError("bug")

    code, _ = run(_close_code(app, "hi"))
    assert code == 1011


def test_a_handler_error_with_keep_policy_keeps_the_connection() -> None:
    async def main() -> None:
        app = App(text_pipeline(), handler_errors="keep")

        @app.on(str)
        def sometimes(line: str, conn: Any) -> str:
            if line == "boom":
                raise RuntimeError("bug")
            return line

        server = await app.start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("boom")
            await ws.send("still here")
            assert await within(ws.recv()) == "still here"
        await server.close()

    run(main())


def test_application_close_sends_1000_and_shutdown_sends_1001() -> None:
    async def main() -> None:
        app = App(text_pipeline())

        @app.on(str)
        def bye(line: str, conn: Any) -> str | None:
            if line == "bye":
                conn.close()
                return None
            return line

        server = await app.start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("bye")
            await within(ws.wait_closed())
            assert ws.close_code == 1000
        ws = await ws_connect(server.url)
        await ws.send("in flight")
        assert await within(ws.recv()) == "in flight"
        await within(server.close())
        await within(ws.wait_closed())
        assert ws.close_code == 1001

    run(main())


def test_peer_close_code_and_reason_reach_the_wirekit_client() -> None:
    async def main() -> None:
        app = App(text_pipeline())

        @app.on(str)
        def broken(line: str, conn: Any) -> None:
            raise RuntimeError("bug")

        server = await app.start(URL)
        async with connect(server.url, app.pipeline) as conn:
            await conn.send("x")
            with pytest.raises(ConnectionClosed) as info:
                await within(conn.receive())
            assert info.value.code == 1011
            assert info.value.reason == "handler error"
            with pytest.raises(ConnectionClosed):
                await conn.send("more")
        await server.close()

    run(main())


def test_client_close_reaches_the_server_as_a_disconnect() -> None:
    async def main() -> None:
        app = echo_app(text_pipeline())
        events: list[str] = []
        app.on_connect(lambda conn: events.append("connect"))
        app.on_disconnect(lambda conn: events.append("disconnect"))
        server = await app.start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("x")
            await within(ws.recv())
        await eventually(lambda: events == ["connect", "disconnect"])
        assert not server.connections
        await server.close()

    run(main())


# -- the handshake: Origin, subprotocol, path ------------------------------------------------


def test_origin_default_allows_programs_and_same_origin_pages_only() -> None:
    async def main() -> None:
        server = await echo_app(text_pipeline()).start(URL)
        port = server.endpoint.port
        async with ws_connect(server.url) as ws:  # no Origin: a program
            await ws.send("a")
            assert await within(ws.recv()) == "a"
        async with ws_connect(server.url, origin=f"http://127.0.0.1:{port}") as ws:
            await ws.send("b")
            assert await within(ws.recv()) == "b"
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(server.url, origin="https://evil.example")
        assert info.value.response.status_code == 403
        await server.close()

    run(main())


def test_configured_origins_are_allowed_too() -> None:
    async def main() -> None:
        options = WebSocketOptions(origins=["https://game.example/"])
        server = await echo_app(text_pipeline()).start(URL, websocket=options)
        async with ws_connect(server.url, origin="https://game.example") as ws:
            await ws.send("ok")
            assert await within(ws.recv()) == "ok"
        with pytest.raises(InvalidStatus):
            await ws_connect(server.url, origin="https://other.example")
        await server.close()

    run(main())


def test_subprotocol_is_required_when_configured() -> None:
    async def main() -> None:
        options = WebSocketOptions(subprotocol="wirekit.chat")
        app = echo_app(text_pipeline())
        seen: list[Any] = []
        app.on_connect(lambda conn: seen.append(conn.subprotocol))
        server = await app.start(URL, websocket=options)
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(server.url)
        assert info.value.response.status_code == 400
        async with ws_connect(server.url, subprotocols=["other", "wirekit.chat"]) as ws:
            assert ws.subprotocol == "wirekit.chat"
            await ws.send("x")
            assert await within(ws.recv()) == "x"
        async with connect(server.url, app.pipeline, websocket=options) as conn:
            await conn.send("y")
            assert await within(conn.receive()) == "y"
        assert seen == ["wirekit.chat", "wirekit.chat"]
        await server.close()

    run(main())


def test_an_upgrade_on_another_path_is_404_and_a_clear_client_error() -> None:
    async def main() -> None:
        pipeline = text_pipeline()
        server = await echo_app(pipeline).start("ws://127.0.0.1:0/chat")
        other = server.url.replace("/chat", "/nope")
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(other)
        assert info.value.response.status_code == 404
        with pytest.raises(TransportError, match="WebSocket handshake failed"):
            await connect(other, pipeline)
        await server.close()

    run(main())


def test_connecting_to_a_plain_tcp_server_fails_clearly() -> None:
    async def main() -> None:
        server = await echo_app(text_pipeline()).start("tcp://127.0.0.1:0")
        url = server.url.replace("tcp://", "ws://")
        with pytest.raises(TransportError, match="WebSocket handshake"):
            await connect(url, text_pipeline(), timeout=2)
        await server.close()

    run(main())


def test_compression_is_off_by_default_and_on_by_option() -> None:
    async def main() -> None:
        server = await echo_app(text_pipeline()).start(URL)
        async with ws_connect(server.url) as ws:  # the client offers deflate
            assert "permessage-deflate" not in ws.response.headers.get(
                "Sec-WebSocket-Extensions", ""
            )
        await server.close()
        options = WebSocketOptions(compression=True)
        server = await echo_app(text_pipeline()).start(URL, websocket=options)
        async with ws_connect(server.url) as ws:
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            await ws.send("z" * 10_000)
            assert await within(ws.recv()) == "z" * 10_000
        async with connect(server.url, text_pipeline(), websocket=options) as conn:
            await conn.send("y" * 5000)
            assert await within(conn.receive()) == "y" * 5000
        await server.close()

    run(main())


# -- keepalive, limits, TLS --------------------------------------------------------------------


def test_a_peer_that_never_answers_pings_is_closed_with_1011() -> None:
    async def main() -> None:
        options = WebSocketOptions(ping_interval=0.05, ping_timeout=0.1)
        server = await echo_app(text_pipeline()).start(URL, websocket=options)
        raw = await open_raw_websocket(server.url)
        ping = await within(raw.read_frame())
        assert ping.opcode == Opcode.PING
        frame = await within(raw.read_until_close())  # we never answer
        assert frame.close_code == 1011
        raw.close()
        # A peer that answers (the websockets client does) stays.
        async with ws_connect(server.url) as ws:
            await asyncio.sleep(0.4)
            await ws.send("alive")
            assert await within(ws.recv()) == "alive"
        await server.close()

    run(main())


def test_a_handshake_with_no_request_is_cut_after_handshake_timeout() -> None:
    async def main() -> None:
        from framework.core.limits import Limits

        server = await echo_app(text_pipeline()).start(URL, limits=Limits(handshake_timeout=0.2))
        endpoint = server.endpoint
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end
        assert await within(reader.read(-1)) == b""
        writer.close()
        await eventually(lambda: not server.connections)
        await server.close()

    run(main())


def test_max_connections_applies_to_websockets() -> None:
    async def main() -> None:
        from framework.core.limits import Limits

        server = await echo_app(text_pipeline()).start(URL, limits=Limits(max_connections=1))
        async with ws_connect(server.url) as first:
            # Refused as a TCP connection is: closed before any HTTP answer.
            with pytest.raises(InvalidMessage):
                await ws_connect(server.url, open_timeout=2)
            await first.send("still")
            assert await within(first.recv()) == "still"
        assert server.refused >= 1
        await server.close()

    run(main())


def test_a_peer_that_does_not_read_makes_the_server_stop_reading_it() -> None:
    async def main() -> None:
        app = App(msgpack_pipeline())
        blob = b"\xc5\xff\xff" + b"b" * 65535  # a 64 KiB msgpack bin per reply

        @app.on(object)
        def big(value: Any, conn: Any) -> bytes:
            return blob

        server = await app.start(URL)
        raw = await open_raw_websocket(server.url)
        conn = next(iter(server.connections))
        # Requests in small batches, each its own read, until the replies
        # nobody reads are over the write high-water mark.
        sent = 0
        while conn.can_send and sent < 400:
            for _ in range(4):
                raw.send_frame(Opcode.BINARY, b"\x01")
            sent += 4
            await raw.writer.drain()
            await asyncio.sleep(0.01)
        assert not conn.can_send
        # Reading is paused: more requests are not taken in (they wait in the
        # kernel's buffers, not in the server), so no more replies pile up.
        taken = conn.stats.frames_in
        for _ in range(100):
            raw.send_frame(Opcode.BINARY, b"\x01")
        await asyncio.sleep(0.3)
        assert conn.stats.frames_in == taken
        raw.writer.transport.abort()
        await server.close()

    run(main())


def test_wss_with_the_same_tls_options_as_tls(tls_files: TlsFiles) -> None:
    async def main() -> None:
        pipeline = text_pipeline()
        server = await echo_app(pipeline).start(
            "wss://127.0.0.1:0/secure", tls=tls_files.server_options()
        )
        assert server.url.startswith("wss://127.0.0.1:")
        context = ssl.create_default_context(cafile=tls_files.ca)
        async with ws_connect(server.url, ssl=context) as ws:
            await ws.send("over tls")
            assert await within(ws.recv()) == "over tls"
        async with connect(server.url, pipeline, tls=tls_files.client_options()) as conn:
            await conn.send("wirekit over tls")
            assert await within(conn.receive()) == "wirekit over tls"
        server.reload_tls()  # what SIGHUP does: new connections get the files read again
        async with ws_connect(server.url, ssl=context) as ws:
            await ws.send("after a reload")
            assert await within(ws.recv()) == "after a reload"
        # A plain ws:// client on the wss:// port is refused, not answered in clear.
        with pytest.raises((InvalidMessage, OSError)):
            await ws_connect(server.url.replace("wss://", "ws://"), open_timeout=2)
        await server.close()

    run(main())


def test_the_blocking_client_speaks_websocket_too() -> None:
    from framework.runtime.blocking import BlockingClient, ServerThread

    with (
        ServerThread(echo_app(text_pipeline()), "ws://127.0.0.1:0/b") as served,
        BlockingClient(served.url, text_pipeline(), websocket=WebSocketOptions()) as client,
    ):
        assert client.request("blocking") == "blocking"


def test_max_frames_per_second_paces_a_flooding_client_without_losing_messages() -> None:
    async def main() -> None:
        from framework.core.limits import Limits

        rate, burst, batch, total = 2000.0, 50, 100, 600
        app = echo_app(text_pipeline())
        served: list[Any] = []
        app.on_connect(served.append)
        loop = asyncio.get_running_loop()
        limits = Limits(max_frames_per_second=rate, frame_burst=burst)
        server = await app.start(URL, limits=limits)
        async with connect(server.url, text_pipeline()) as conn:
            start = loop.time()
            replies: list[str] = []
            for first in range(0, total, batch):
                for n in range(first, first + batch):
                    conn.send_nowait(str(n))
                replies += [await within(conn.receive()) for _ in range(batch)]
            elapsed = loop.time() - start
        assert replies == [str(n) for n in range(total)]  # nothing lost or reordered
        assert served[0].stats.rate_limited >= 1
        # A lower bound only (no flake on a slow machine): a batch is read
        # once the bucket is out of debt, so all but the burst and the last
        # batch waited for tokens at `rate` per second.
        assert elapsed >= (total - burst - batch) / rate
        await server.close()

    run(main())


def test_shutdown_lets_a_running_handler_reply_before_1001() -> None:
    async def main() -> None:
        app = App(text_pipeline())
        started = asyncio.Event()

        @app.on(str)
        async def slow(line: str, conn: Any) -> str:
            started.set()
            await asyncio.sleep(0.2)
            return f"done: {line}"

        server = await app.start(URL)
        async with ws_connect(server.url) as ws:
            await ws.send("work")
            await within(started.wait())
            closing = asyncio.create_task(server.close())
            assert await within(ws.recv()) == "done: work"
            await within(ws.wait_closed())
            assert ws.close_code == 1001
            await within(closing)

    run(main())


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_STACKS = {
    "bytes": (lambda: Pipeline(codecs="bytes"), st.binary(max_size=300)),
    "utf-8": (lambda: Pipeline(codecs="utf-8"), st.text(max_size=300)),
    "json": (lambda: Pipeline(codecs="json"), _VALUES),
    "msgpack": (lambda: Pipeline(codecs="msgpack"), _VALUES | st.binary(max_size=50)),
}


@settings(max_examples=25)
@given(data=st.data(), codec=st.sampled_from(sorted(_STACKS)), send_text=st.booleans())
def test_any_value_round_trips_over_loopback_as_the_codecs_frame_kind(
    data: st.DataObject, codec: str, send_text: bool
) -> None:
    make, values = _STACKS[codec]
    pipeline = make()
    # None is the one value an echo handler cannot return: it means "no reply".
    value = data.draw(values.filter(lambda v: v is not None))
    payload = pipeline.encode_frame(value)
    if send_text:
        try:
            outgoing: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            outgoing = payload  # not text: it can only go as a binary frame
    else:
        outgoing = payload

    async def main() -> str | bytes:
        server = await echo_app(pipeline).start(URL)
        try:
            async with ws_connect(server.url, max_size=None) as ws:
                await ws.send(outgoing)
                return await within(ws.recv())
        finally:
            await server.close()

    echoed = run(main())
    # Text frames back exactly when the codec writes text, whatever came in.
    assert isinstance(echoed, str) is pipeline.writes_text
    wire = echoed.encode("utf-8") if isinstance(echoed, str) else echoed
    assert pipeline.decode_frame(wire) == value


def test_a_client_whose_server_stops_answering_gives_up_within_its_deadlines() -> None:
    from websockets.utils import accept_key

    from framework.core.limits import Limits

    async def main() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Accepts the handshake, then never answers a ping nor a close.
            request = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(
                line.split(":", 1)[1].strip()
                for line in request.split("\r\n")
                if line.lower().startswith("sec-websocket-key")
            )
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key).encode()
                + b"\r\n\r\n"
            )
            while await reader.read(4096):
                pass
            writer.close()

        mute_server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = mute_server.sockets[0].getsockname()[1]
        options = WebSocketOptions(ping_interval=0.05, ping_timeout=0.1)
        conn = await connect(
            f"ws://127.0.0.1:{port}",
            text_pipeline(),
            websocket=options,
            limits=Limits(handshake_timeout=0.3),
        )
        with pytest.raises(ConnectionClosed):
            await within(conn.receive())
        assert conn.closed
        mute_server.close()
        await mute_server.wait_closed()

    run(main())
