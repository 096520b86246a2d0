"""The stream hot path: replies go out one write per read (and one per loop
iteration for async handlers), in the documented order; async handlers keep
every documented behaviour (a task from their first line, exceptions,
max_inflight_handlers, cancellation).

Real loopback TCP; no timing thresholds.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any

import pytest
from helpers_runtime import (
    IoCounter,
    Ping,
    Pong,
    eventually,
    memory_url,
    raw_peer,
    run,
    typed_pipeline,
    within,
)

from framework import Pipeline
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed


def test_async_handler_that_never_suspends_replies_in_the_reads_write() -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="bytes")
    app = App(pipeline)
    counter = IoCounter(app)

    @app.on(bytes)
    async def echo(value: bytes, conn: Connection) -> bytes:
        return value

    values = [str(n).encode() for n in range(1000)]
    wire = pipeline.encode_many(values)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            raw_peer(server.url) as peer,
        ):
            peer.write(wire)
            await peer.wait_for_bytes(len(wire))
            assert bytes(peer.received) == wire
            # As for plain handlers: one write per read, never one per reply.
            assert counter.writes <= counter.reads
            assert counter.writes < len(values) // 10

    run(main())


def test_async_and_plain_replies_of_one_read_keep_the_request_order() -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="bytes")
    app = App(pipeline)

    @app.on(bytes)
    def plain_or_async(value: bytes, conn: Connection) -> Any:
        if int(value) % 2:
            return value

        async def later() -> bytes:
            return value

        return later()

    values = [str(n).encode() for n in range(200)]

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            raw_peer(server.url) as peer,
        ):
            peer.write(pipeline.encode_many(values))
            received = await peer.wait_for_bytes(len(pipeline.encode_many(values)))
            replies = pipeline.decoder().feed(received)
            if sys.version_info >= (3, 12):
                # An eager task that does not suspend replies in the read's batch.
                assert replies == values
            else:
                # 3.11: async handlers are tasks; their replies follow the read's.
                assert replies == values[1::2] + values[0::2]

    run(main())


def test_an_async_handler_is_a_task_from_its_first_line() -> None:
    # asyncio.timeout() needs a current task, and a handler's context
    # variables must not leak into the connection's (or another handler's).
    pipeline = Pipeline(framing="length-prefix", codecs="bytes")
    app = App(pipeline)
    request_id: contextvars.ContextVar[bytes] = contextvars.ContextVar("request_id", default=b"-")

    @app.on(bytes)
    async def handle(value: bytes, conn: Connection) -> bytes:
        seen = request_id.get()
        request_id.set(value)
        async with asyncio.timeout(5):
            assert asyncio.current_task() is not None
            await asyncio.sleep(0)
        return seen + b":" + value

    values = [b"a", b"b", b"c"]

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            connect(server.url, pipeline) as conn,
        ):
            for value in values:
                await conn.send(value)
            replies = sorted([await within(conn.receive()) for _ in values])
            assert replies == [b"-:a", b"-:b", b"-:c"]

    run(main())


def test_async_handler_that_suspends_is_resumed_with_what_it_awaited() -> None:
    app = App(typed_pipeline())
    gates: dict[int, asyncio.Future[int]] = {}

    @app.on(Ping)
    async def waits(msg: Ping, conn: Connection) -> Pong:
        gates[msg.n] = asyncio.get_running_loop().create_future()
        bonus = await gates[msg.n]  # suspends: the rest runs as a task
        await asyncio.sleep(0)  # and suspends again
        return Pong(msg.n + bonus)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            await connect(server.url, app.pipeline) as conn,
        ):
            for n in (1, 2, 3):
                conn.send_nowait(Ping(n))
            await eventually(lambda: len(gates) == 3)
            # Finishing order, not request order, decides the reply order.
            for n, bonus in ((2, 20), (3, 30), (1, 10)):
                gates[n].set_result(bonus)
                assert await within(conn.receive()) == Pong(n + bonus)

    run(main())


@pytest.mark.parametrize("where", ["before", "after"])
def test_async_handler_error_before_or_after_suspending_closes_that_connection(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    async def fails(msg: Ping, conn: Connection) -> Pong:
        if where == "after":
            await asyncio.sleep(0)
        if msg.n == 13:
            raise RuntimeError("unlucky")
        return Pong(msg.n)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            await connect(server.url, app.pipeline) as healthy,
        ):
            async with await connect(server.url, app.pipeline) as doomed:
                await doomed.send(Ping(13))
                with pytest.raises(ConnectionClosed):
                    await within(doomed.receive())
            await healthy.send(Ping(1))
            assert await within(healthy.receive()) == Pong(1)

    with caplog.at_level(logging.ERROR, logger="wirekit.connection"):
        run(main())
    failures = [r for r in caplog.records if "handler for Ping raised" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "unlucky" in str(failures[0].exc_info[1])


def test_async_handler_that_cancels_itself_sends_nothing_and_the_connection_goes_on() -> None:
    app = App(typed_pipeline())

    @app.on(Ping)
    async def maybe(msg: Ping, conn: Connection) -> Pong:
        if msg.n == 0:
            raise asyncio.CancelledError
        return Pong(msg.n)

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            await connect(server.url, app.pipeline) as conn,
        ):
            conn.send_nowait(Ping(0))
            await conn.send(Ping(1))
            assert await within(conn.receive()) == Pong(1)

    run(main())


def test_only_suspended_handlers_count_against_max_inflight_handlers() -> None:
    app = App(typed_pipeline())
    release = asyncio.Event()
    started: list[int] = []

    @app.on(Ping)
    async def handler(msg: Ping, conn: Connection) -> Pong:
        started.append(msg.n)
        if msg.n >= 100:  # the slow ones suspend; the others finish at once
            await release.wait()
        return Pong(msg.n)

    async def main() -> None:
        limits = Limits(max_inflight_handlers=2)
        async with (
            await app.start("tcp://127.0.0.1:0", limits=limits) as server,
            await connect(server.url, app.pipeline) as conn,
        ):
            # Quick handlers never fill the limit, however many there are.
            for n in range(50):
                conn.send_nowait(Ping(n))
            assert [(await within(conn.receive())).n for _ in range(50)] == list(range(50))
            for n in (100, 101, 102, 103):
                conn.send_nowait(Ping(n))
            await eventually(lambda: 101 in started)
            await asyncio.sleep(0.05)  # room for a wrong third start to show
            # Two are running: the rest is held, in order, not started.
            assert started[50:] == [100, 101]
            release.set()
            replies = [(await within(conn.receive())).n for _ in range(4)]
            assert sorted(replies) == [100, 101, 102, 103]
            assert started[50:] == [100, 101, 102, 103]

    run(main())


def test_suspended_handler_is_cancelled_after_the_shutdown_timeout() -> None:
    app = App(typed_pipeline())
    outcome: list[str] = []

    @app.on(Ping)
    async def stuck(msg: Ping, conn: Connection) -> Pong:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return Pong(msg.n)

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0", limits=Limits(shutdown_timeout=0.2))
        conn = await connect(server.url, app.pipeline)
        await conn.send(Ping(1))
        await eventually(lambda: bool(server.connections))
        await asyncio.sleep(0.02)
        await within(server.close())
        assert outcome == ["cancelled"]
        with pytest.raises(ConnectionClosed):
            await within(conn.receive())

    run(main())


def test_async_fallback_tasks_count_against_max_inflight_handlers() -> None:
    # Values nobody handles go to the fallback; an async fallback that
    # suspends is in-flight work like any handler: past the limit, the rest
    # of the read is held, in order.
    pipeline = Pipeline(framing="newline", codecs="utf-8")
    app = App(pipeline)
    release = asyncio.Event()
    started: list[str] = []

    @app.on(int)
    def never(value: int, conn: Connection) -> None:
        return None

    @app.fallback
    async def unhandled(error: Any, conn: Connection) -> str:
        started.append(error.value)
        await release.wait()
        return f"late {error.value}"

    async def main() -> None:
        limits = Limits(max_inflight_handlers=2)
        async with (
            await app.start("tcp://127.0.0.1:0", limits=limits) as server,
            raw_peer(server.url) as peer,
        ):
            peer.write(b"a\nb\nc\nd\ne\n")
            await eventually(lambda: len(started) >= 2)
            await asyncio.sleep(0.05)  # room for a wrong third start to show
            assert started == ["a", "b"]
            release.set()
            await eventually(lambda: len(started) == 5)
            assert started == ["a", "b", "c", "d", "e"]

    run(main())


def test_handlers_stop_when_the_peer_resets_an_in_process_connection_mid_read() -> None:
    # A memory:// connection can be reset by its other end at any moment,
    # here by a handler in the middle of a read: the rest of that read is
    # not handled and nothing more is written or counted.
    pipeline = Pipeline(framing="newline", codecs="utf-8")
    app = App(pipeline)
    handled: list[str] = []
    clients: list[Connection] = []
    served: list[Connection] = []

    @app.on(str)
    def handle(value: str, conn: Connection) -> str:
        served.append(conn)
        handled.append(value)
        if value == "kill":
            clients[0].abort()
        return f"re {value}"

    async def main() -> None:
        async with await app.start(memory_url()) as server:
            client = await connect(server.url, pipeline)
            clients.append(client)
            await client.send("first")
            assert await within(client.receive()) == "re first"
            client._transport.write(b"kill\nafter1\nafter2\n")  # type: ignore[attr-defined]
            await eventually(lambda: served[-1].closed)
            assert handled == ["first", "kill"]
            assert served[-1].stats.frames_out == 1

    run(main())


def test_a_loop_whose_time_is_replaced_on_the_instance_keeps_its_own_clock() -> None:
    # Test clocks sometimes replace loop.time on the loop itself: a
    # connection must measure its activity with that clock, not the system's.
    app = App(Pipeline(framing="newline", codecs="utf-8"))

    @app.on(str)
    def echo(value: str, conn: Connection) -> str:
        return value

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0", limits=Limits(idle_timeout=5.0)) as server,
            await connect(server.url, app.pipeline) as conn,
        ):
            await conn.send("hello")
            assert await within(conn.receive()) == "hello"
            served = next(iter(server.connections))
            now = asyncio.get_running_loop().time()
            assert now - 5.0 < served.last_activity <= now  # type: ignore[attr-defined]

    loop = asyncio.new_event_loop()
    system = loop.time
    loop.time = lambda: system() + 1000.0  # type: ignore[method-assign]
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
