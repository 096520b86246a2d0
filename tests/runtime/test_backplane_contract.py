"""Every backplane keeps the contract of framework/runtime/backplane/base.py.

The same tests run against ``memory://``, a real redis-server and a real
nats-server (tests/brokers.py starts them on free loopback ports and stops
them by PID). Each node is a backplane with what it was handed: payloads
and state changes. The outage tests ``SIGKILL`` the broker and start it
again on the same port, as a crash and a restart would.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from framework import ConfigError
from framework.runtime.backplane import Backplane, backplane_from_url
from tests.brokers import Broker, free_port, nats_broker, redis_broker
from tests.helpers_runtime import eventually, run

__all__ = ["nats_broker", "redis_broker"]  # the fixtures, for getfixturevalue

KINDS = ["memory", "redis", "nats"]
BROKERS = ["redis", "nats"]
#: The issue's bound: a node is back on the backplane this long after its broker.
RECONNECT_WITHIN = 2.0
_hubs = itertools.count(1)


class Node:
    """A backplane and what it was handed."""

    def __init__(self, url: str, **options: Any) -> None:
        self.plane: Backplane = backplane_from_url(url, **options)
        self.got: list[tuple[str, bytes]] = []
        self.states: list[bool] = []

    async def start(self) -> Node:
        await self.plane.start(lambda c, p: self.got.append((c, p)), self.states.append)
        return self

    def payloads(self, channel: str) -> list[bytes]:
        return [payload for got, payload in self.got if got == channel]


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[Broker | None]:
    kind = request.param
    if kind == "memory":
        yield None
    else:
        yield request.getfixturevalue(f"{kind}_broker")


def url_of(kind: str, broker: Broker | None) -> str:
    return broker.url if broker is not None else f"memory://contract-{next(_hubs)}"


# Each test takes (kind, broker) so the ids read "redis", "nats", "memory".
each_kind = pytest.mark.parametrize(
    ("kind", "broker"), [(k, k) for k in KINDS], indirect=["broker"]
)
each_broker = pytest.mark.parametrize(
    ("kind", "broker"), [(k, k) for k in BROKERS], indirect=["broker"]
)


async def nodes(url: str, count: int, **options: Any) -> list[Node]:
    return [await Node(url, **options).start() for _ in range(count)]


async def close(*nodes: Node) -> None:
    for node in nodes:
        await node.plane.close()


@each_kind
def test_a_publish_reaches_each_subscribed_node_once_in_order(
    kind: str, broker: Broker | None
) -> None:
    async def main() -> None:
        sender, first, second, outsider = await nodes(url_of(kind, broker), 4)
        await first.plane.subscribe("room")
        await second.plane.subscribe("room")
        await outsider.plane.subscribe("elsewhere")
        sent = [b"line %d" % n for n in range(300)]
        for payload in sent:
            assert sender.plane.publish("room", payload)
        await eventually(lambda: len(first.got) == len(second.got) == len(sent))
        assert first.payloads("room") == second.payloads("room") == sent
        assert outsider.got == []
        # One broker message per publish, whatever the number of subscribers.
        assert sender.plane.stats.published == len(sent)
        assert first.plane.stats.received == len(sent)
        await close(sender, first, second, outsider)

    run(main())


@each_kind
def test_each_publishers_order_is_kept_when_publishers_interleave(
    kind: str, broker: Broker | None
) -> None:
    async def main() -> None:
        left, right, reader = await nodes(url_of(kind, broker), 3)
        await reader.plane.subscribe("room")
        for n in range(200):
            left.plane.publish("room", b"L%d" % n)
            right.plane.publish("room", b"R%d" % n)
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the writers interleave on the wire
        await eventually(lambda: len(reader.got) == 400)
        got = reader.payloads("room")
        assert [p for p in got if p.startswith(b"L")] == [b"L%d" % n for n in range(200)]
        assert [p for p in got if p.startswith(b"R")] == [b"R%d" % n for n in range(200)]
        await close(left, right, reader)

    run(main())


@each_kind
def test_a_node_sees_its_own_publishes_only_through_a_broker(
    kind: str, broker: Broker | None
) -> None:
    async def main() -> None:
        node, other = await nodes(url_of(kind, broker), 2)
        await node.plane.subscribe("room")
        await other.plane.subscribe("room")
        node.plane.publish("room", b"mine")
        await eventually(lambda: other.got == [("room", b"mine")])
        if kind == "memory":
            assert node.got == []  # the hub skips the publisher
        else:
            # A broker echoes it: the group layer recognises its node id and drops it.
            await eventually(lambda: node.got == [("room", b"mine")])
        await close(node, other)

    run(main())


@each_kind
def test_unsubscribe_stops_delivery_at_once(kind: str, broker: Broker | None) -> None:
    async def main() -> None:
        sender, reader = await nodes(url_of(kind, broker), 2)
        await reader.plane.subscribe("room")
        await reader.plane.subscribe("marker")
        sender.plane.publish("room", b"before")
        await eventually(lambda: reader.got == [("room", b"before")])
        for n in range(50):
            sender.plane.publish("room", b"in flight %d" % n)
        await reader.plane.unsubscribe("room")
        sender.plane.publish("room", b"after")
        sender.plane.publish("marker", b"done")
        await eventually(lambda: ("marker", b"done") in reader.got)
        # Payloads still in flight when unsubscribe returned are not delivered either.
        assert [c for c, _ in reader.got] == ["room", "marker"]
        await close(sender, reader)

    run(main())


@each_broker
def test_close_sends_what_is_queued_first(kind: str, broker: Broker | None) -> None:
    async def main() -> None:
        sender, reader = await nodes(url_of(kind, broker), 2)
        await reader.plane.subscribe("room")
        for n in range(500):
            sender.plane.publish("room", b"%d" % n)
        await sender.plane.close()
        await eventually(lambda: len(reader.got) == 500)
        assert sender.plane.stats.dropped == 0
        await close(reader)

    run(main())


@each_broker
def test_a_full_queue_drops_new_publishes_and_counts_them(kind: str, broker: Broker | None) -> None:
    async def main() -> None:
        (reader,) = await nodes(url_of(kind, broker), 1)
        # The brokers write a publish at once while nothing is queued: not here.
        direct = {"direct_limit": 0} if kind != "memory" else {}
        (sender,) = await nodes(url_of(kind, broker), 1, max_queue=10, **direct)
        await reader.plane.subscribe("room")
        # No await between publishes: the writer cannot run, the queue fills.
        accepted = [sender.plane.publish("room", b"%d" % n) for n in range(100)]
        assert accepted == [True] * 10 + [False] * 90
        assert sender.plane.stats.dropped == 90
        await eventually(lambda: len(reader.got) == 10)
        assert reader.payloads("room") == [b"%d" % n for n in range(10)]
        # The queue drained: publishes are accepted again.
        assert sender.plane.publish("room", b"later")
        await eventually(lambda: len(reader.got) == 11)
        await close(sender, reader)

    run(main())


@pytest.mark.parametrize("kind", BROKERS)
def test_start_raises_a_config_error_naming_the_url_when_the_broker_is_unreachable(
    kind: str,
) -> None:
    url = f"{kind}://127.0.0.1:{free_port()}"

    async def main() -> None:
        plane = backplane_from_url(url)
        with pytest.raises(ConfigError, match=url) as caught:
            await plane.start(lambda c, p: None, lambda up: None)
        assert caught.value.option == "backplane"

    run(main())


def lines(caplog: pytest.LogCaptureFixture, level: int, url: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wirekit.backplane" and r.levelno == level and url in r.getMessage()
    ]


@each_broker
def test_a_broker_outage_drops_and_counts_then_reconnects_with_subscriptions(
    kind: str, broker: Broker | None, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker is not None
    caplog.set_level(logging.INFO, logger="wirekit.backplane")

    async def main() -> None:
        sender, reader = await nodes(broker.url, 2)
        await reader.plane.subscribe("room")
        sender.plane.publish("room", b"before")
        await eventually(lambda: reader.got == [("room", b"before")])

        broker.kill()
        await eventually(lambda: not sender.plane.connected and not reader.plane.connected)
        assert sender.states == reader.states == [False]
        # publish never raises nor waits: what is published now is dropped, and counted.
        assert [sender.plane.publish("room", b"lost %d" % n) for n in range(5)] == [False] * 5
        assert sender.plane.stats.dropped == 5
        # A channel subscribed during the outage is subscribed on the broker's return.
        await reader.plane.subscribe("joined while down")
        await asyncio.sleep(0.5)  # several failed reconnection attempts: still one WARNING

        await asyncio.get_running_loop().run_in_executor(None, broker.start)
        back = time.monotonic()
        await eventually(
            lambda: sender.plane.connected and reader.plane.connected, timeout=RECONNECT_WITHIN
        )
        assert time.monotonic() - back <= RECONNECT_WITHIN
        assert sender.states == reader.states == [False, True]
        assert sender.plane.stats.reconnects == reader.plane.stats.reconnects == 1

        sender.plane.publish("room", b"after")
        sender.plane.publish("joined while down", b"new")
        await eventually(lambda: len(reader.got) == 3)
        assert reader.got[1:] == [("room", b"after"), ("joined while down", b"new")]
        # Once at WARNING and once at INFO per node, however many attempts failed.
        assert len(lines(caplog, logging.WARNING, broker.url)) == 2
        assert len(lines(caplog, logging.INFO, broker.url)) == 2
        await close(sender, reader)

    run(main(), timeout=20)


@each_broker
def test_a_second_outage_is_reported_like_the_first(
    kind: str, broker: Broker | None, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker is not None
    caplog.set_level(logging.INFO, logger="wirekit.backplane")

    async def main() -> None:
        sender, reader = await nodes(broker.url, 2)
        await reader.plane.subscribe("room")
        loop = asyncio.get_running_loop()
        for outage in range(2):
            await loop.run_in_executor(None, broker.kill)
            await eventually(lambda: not reader.plane.connected)
            await loop.run_in_executor(None, broker.start)
            await eventually(lambda: reader.plane.connected and sender.plane.connected)
            payload = b"after outage %d" % outage
            sender.plane.publish("room", payload)
            await eventually(lambda: ("room", payload) in reader.got)  # noqa: B023
        assert reader.states == [False, True, False, True]
        assert len(lines(caplog, logging.WARNING, broker.url)) == 4
        await close(sender, reader)

    run(main(), timeout=20)


@each_kind
def test_subscribing_again_at_once_after_unsubscribing_receives_again(
    kind: str, broker: Broker | None
) -> None:
    async def main() -> None:
        sender, reader = await nodes(url_of(kind, broker), 2)
        loop = asyncio.get_running_loop()
        # The three calls overlap: the broker must end up subscribed.
        first = loop.create_task(reader.plane.subscribe("room"))
        await asyncio.sleep(0)
        await reader.plane.unsubscribe("room")
        await reader.plane.subscribe("room")
        await first
        sender.plane.publish("room", b"again")
        await eventually(lambda: reader.got == [("room", b"again")])
        await close(sender, reader)

    run(main())


@each_broker
def test_publishes_to_a_stalled_broker_are_bounded_then_dropped(
    kind: str, broker: Broker | None
) -> None:
    assert broker is not None

    async def main() -> None:
        reader, sender = await nodes(broker.url, 2, max_queue=4)
        await reader.plane.subscribe("room")
        payload = b"x" * 64 * 1024
        broker.pause()  # reads nothing: the socket, then its buffer, then the queue fill up
        try:
            accepted = []
            for _ in range(512):  # 32 MiB, more than the kernel holds for a socket
                accepted.append(sender.plane.publish("room", payload))
                await asyncio.sleep(0)  # the writers run: only the broker is stuck
        finally:
            broker.resume()
        count = accepted.count(True)
        assert accepted == [True] * count + [False] * (512 - count)
        assert 4 <= count < 512
        assert sender.plane.stats.dropped == 512 - count
        # What was accepted arrives once the broker reads again.
        await eventually(lambda: len(reader.got) == count, timeout=20)
        await close(sender, reader)

    run(main(), timeout=40)


@pytest.mark.parametrize("direct_limit", [0, 256 * 1024], ids=["queued", "direct"])
@pytest.mark.parametrize(("kind", "broker"), [("nats", "nats")], indirect=["broker"])
def test_a_payload_over_the_nats_max_payload_is_dropped_and_the_link_stays_up(
    kind: str, broker: Broker | None, direct_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        url = url_of(kind, broker)
        sender, reader = await nodes(url, 2, direct_limit=direct_limit)
        await reader.plane.subscribe("room")
        huge = b"x" * (2 * 1024 * 1024)  # the server's default max_payload is 1 MiB
        assert not sender.plane.publish("room", huge)
        assert not sender.plane.publish("room", huge)
        assert sender.plane.publish("room", b"after")
        await eventually(lambda: reader.payloads("room") == [b"after"])
        assert sender.plane.connected
        assert sender.plane.stats.dropped == 2
        assert sender.plane.stats.published == 1
        await close(sender, reader)

    with caplog.at_level(logging.WARNING, logger="wirekit.backplane"):
        run(main())
    warned = [r.getMessage() for r in caplog.records if "max_payload" in r.getMessage()]
    assert len(warned) == 1, warned
