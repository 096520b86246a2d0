"""How the replies of one read reach the transport, driven from bytes: no sockets.

A server-side ``StreamConnection`` is handed reads through ``data_received``
and writes into a recording transport. What it writes must be what the
pipeline's own ``encode`` makes of the replies, in the order the handlers
produced them, whatever mix of replies, sends, fallbacks and encoding errors
a read holds; and one read's replies go out in one write. Raw-bytes stacks
under a plain length prefix frame each reply as it is produced (see
``Encoder.header``); the other stacks encode the read's batch at its end:
both are checked against the same expectation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from helpers_runtime import run
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import App, Delimited, LengthPrefix, Pipeline
from framework.core import _fast
from framework.core.connection import Role
from framework.core.errors import WirekitError
from framework.core.limits import Limits
from framework.runtime.stream import StreamConnection

MAX = 64  # max_frame_size of the pipelines here: a longer reply cannot be framed


class RecordingTransport(asyncio.Transport):
    """Keeps every write; a socket transport, or an in-process one (no socket)."""

    def __init__(self, *, socket: bool = True) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self._socket = object() if socket else None
        self._closing = False

    def write(self, data: Any) -> None:
        assert not self._closing, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._socket
        if name == "peername":
            return ("127.0.0.1", 40000)
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def serve(app: App, transport: RecordingTransport, **limits: Any) -> StreamConnection:
    """A connection as a server makes it, attached to ``transport``."""
    conn = StreamConnection(
        app.pipeline,
        router=app,
        limits=Limits(**limits),
        on_made=lambda conn: True,
        on_lost=lambda conn: None,
        role=Role.SERVER,
    )
    conn.connection_made(transport)
    return conn


PIPELINES = {
    # Framed as produced: raw bytes under the usual header.
    "plain header": Pipeline(framing=LengthPrefix(max_frame_size=MAX), codecs="bytes"),
    # The same wire meaning through the batch encoder: the length counts the header.
    "adjusted header": Pipeline(
        framing=LengthPrefix(max_frame_size=MAX, length_adjustment=-4), codecs="bytes"
    ),
}

# What a handler does with frame n: return a reply, send one itself, or nothing.
replies = st.one_of(
    st.binary(max_size=MAX + 8),  # some too long to frame
    st.binary(max_size=16).map(bytearray),
    st.binary(max_size=16).map(memoryview),
    st.just("not bytes"),  # the bytes codec refuses it
    st.none(),
)
actions = st.lists(st.tuples(st.sampled_from(["return", "send"]), replies), max_size=12)


def expected_wire(pipeline: Pipeline, values: list[Any]) -> tuple[bytes, int]:
    """The wire bytes of the values that can be encoded, and how many cannot."""
    wire = b""
    failed = 0
    for value in values:
        if value is None:
            continue
        try:
            wire += pipeline.encode(value)
        except WirekitError:
            failed += 1
    return wire, failed


@pytest.mark.parametrize("name", list(PIPELINES))
@pytest.mark.parametrize("socket", [True, False], ids=["socket", "in-process"])
@settings(max_examples=60, deadline=None)
@given(script=actions)
def test_a_reads_replies_are_what_encode_makes_of_them_in_order(
    name: str, socket: bool, script: list[tuple[str, Any]]
) -> None:
    pipeline = PIPELINES[name]
    app = App(pipeline)

    @app.on(bytes)
    def handle(frame: bytes, conn: Any) -> Any:
        how, value = script[int(frame)]
        if how == "return":
            return value
        if value is not None:
            # A send that cannot be encoded raises and sends nothing.
            with contextlib.suppress(WirekitError):
                conn.send_nowait(value)
        return None

    async def main() -> tuple[RecordingTransport, StreamConnection]:
        transport = RecordingTransport(socket=socket)
        conn = serve(app, transport)
        logging.disable(logging.ERROR)  # the encoding errors are expected
        try:
            conn.data_received(pipeline.encode_many(str(n).encode() for n in range(len(script))))
        finally:
            logging.disable(logging.NOTSET)
        return transport, conn

    transport, conn = run(main())
    values = [value for _, value in script]
    want, failed = expected_wire(pipeline, values)
    assert b"".join(transport.writes) == want
    sends = sum(1 for how, value in script if how == "send" and value is not None)
    # One write for the read's replies; a send writes the replies before it, then itself.
    assert len(transport.writes) <= 1 + 2 * sends
    returned = [value for how, value in script if how == "return"]
    # A reply that cannot be encoded is logged and counted; a send raises instead.
    assert conn.stats.errors == expected_wire(pipeline, returned)[1]
    assert conn.stats.frames_out == len(values) - values.count(None) - failed
    assert conn.stats.bytes_out == len(want)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_fallback_reply_keeps_its_place_among_the_reads_replies(name: str) -> None:
    pipeline = PIPELINES[name]
    app = App(pipeline)

    @app.on(bytes)
    def echo(frame: bytes, conn: Any) -> bytes:
        return frame

    @app.fallback
    def refused(error: Any, conn: Any) -> bytes:
        return b"too long"

    # A frame over max_frame_size cannot be cut: the fallback sees the
    # error after the frames before it, and the stream ends there.
    wire = pipeline.encode_many([b"a", b"b"]) + b"\x00\x00\x10\x00"  # announces 4 KiB

    async def main() -> RecordingTransport:
        transport = RecordingTransport()
        serve(app, transport).data_received(wire)
        return transport

    transport = run(main())
    assert transport.writes == [pipeline.encode_many([b"a", b"b", b"too long"])]


@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_close_in_a_handler_sends_the_replies_before_it_and_nothing_after(name: str) -> None:
    pipeline = PIPELINES[name]
    app = App(pipeline)

    @app.on(bytes)
    def handle(frame: bytes, conn: Any) -> bytes | None:
        if frame == b"stop":
            conn.close()
            return None
        return frame

    async def main() -> RecordingTransport:
        transport = RecordingTransport()
        conn = serve(app, transport)
        conn.data_received(pipeline.encode_many([b"1", b"2", b"stop", b"3"]))
        return transport

    transport = run(main())
    assert b"".join(transport.writes) == pipeline.encode_many([b"1", b"2"])
    assert transport.is_closing()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_values_held_while_handlers_run_are_answered_framed_when_one_finishes(name: str) -> None:
    pipeline = PIPELINES[name]
    app = App(pipeline)

    @app.on(bytes)
    def handle(frame: bytes, conn: Any) -> Any:
        if frame == b"slow":

            async def later() -> bytes:
                await asyncio.sleep(0)
                return b"done"

            return later()
        return frame

    async def main() -> RecordingTransport:
        transport = RecordingTransport()
        conn = serve(app, transport, max_inflight_handlers=1)
        conn.data_received(pipeline.encode_many([b"1", b"slow", b"2", b"3"]))
        for _ in range(10):
            await asyncio.sleep(0)
        return transport

    transport = run(main())
    # "2" and "3" waited for the task (max_inflight_handlers=1): its reply first.
    assert transport.writes == [
        pipeline.encode(b"1"),
        pipeline.encode(b"done"),
        pipeline.encode_many([b"2", b"3"]),
    ]


# -- text: a UTF-8 stack under a newline -------------------------------------------


class _Text(str):
    """A str subclass: the utf-8 codec refuses it."""


# What a handler does with line n (or the peer sends bad UTF-8 in its place,
# which the fallback answers): some replies the newline cannot carry, utf-8
# cannot encode, or the codec refuses.
text_replies = st.one_of(
    st.text(max_size=MAX + 8),
    st.sampled_from(["a\nb", "cr\r", "\ud800", "é" * 40, ""]),
    st.text(max_size=8).map(_Text),
    st.binary(max_size=8),
    st.integers(),
    st.none(),
)
text_actions = st.lists(
    st.tuples(st.sampled_from(["return", "return", "send", "bad"]), text_replies), max_size=12
)


@pytest.mark.parametrize("fast", [True, False], ids=["speed-ups", "reference"])
@pytest.mark.parametrize("socket", [True, False], ids=["socket", "in-process"])
@settings(max_examples=60, deadline=None)
@given(script=text_actions, warm=st.booleans())
def test_a_reads_text_replies_are_what_encode_makes_of_them_in_order(
    fast: bool, socket: bool, script: list[tuple[str, Any]], warm: bool
) -> None:
    # With the speed-ups, a read of good lines is dispatched without asking
    # each value its class and its str replies are joined without asking
    # each theirs: the same bytes as the reference path's, in the same order.
    with contextlib.nullcontext() if fast else _fast.only():
        pipeline = Pipeline(framing=Delimited(max_frame_size=MAX), codecs="utf-8")
    assert (pipeline.decoder().value_class is str) is fast
    app = App(pipeline)

    @app.on(str)
    def handle(line: str, conn: Any) -> Any:
        how, value = script[int(line)]
        if how == "return":
            return value
        if value is not None:
            with contextlib.suppress(WirekitError):
                conn.send_nowait(value)
        return None

    @app.fallback
    def bad(error: Any, conn: Any) -> str:
        return "bad input"

    if warm:
        # As after a first read: the handler of str is known, so a read
        # starting with a str takes the dispatch loop of the usual read.
        assert app.handler_for(str) is handle

    wire = b"".join(b"\xff\n" if how == "bad" else b"%d\n" % n for n, (how, _) in enumerate(script))

    async def main() -> tuple[RecordingTransport, StreamConnection]:
        transport = RecordingTransport(socket=socket)
        with contextlib.nullcontext() if fast else _fast.only():
            conn = serve(app, transport)
        logging.disable(logging.ERROR)  # the encoding errors are expected
        try:
            conn.data_received(wire)
        finally:
            logging.disable(logging.NOTSET)
        return transport, conn

    transport, conn = run(main())
    values = ["bad input" if how == "bad" else value for how, value in script]
    want, failed = expected_wire(pipeline, values)
    assert b"".join(transport.writes) == want
    assert conn.stats.frames_out == len(values) - values.count(None) - failed
    assert conn.stats.bytes_out == len(want)
