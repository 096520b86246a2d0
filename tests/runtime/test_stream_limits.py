"""frame_timeout and max_frames_per_second on stream connections, over real loopback TCP.

No upper timing thresholds: a slow machine only makes these tests slower.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from helpers_runtime import eventually, raw_peer, run, within

from framework import Pipeline
from framework.core.errors import FrameTimeout
from framework.core.limits import Limits
from framework.runtime import connect
from framework.runtime.app import App
from framework.runtime.connection import Connection
from framework.runtime.stream import StreamConnection

PIPELINE = Pipeline(framing="length-prefix", codecs="bytes")


def echo_app() -> tuple[App, list[StreamConnection]]:
    app = App(PIPELINE)
    conns: list[StreamConnection] = []

    @app.on(bytes)
    def echo(value: bytes, conn: Connection) -> bytes:
        return value

    @app.on_connect
    def seen(conn: Any) -> None:
        conns.append(conn)

    return app, conns


def test_a_trickling_peer_is_closed_while_a_healthy_one_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, conns = echo_app()
    frame = PIPELINE.encode_many([b"x" * 100])

    async def main() -> None:
        limits = Limits(frame_timeout=0.3)
        async with (
            await app.start("tcp://127.0.0.1:0", limits=limits) as server,
            raw_peer(server.url) as trickler,
            await connect(server.url, PIPELINE) as healthy,
        ):
            # One byte every 50 ms: never idle, never finishing its frame.
            async def trickle() -> None:
                for byte in frame:
                    if trickler.closed.done():
                        return
                    trickler.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            trickling = asyncio.ensure_future(trickle())
            served = 0
            while not trickler.closed.done():
                await healthy.send(b"ping %d" % served)
                assert await within(healthy.receive()) == b"ping %d" % served
                served += 1
                await asyncio.sleep(0.02)
            await within(trickling)
            assert served > 0
            # The healthy client goes on being served after the trickler is gone.
            await healthy.send(b"still here")
            assert await within(healthy.receive()) == b"still here"
            trickled = next(c for c in conns if c.stats.errors)
            assert trickled.closed
            assert trickled.stats.frames_in == 0
            assert len(trickler.received) == 0

    with caplog.at_level(logging.INFO, logger="wirekit.connection"):
        run(main())
    timeouts = [r for r in caplog.records if "FrameTimeout" in r.getMessage()]
    assert len(timeouts) == 1
    assert timeouts[0].levelno == logging.INFO
    # What the peer made the server hold was freed when it was closed: no
    # "connection lost mid-frame" warning follows.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_frames_that_complete_in_time_reset_the_clock() -> None:
    app, conns = echo_app()
    frames = [bytes([n]) * 50 for n in range(8)]
    wire = PIPELINE.encode_many(frames)

    async def main() -> None:
        # Every write ends halfway through a frame, 0.1 s apart, for 0.8 s in
        # all: a partial frame is always buffered, but each completes within
        # frame_timeout of its start.
        async with (
            await app.start("tcp://127.0.0.1:0", limits=Limits(frame_timeout=0.3)) as server,
            raw_peer(server.url) as peer,
        ):
            step = len(wire) // len(frames)
            for start in range(0, len(wire), step):
                peer.write(wire[start + step // 2 - step if start else 0 : start + step // 2])
                await asyncio.sleep(0.1)
            peer.write(wire[len(wire) - step // 2 :])
            received = await peer.wait_for_bytes(len(wire))
            assert PIPELINE.decoder().feed(received) == frames
            assert not peer.closed.done()
            assert conns[0].stats.errors == 0

    run(main())


def test_frame_timeout_error_names_what_was_buffered() -> None:
    error = FrameTimeout("slow", buffered=7, peer=("127.0.0.1", 1))
    assert error.buffered == 7


def test_a_flooding_client_gets_every_reply_in_order_at_the_limited_rate() -> None:
    app, conns = echo_app()
    rate, burst, batch, total = 2000.0, 100, 100, 1000
    values = [b"%d" % n for n in range(total)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limits = Limits(max_frames_per_second=rate, frame_burst=burst)
        async with (
            await app.start("tcp://127.0.0.1:0", limits=limits) as server,
            await connect(server.url, PIPELINE) as conn,
        ):
            start = loop.time()
            replies: list[bytes] = []
            for first in range(0, total, batch):
                for value in values[first : first + batch]:
                    conn.send_nowait(value)
                replies += [await within(conn.receive()) for _ in range(batch)]
            elapsed = loop.time() - start
            assert replies == values  # nothing lost, nothing reordered
            (served,) = conns
            assert served.stats.frames_in == total
            assert served.stats.rate_limited >= 1  # reading was paused
            # A lower bound only (no flake on a slow machine): a batch is
            # read only once the bucket is out of debt, so all but the burst
            # and the last batch waited for tokens at `rate` per second.
            assert elapsed >= (total - burst - batch) / rate

    run(main())


def test_without_a_rate_limit_reading_never_pauses_for_it() -> None:
    app, conns = echo_app()
    values = [b"%d" % n for n in range(1000)]

    async def main() -> None:
        async with (
            await app.start("tcp://127.0.0.1:0") as server,
            await connect(server.url, PIPELINE) as conn,
        ):
            for value in values:
                conn.send_nowait(value)
            assert [await within(conn.receive()) for _ in values] == values
            await eventually(lambda: conns[0].stats.frames_in == len(values))
            assert conns[0].stats.rate_limited == 0

    run(main())
