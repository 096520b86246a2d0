"""wirekit's timeouts and recovery, at their real default values, on a virtual clock.

Each test runs on a :class:`~framework.testing.VirtualClockLoop` over the
in-memory transports, so a five-minute idle timeout is checked as a
five-minute idle timeout and takes milliseconds; faults come from
:func:`~framework.testing.inject` with fixed seeds, so any failure replays.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from helpers_runtime import Ping, echo_app, memory_url, records, typed_pipeline

from framework import App, Connection, Pipeline
from framework.core.limits import Limits
from framework.runtime import ConnectionClosed, connect
from framework.testing import DatagramFaults, ScriptedPeer, StreamFaults, inject, run_virtual
from protocols.game import (
    Challenge,
    Join,
    Position,
    SequenceTracker,
    Welcome,
    create_app,
    default_pipeline,
)

#: The longest any scenario here may take, in virtual seconds.
BOUND = 3600.0


def virtual(main: Any) -> Any:
    """Run ``main`` on the virtual clock, bounded (in virtual time) by ``BOUND``."""

    async def bounded() -> Any:
        return await asyncio.wait_for(main, BOUND)

    return run_virtual(bounded())


# -- idle timeout --------------------------------------------------------------------------------


def test_the_default_idle_timeout_closes_a_silent_connection_after_300_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit")
    app = echo_app(typed_pipeline())
    closed: list[float] = []
    app.on_disconnect(lambda conn: closed.append(asyncio.get_running_loop().time()))
    assert Limits().idle_timeout == 300

    async def main() -> None:
        async with await app.start(memory_url()) as server:
            silent = await connect(server.url, app.pipeline)
            chatty = await connect(server.url, app.pipeline)
            for n in range(8):  # a message every 100 s: never idle for 300
                await chatty.send(Ping(n))
                assert await chatty.receive() == Ping(n)
                await asyncio.sleep(100)
            assert silent.closed
            assert not chatty.closed
            chatty.close()
            await chatty.wait_closed()

    virtual(main())
    assert closed == [300.0, 800.0]  # the silent one at 300 s; the chatty one when it left
    assert any("idle for 300.0 s, closing" in m for m in records(caplog, logging.INFO))


def test_a_peer_that_cannot_take_the_final_flush_is_aborted_one_idle_period_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit")
    pipeline = Pipeline(framing="length-prefix")
    app = App(pipeline)
    closed: list[float] = []
    app.on_disconnect(lambda conn: closed.append(asyncio.get_running_loop().time()))

    @app.on(bytes)
    def big(frame: bytes, conn: Connection) -> bytes:
        return b"r" * 100_000

    async def main() -> None:
        url = memory_url()
        # 10 bytes a second towards the client: the reply takes hours to leave.
        with inject(url, StreamFaults(seed=1, direction="to_client", bandwidth=10.0)):
            async with await app.start(url, limits=Limits(idle_timeout=60)) as server:
                peer = await ScriptedPeer.connect(url)
                peer.write(pipeline.encode(b"go"))
                error = await peer.wait_closed()
                assert isinstance(error, ConnectionResetError)
                assert not server.connections

    virtual(main())
    # Idle for 60 s, closed; the flush still stuck 60 s later, aborted.
    assert closed == [120.0]
    messages = records(caplog, logging.INFO)
    assert any("idle" in m and "closing" in m for m in messages)
    assert any("aborting" in m for m in messages)


def test_a_client_connection_is_never_closed_for_being_idle() -> None:
    app = echo_app(typed_pipeline())

    async def main() -> None:
        url = memory_url()
        async with (
            await app.start(url, limits=Limits(idle_timeout=None)),
            connect(url, app.pipeline, limits=Limits(idle_timeout=1)) as conn,
        ):
            await asyncio.sleep(BOUND / 2)
            await conn.send(Ping(1))
            assert await conn.receive() == Ping(1)

    virtual(main())


# -- UDP peer expiry ----------------------------------------------------------------------------


def test_a_udp_peer_is_forgotten_after_the_default_idle_timeout() -> None:
    pipeline = typed_pipeline()
    app = echo_app(pipeline)
    events: list[tuple[str, float]] = []
    app.on_connect(lambda conn: events.append(("connect", asyncio.get_running_loop().time())))
    app.on_disconnect(lambda conn: events.append(("forget", asyncio.get_running_loop().time())))

    async def main() -> None:
        async with (
            await app.start("memory+udp://expiry") as server,
            connect(server.url, pipeline) as conn,
        ):
            await conn.send(Ping(1))
            assert await conn.receive() == Ping(1)
            await asyncio.sleep(299)
            await conn.send(Ping(2))  # just in time: the state is kept
            assert await conn.receive() == Ping(2)
            await asyncio.sleep(1000)
            await conn.send(Ping(3))  # long gone: a new virtual connection
            assert await conn.receive() == Ping(3)

    virtual(main())
    (_, first), (_, forgotten), (_, second) = events[:3]
    assert [kind for kind, _ in events[:3]] == ["connect", "forget", "connect"]
    # Swept every idle_timeout / 2: forgotten between 300 and 450 s after its last datagram.
    assert first == 0.0
    assert 299 + 300 <= forgotten <= 299 + 450
    assert second == 1299.0


# -- graceful shutdown ----------------------------------------------------------------------------


def test_shutdown_waits_shutdown_timeout_for_handlers_then_cancels_them() -> None:
    app = App(typed_pipeline())
    finished: list[int] = []
    cancelled: list[int] = []

    @app.on(Ping)
    async def slow(ping: Ping, conn: Connection) -> Ping:
        try:
            await asyncio.sleep(ping.n)
        except asyncio.CancelledError:
            cancelled.append(ping.n)
            raise
        finished.append(ping.n)
        return ping

    async def main() -> tuple[list[Any], float]:
        loop = asyncio.get_running_loop()
        server = await app.start(memory_url())  # shutdown_timeout: 10 s by default
        conn = await connect(server.url, app.pipeline)
        for seconds in (5, 3600):
            await conn.send(Ping(seconds))
        await asyncio.sleep(1)
        start = loop.time()
        await server.close()
        took = loop.time() - start
        replies = []
        try:
            while True:
                replies.append(await conn.receive())
        except ConnectionClosed:
            pass
        return replies, took

    replies, took = virtual(main())
    assert took == 10.0  # the slow handler had its ten seconds, no more
    assert finished == [5]
    assert cancelled == [3600]
    assert replies == [Ping(5)]  # the reply produced before shutdown still arrived


# -- recovery: streams -----------------------------------------------------------------------------


def test_every_frame_arrives_in_order_over_a_segmented_stalling_slow_stream() -> None:
    app = echo_app(typed_pipeline())
    faults = StreamFaults(seed=2024, segment=5, stalls=0.01, stall_for=5.0, bandwidth=2000.0)

    async def main() -> tuple[list[Any], Any]:
        url = memory_url()
        with inject(url, faults) as injected:
            async with await app.start(url) as server, connect(url, app.pipeline) as conn:
                sent = [Ping(n, "x" * (n % 50)) for n in range(150)]
                for ping in sent:
                    await conn.send(ping)
                got = [await conn.receive() for _ in sent]
                assert not server.connections or all(not c.closed for c in server.connections)
        return [sent, got], injected

    (sent, got), injected = virtual(main())
    assert got == sent
    assert injected.stats.stalls > 0
    assert injected.stats.pieces > 2 * len(sent)


def test_a_reset_mid_frame_costs_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wirekit")
    app = echo_app(typed_pipeline())

    async def main() -> None:
        url = memory_url()
        async with await app.start(url) as server:
            healthy = await connect(url, app.pipeline)  # made before: no faults
            with inject(url, StreamFaults(seed=5, direction="to_server", reset_after=60)):
                doomed = await connect(url, app.pipeline)
                await doomed.send(Ping(1, "a" * 30))  # one whole frame (54 bytes)...
                assert await doomed.receive() == Ping(1, "a" * 30)
                await doomed.send(Ping(2, "b" * 30))  # ...and 6 bytes of the next
                with pytest.raises(ConnectionClosed):
                    await doomed.receive()
            await healthy.send(Ping(3))
            assert await healthy.receive() == Ping(3)
            assert len(server.connections) == 1
            healthy.close()
            await healthy.wait_closed()

    virtual(main())
    assert any(
        "lost mid-frame, 6 bytes" in m and "reset after 60 bytes" in m and "seed=5" in m
        for m in records(caplog)
    )


def test_a_half_closed_client_gets_every_reply_then_the_close() -> None:
    pipeline = typed_pipeline()
    app = App(pipeline)

    @app.on(Ping)
    async def later(ping: Ping, conn: Connection) -> Ping:
        await asyncio.sleep(30 - ping.n)  # replies finish in reverse order
        return ping

    async def main() -> list[Any]:
        url = memory_url()
        async with await app.start(url):
            peer = await ScriptedPeer.connect(url)
            for n in range(3):
                peer.write(pipeline.encode(Ping(n)))
            peer.write_eof()  # done asking, still listening
            await peer.wait_closed()
            assert peer.error is None
            decoder = pipeline.decoder()
            return decoder.feed(bytes(peer.received))

    assert virtual(main()) == [Ping(2), Ping(1), Ping(0)]


# -- recovery: datagrams ------------------------------------------------------------------------


async def join(player: Connection) -> int:
    """The game's join handshake (done before the faults, so it needs no retries)."""
    await player.send(Join())
    challenge = await player.receive()
    assert isinstance(challenge, Challenge)
    await player.send(Join(challenge.cookie))
    welcome = await player.receive()
    assert isinstance(welcome, Welcome)
    return welcome.player


