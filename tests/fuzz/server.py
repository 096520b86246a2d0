"""Fuzz target for a whole server: an ``App`` on ``memory://``, fed hostile bytes.

One event loop serves every input (starting a loop per input would cost more
than the input). Each input opens a connection to an echo server of one of
the pipeline target's stacks, writes the payload in the input's chunks
(one ``data_received`` each), and waits, with a deadline, for the server to
answer and let go of the connection. The sans-I/O decoder fed the same
chunks is the oracle. Checks:

- the server echoes exactly the messages the oracle decodes, each once (an
  async handler's reply may be lost only when the peer's bad bytes end the
  connection: the connection is gone by the time it is ready);
- every bad frame reaches the fallback handler, in order, as the oracle's
  error; a fatal framing error closes the connection, anything else does not;
- the connection is released (``Server.connections`` is empty again) and
  nothing logs an error or reaches the loop's exception handler;
- all of it within :data:`DEADLINE` seconds of loop time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import msgpack

from framework.core.framing import MsgpackStream
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.runtime.app import App
from framework.runtime.server import Server
from framework.runtime.transports import memory

from . import _model
from ._support import Input, Target, Trace, drive, encodable, seed, split
from .framers import msgpack_samples
from .pipeline import PIPELINES, json_bug_in, reference_trace, seeds_pipeline

__all__ = ["DEADLINE", "STACKS", "TARGETS", "ServerHarness"]

#: The pipeline target's typed stacks, and a raw relay: msgpack-stream frames
#: echoed as bytes, never decoded (what a proxy or a logger does).
RAW = Pipeline(framing=MsgpackStream(max_frame_size=300), codecs="bytes")
STACKS: tuple[Pipeline, ...] = (*PIPELINES, RAW)

#: Seconds one input may take, in loop time. The memory transport needs no
#: real waiting, so an input that takes this long has hung.
DEADLINE = 5.0
_names = itertools.count()


class _Client(asyncio.Protocol):
    """A raw peer: writes what it is told, keeps every byte it receives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.received = bytearray()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _logged_errors() -> Iterator[list[logging.LogRecord]]:
    """Collect wirekit's ERROR records; keep its warnings about bad input quiet."""
    logger = logging.getLogger("wirekit")
    propagate, level = logger.propagate, logger.level
    handler = _Errors()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.ERROR)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


