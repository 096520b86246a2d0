"""What a UDP server sends for the datagrams it is handed, driven without sockets.

A ``DatagramServer`` is given datagrams through ``datagram_received`` and
sends into a recording transport. Whatever the handlers do (reply, stay
silent, raise, send first, close the peer), what goes out must be the
pipeline's own encoding of each reply, to the right address, in the order
the handlers produced them; a close sends what came before it in the
datagram and nothing after, and the next datagram from that address is a
new peer. The same expectation holds for a raw stack (each datagram is its
value), a decoded one (msgpack) and a packed one (several values per
datagram), and for a handler that takes its time (``async def``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from helpers_runtime import run
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import App, Datagram, Pipeline
from framework.core.limits import Limits
from framework.runtime.connection import Connection
from framework.runtime.datagram import DatagramServer

ADDRESSES = [("127.0.0.1", 40001), ("127.0.0.1", 40002), ("::1", 40003, 0, 0)]

PIPELINES = {
    "raw": Pipeline(framing="length-prefix", codecs="bytes"),
    "msgpack": Pipeline(framing="length-prefix", codecs="msgpack"),
    "packed": Pipeline(framing="length-prefix", codecs="bytes", datagram=Datagram(packed=True)),
}


class RecordingTransport(asyncio.DatagramTransport):
    """Keeps every datagram sent, with its address."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        assert not self._closing, "sent after close"
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def acting_app(pipeline: Pipeline, *, slow: bool) -> tuple[App, list[Any]]:
    """Handlers whose action is the value's first byte; the peers the connect hook saw."""
    app = App(pipeline)
    connected: list[Any] = []

    @app.on_connect
    def joined(conn: Connection) -> None:
        connected.append(conn.peer)

    def act(value: bytes, conn: Connection) -> bytes | bytearray | None:
        action = value[:1]
        if action == b"n":
            return None
        if action == b"r":
            raise RuntimeError("handler failed on purpose")
        if action == b"s":
            conn.send_nowait(b"S" + value)
        elif action == b"c":
            conn.close()
        elif action == b"b":
            return bytearray(value)
        return value

    if slow:

        @app.on(bytes)
        async def slow_act(value: bytes, conn: Connection) -> bytes | bytearray | None:
            await asyncio.sleep(0)
            return act(value, conn)

    else:
        app.on(bytes)(act)
    return app, connected


def expected(
    datagrams: list[tuple[int, list[bytes]]], pipeline: Pipeline
) -> tuple[list[tuple[bytes, Any]], list[Any]]:
    """The datagrams a server must send, and the peers it must create, in order."""
    sent: list[tuple[bytes, Any]] = []
    peers: list[Any] = []
    known: set[Any] = set()
    for index, values in datagrams:
        addr = ADDRESSES[index]
        if addr not in known:
            known.add(addr)
            peers.append(addr)
        for value in values:
            action = value[:1]
            if action in (b"n", b"r"):
                continue
            if action == b"c":
                known.discard(addr)
                break  # the peer is gone: the rest of its datagram is not handled
            if action == b"s":
                sent.append((pipeline.encode_datagram(b"S" + value), addr))
            sent.append((pipeline.encode_datagram(value), addr))
    return sent, peers


values = st.binary(min_size=0, max_size=12).flatmap(
    lambda tail: st.sampled_from([b"e", b"n", b"r", b"s", b"c", b"b"]).map(lambda a: a + tail)
)


async def serve(
    pipeline: Pipeline, datagrams: list[tuple[int, list[bytes]]], *, slow: bool
) -> tuple[RecordingTransport, list[Any], DatagramServer]:
    app, connected = acting_app(pipeline, slow=slow)
    server = DatagramServer(pipeline, app, Limits(amplification_factor=None))
    transport = RecordingTransport()
    server.connection_made(transport)
    for index, batch in datagrams:
        server.datagram_received(pipeline.encode_datagram(*batch), ADDRESSES[index])
        if slow:
            # Let that datagram's handlers finish first: their replies then
            # come in the order the datagrams came.
            for _ in range(5):
                await asyncio.sleep(0)
    server.connection_lost(None)
    return transport, connected, server


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(PIPELINES)),
    slow=st.booleans(),
    data=st.data(),
)
def test_replies_are_what_the_handlers_produced_in_order(kind: str, slow: bool, data: Any) -> None:
    pipeline = PIPELINES[kind]
    per_datagram = st.lists(values, min_size=1, max_size=4 if kind == "packed" else 1)
    datagrams = data.draw(
        st.lists(st.tuples(st.integers(0, len(ADDRESSES) - 1), per_datagram), max_size=25)
    )
    transport, connected, server = run(serve(pipeline, datagrams, slow=slow))
    sent, peers = expected(datagrams, pipeline)
    assert transport.sent == sent
    assert connected == peers
    assert server.stats.received == len(datagrams)
    assert server.stats.sent == len(sent)


def test_a_close_sends_the_replies_before_it_in_the_same_datagram() -> None:
    pipeline = PIPELINES["packed"]
    transport, connected, _ = run(
        serve(pipeline, [(0, [b"e1", b"c2", b"e3"]), (0, [b"e4"])], slow=False)
    )
    addr = ADDRESSES[0]
    assert transport.sent == [(pipeline.encode_datagram(v), addr) for v in (b"e1", b"e4")]
    assert connected == [addr, addr]


def test_a_peer_with_a_handler_running_is_still_served_in_order() -> None:
    # A datagram that arrives while the peer's async handler is suspended
    # takes the general path (work in flight); its reply still comes out.
    pipeline = PIPELINES["raw"]
    app = App(pipeline)
    release = asyncio.Event()

    @app.on(bytes)
    async def wait_then_echo(value: bytes, conn: Connection) -> bytes:
        if value == b"wait":
            await release.wait()
        return value

    async def main() -> list[tuple[bytes, Any]]:
        server = DatagramServer(pipeline, app, Limits())
        transport = RecordingTransport()
        server.connection_made(transport)
        addr = ADDRESSES[0]
        server.datagram_received(b"wait", addr)
        await asyncio.sleep(0)
        server.datagram_received(b"next", addr)
        for _ in range(5):
            await asyncio.sleep(0)
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        server.connection_lost(None)
        return transport.sent

    assert run(main()) == [(b"next", ADDRESSES[0]), (b"wait", ADDRESSES[0])]