def test_the_game_tracker_counts_exactly_what_the_faulty_network_did() -> None:
    pipeline = default_pipeline()
    relay = create_app(pipeline)
    faults = DatagramFaults(seed=99, drop=0.05, duplicate=0.05, reorder=0.05, jitter=0.03)
    url = "memory+udp://game-faults"

    async def main() -> tuple[list[int], Any, Any]:
        async with (
            await relay.start(url) as server,
            connect(url, pipeline) as watcher,
            connect(url, pipeline) as player,
        ):
            await join(watcher)
            number = await join(player)
            counts: list[int] = []
            with inject(url, faults) as injected:
                for count in range(1, 501):
                    await player.send(Position(1.0, 2.0, 3.0, count))
                    await asyncio.sleep(0.02)
                while True:
                    try:
                        update = await asyncio.wait_for(watcher.receive(), 5)
                    except TimeoutError:
                        break
                    assert update.player == number
                    counts.append(update.position.count)
            return counts, injected, server.datagram_stats

    counts, injected, stats = virtual(main())
    tracker = SequenceTracker()
    for count in counts:
        tracker.accept("player", count)

    # What the network did, as the fault injector counted it...
    up, down = injected.to_server, injected.to_client
    assert up.sent == 500
    assert stats.received == 4 + up.delivered  # two joins each, then the positions
    assert down.sent == up.delivered  # the relay forwarded everything it got
    assert len(counts) == down.delivered
    for counter in (up.dropped, down.dropped, up.duplicated, down.duplicated):
        assert counter > 0
    assert up.reordered + down.reordered > 0

    # ...is what the tracker reports, computed independently from the arrivals.
    distinct = set(counts)
    in_order = [c for i, c in enumerate(counts) if c > max(counts[:i], default=0)]
    assert tracker.received == len(counts)
    assert tracker.accepted == len(in_order)
    assert tracker.duplicates == len(counts) - len(distinct)
    assert tracker.out_of_order == len(distinct) - len(in_order)
    first = counts[0]
    assert tracker.lost == len(set(range(first, max(counts) + 1)) - distinct)
    assert tracker.lost > 0