class ServerHarness:
    """Echo servers on ``memory://`` for each of :data:`STACKS`, on one private loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.fallback: list[str] = []
        self.servers: list[Server] = []
        self.names: list[str] = []
        with _logged_errors():
            self.loop.run_until_complete(self._start())

    def _app(self, pipeline: Pipeline) -> App:
        app = App(pipeline)

        def echo(msg: Any, _conn: Any) -> Any:
            return msg

        async def echo_later(msg: Any, _conn: Any) -> Any:
            await asyncio.sleep(0)
            return msg

        if pipeline is RAW:
            app.on(bytes)(echo)
        else:
            for cls in (_model.Position, _model.Route, _model.Blob):
                app.on(cls)(echo)
            app.on(_model.Ping)(echo_later)

        @app.fallback
        def bad_input(error: Any, _conn: Any) -> None:
            self.fallback.append(type(error).__name__)

        return app

    async def _start(self) -> None:
        # The default limits, except that nothing here should wait for a clock.
        limits = Limits(idle_timeout=None, frame_timeout=None)
        for pipeline in STACKS:
            name = f"wirekit-fuzz-{next(_names)}"
            server = await self._app(pipeline).start(f"memory://{name}", limits=limits)
            self.servers.append(server)
            self.names.append(name)

    def close(self) -> None:
        """Stop the servers and close the loop."""

        async def stop() -> None:
            for server in self.servers:
                await server.close()

        if not self.loop.is_closed():
            self.loop.run_until_complete(stop())
            self.loop.close()

    async def _exchange(self, index: int, chunks: list[bytes], expected: Trace) -> _Client:
        client = _Client(self.loop)
        transport, _ = memory.connect(self.names[index], lambda: client)
        for chunk in chunks:
            transport.write(chunk)
            await asyncio.sleep(0)  # one data_received per chunk, as on a socket
        if not expected.failed:
            # The server answers everything and keeps the connection: read it all, then close.
            pipeline = STACKS[index]
            size = sum(len(pipeline.encode(value)) for value in expected.values)
            while len(client.received) < size and not client.lost.done():
                await asyncio.sleep(0)
            transport.close()
        await client.lost
        server = self.servers[index]
        while server.connections:
            await asyncio.sleep(0)
        return client

    def exchange(self, index: int, chunks: list[bytes], expected: Trace) -> bytes:
        """Send ``chunks`` to server ``index``; return its reply bytes, checking the run."""
        self.fallback.clear()
        self.loop_errors.clear()
        with _logged_errors() as errors:
            client = self.loop.run_until_complete(self._bounded(index, chunks, expected))
        assert not errors, f"the server logged: {[r.getMessage() for r in errors]}"
        assert not self.loop_errors, f"the loop caught: {self.loop_errors}"
        assert self.fallback == expected.errors, (
            f"the fallback saw {self.fallback}, the decoder raised {expected.errors}"
        )
        return bytes(client.received)

    async def _bounded(self, index: int, chunks: list[bytes], expected: Trace) -> _Client:
        try:
            async with asyncio.timeout(DEADLINE):
                return await self._exchange(index, chunks, expected)
        except TimeoutError:
            raise AssertionError(
                f"no end within {DEADLINE} s: server {index}, {len(chunks)} chunks, "
                f"expected {expected}, connections {self.servers[index].connections}"
            ) from None


_harness: ServerHarness | None = None


def harness() -> ServerHarness:
    """The one harness of this process, started on first use."""
    global _harness
    if _harness is None:
        _harness = ServerHarness()
    return _harness


def close() -> None:
    """Release the harness (its servers and loop), if one was started."""
    global _harness
    if _harness is not None:
        _harness.close()
        _harness = None


def run_server(data: bytes) -> int:
    """Feed one connection of an echo server and check what comes back."""
    inp = Input(data)
    index = inp.pick(range(len(STACKS)))
    sizes, _kind = inp.chunking()
    chunks = split(inp.rest(), sizes)
    pipeline = STACKS[index]
    if pipeline is RAW:
        expected = drive(pipeline.decoder(), chunks, limit=300, decode_errors=True)
        if not all(encodable(pipeline.framing, frame) for frame in expected.values):
            return 0  # a known bug: see KNOWN_BUGS
    else:
        expected = reference_trace(pipeline, chunks)
        if json_bug_in(pipeline, expected.values):
            return 0
    received = harness().exchange(index, chunks, expected)
    decoder = pipeline.framing.decoder()
    replies = collections.Counter(decoder.feed(received))
    decoder.end()
    wanted = collections.Counter(pipeline.encode_frame(value) for value in expected.values)
    if expected.failed:
        sync = collections.Counter(
            pipeline.encode_frame(value)
            for value in expected.values
            if type(value) is not _model.Ping
        )
        assert sync <= replies <= wanted, (
            f"replies before a fatal error: got {replies}, wanted {sync} to {wanted}"
        )
    else:
        assert replies == wanted, f"echoed {replies}, expected {wanted}"
    return len(expected.values)


def seeds_server() -> list[bytes]:
    """The pipeline target's seeds (the first stacks are its own), and raw msgpack values."""
    raw = STACKS.index(RAW)
    wire = b"".join(msgpack.packb(value, use_bin_type=True) for value in msgpack_samples())
    return [*seeds_pipeline(), seed(wire, [raw, 0, 0]), seed(wire, [raw, 2, 3, 1, 0])]


TARGETS = [
    Target(
        "server",
        "App on memory:// with an echo router and a fallback, one event loop for all inputs",
        run_server,
        seeds_server,
        close,
        max_len=1024,  # each input costs a connection: more, shorter inputs explore more
    ),
]
