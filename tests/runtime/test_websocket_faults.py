"""WebSocket under the testing kit's faults: ``memory+ws://``, over a faulty in-process stream."""

from __future__ import annotations

from typing import Any

import pytest
from helpers_runtime import echo_app, eventually, run, within

from framework import ConnectionClosed, Pipeline
from framework.core.limits import Limits
from framework.runtime.client import connect
from framework.testing import StreamFaults, inject


def pipeline() -> Pipeline:
    return Pipeline(framing="newline", codecs="utf-8")


def test_byte_by_byte_delivery_still_gives_whole_messages() -> None:
    async def main() -> Any:
        with inject("memory+ws://split/chat", StreamFaults(seed=3, segment=1)) as faults:
            server = await echo_app(pipeline()).start("memory+ws://split/chat")
            assert server.url == "memory+ws://split/chat"
            async with connect(server.url, pipeline()) as conn:
                for text in ("one", "two words", "ünïcödé " * 20):
                    await conn.send(text)
                    assert await within(conn.receive()) == text
            await server.close()
        return faults

    faults = run(main())
    # Every byte (handshake, frames, close) went as its own read.
    assert faults.stats.pieces == faults.stats.bytes > 0


def test_a_reset_mid_message_costs_only_that_connection() -> None:
    async def main() -> None:
        url = "memory+ws://resets"
        server = await echo_app(pipeline()).start(url)
        # The handshake request is about 200 bytes: the reset comes mid-message.
        with inject(url, StreamFaults(seed=5, direction="to_server", reset_after=260)) as faults:
            conn = await connect(url, pipeline())
            conn.send_nowait("x" * 500)  # the reset cuts this message
            with pytest.raises(ConnectionClosed):
                await within(conn.receive())
        assert faults.to_server.resets == 1
        await eventually(lambda: not server.connections)
        async with connect(url, pipeline()) as healthy:
            await healthy.send("after the reset")
            assert await within(healthy.receive()) == "after the reset"
        await server.close()

    run(main())


def test_a_slow_link_backs_up_replies_and_the_server_stops_reading() -> None:
    async def main() -> None:
        url = "memory+ws://slow"
        limits = Limits(write_high_water=4096, write_low_water=1024)
        server = await echo_app(pipeline()).start(url, limits=limits)
        faults = StreamFaults(seed=9, direction="to_client", bandwidth=20_000)
        with inject(url, faults):
            async with connect(url, pipeline()) as conn:
                served = next(iter(server.connections))
                for n in range(50):
                    conn.send_nowait(f"{n:03d}" + "y" * 500)
                await eventually(lambda: not served.can_send)
                replies = [await within(conn.receive(), 10) for _ in range(50)]
                assert [reply[:3] for reply in replies] == [f"{n:03d}" for n in range(50)]
                assert served.can_send
        await server.close()

    run(main(), timeout=20)