# -- frame timeout ------------------------------------------------------------------------------


def test_a_trickling_peer_is_closed_after_frame_timeout_while_a_healthy_one_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit")
    app = echo_app(typed_pipeline())
    assert Limits().frame_timeout == 30

    async def main() -> tuple[int, int, float | None, list[Any]]:
        url = memory_url()
        async with await app.start(url) as server:
            healthy = await connect(url, app.pipeline)
            frame = app.pipeline.encode(Ping(1, "slow" * 5))
            async with await ScriptedPeer.connect(url) as trickler:
                start = asyncio.get_running_loop().time()

                async def chat() -> list[Any]:
                    replies = []
                    for n in range(12):  # a request every 5 s, for a minute
                        await healthy.send(Ping(n))
                        replies.append(await healthy.receive())
                        await asyncio.sleep(5)
                    return replies

                talking = asyncio.create_task(chat())
                written = await trickler.trickle(frame, every=5.0)  # one byte every 5 s
                await trickler.wait_closed()
                replies = await talking
                closed_after = None if trickler.closed_at is None else trickler.closed_at - start
            assert len(server.connections) == 1  # the healthy one
            healthy.close()
            await healthy.wait_closed()
            return written, len(frame), closed_after, replies

    written, size, closed_after, replies = virtual(main())
    # The frame started at 0 s; at 30 s, with 6 of its bytes sent, the peer
    # was cut off (its 7th byte crossed the close).
    assert closed_after == 30.0
    assert written == 7 < size
    assert replies == [Ping(n) for n in range(12)]  # the healthy peer, served throughout
    assert any(
        "FrameTimeout" in m and "frame_timeout=30.0 s" in m for m in records(caplog, logging.INFO)
    )
