"""The memory:// backplane keeps the backplane contract, in one process."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from framework import ConfigError
from framework.runtime.backplane import backplane_from_url
from framework.runtime.backplane.memory import MemoryBackplane
from tests.helpers_runtime import run

_names = itertools.count(1)


def url() -> str:
    return f"memory://contract-{next(_names)}"


class Node:
    """A backplane and what it was handed."""

    def __init__(self, address: str, **options: int) -> None:
        self.plane = backplane_from_url(address, **options)
        self.got: list[tuple[str, bytes]] = []
        self.states: list[bool] = []

    async def start(self) -> Node:
        await self.plane.start(lambda c, p: self.got.append((c, p)), self.states.append)
        return self


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_payloads_reach_subscribers_in_publish_order_and_not_the_publisher() -> None:
    async def main() -> None:
        address = url()
        a, b, c = [await Node(address).start() for _ in range(3)]
        await b.plane.subscribe("ch")
        await c.plane.subscribe("other")
        await a.plane.subscribe("ch")
        for n in range(100):
            assert a.plane.publish("ch", n.to_bytes(2, "big"))
        await settle()
        assert b.got == [("ch", n.to_bytes(2, "big")) for n in range(100)]
        assert a.got == []  # no echo
        assert c.got == []
        assert (a.plane.stats.published, b.plane.stats.received) == (100, 100)
        assert a.plane.connected
        assert a.states == []
        for node in (a, b, c):
            await node.plane.close()

    run(main())


def test_unsubscribed_channels_and_closed_nodes_get_nothing() -> None:
    async def main() -> None:
        address = url()
        a, b = [await Node(address).start() for _ in range(2)]
        await b.plane.subscribe("ch")
        a.plane.publish("ch", b"1")
        await b.plane.unsubscribe("ch")  # before the queued payload is handed over
        a.plane.publish("ch", b"2")
        await settle()
        assert b.got == []
        await b.plane.subscribe("ch")
        await b.plane.close()
        a.plane.publish("ch", b"3")
        await settle()
        assert b.got == []
        await a.plane.close()

    run(main())


def test_hubs_by_name_are_separate_clusters() -> None:
    async def main() -> None:
        a, b = await Node(url()).start(), await Node(url()).start()
        await b.plane.subscribe("ch")
        a.plane.publish("ch", b"x")
        await settle()
        assert b.got == []
        await a.plane.close()
        await b.plane.close()

    run(main())


def test_a_full_queue_drops_and_counts() -> None:
    async def main() -> None:
        address = url()
        a, b = await Node(address).start(), await Node(address, max_queued=3).start()
        await b.plane.subscribe("ch")
        results = [a.plane.publish("ch", bytes([n])) for n in range(5)]
        assert results == [True, True, True, False, False]
        assert a.plane.stats.dropped == 2
        await settle()
        assert [p for _c, p in b.got] == [b"\x00", b"\x01", b"\x02"]
        await a.plane.close()
        await b.plane.close()

    run(main())


def test_nodes_on_other_threads_loops_get_payloads_on_their_own_loop() -> None:
    address = url()
    ready = threading.Event()
    done = threading.Event()
    got: list[tuple[bytes, bool]] = []

    def other_thread() -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            plane = MemoryBackplane(address)

            def deliver(channel: str, payload: bytes) -> None:
                got.append((payload, asyncio.get_running_loop() is loop))
                if len(got) == 10:
                    done.set()

            await plane.start(deliver, lambda up: None)
            await plane.subscribe("ch")
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
            await plane.close()

        asyncio.run(main())

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert ready.wait(5)

    async def publish() -> None:
        plane = MemoryBackplane(address)
        await plane.start(lambda c, p: None, lambda up: None)
        for n in range(10):
            plane.publish("ch", bytes([n]))
        await plane.close()

    run(publish())
    assert done.wait(5)
    thread.join(5)
    assert got == [(bytes([n]), True) for n in range(10)]


def test_bad_urls_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="memory://NAME"):
        MemoryBackplane("memory://x?y=1")
    with pytest.raises(ConfigError, match="max_queued"):
        MemoryBackplane("memory://", max_queued=0)
    with pytest.raises(ConfigError, match="unknown backplane"):
        backplane_from_url("mqtt://broker")
    assert MemoryBackplane("memory://a/b").name == "a/b"
