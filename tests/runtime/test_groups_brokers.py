"""Groups across two nodes on a real Redis and a real NATS: a member that stops reading.

Two apps in one process, each with its own broker connection, are two
nodes. A member of node two that never reads must not hold up the
backplane's reader on node two nor the other members: it misses values
(counted), the others get every one, in order.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from framework import App, Connection, Pipeline, connect
from framework.core.limits import Limits
from tests.brokers import Broker, nats_broker, redis_broker
from tests.helpers_runtime import eventually, run

__all__ = ["nats_broker", "redis_broker"]  # the fixtures, for getfixturevalue

# 8 MB in all: more than the kernel buffers a socket that is not read.
LINES = 4000
LINE = "x" * 2000


def read_lines(sock: socket.socket, count: int) -> list[str]:
    """The first ``count`` lines a blocking socket receives."""
    sock.settimeout(20)
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(1 << 20)
        assert chunk, "the reader was disconnected"
        data += chunk
    return data.decode().split("\n")[:count]


def room_app(url: str) -> App:
    app = App(Pipeline(framing="newline", codecs=["utf-8"]), backplane=url, namespace="slow")
    groups = app.groups

    @app.on_connect
    def enter(conn: Connection) -> None:
        groups.join(conn, "room", when_full="drop")

    @app.on(str)
    def said(text: str, conn: Connection) -> None:
        groups.publish("room", text, exclude=conn)

    return app


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Broker:
    broker: Broker = request.getfixturevalue(f"{request.param}_broker")
    return broker


def test_a_member_that_stops_reading_holds_up_nobody(broker: Broker) -> None:
    async def main() -> None:
        one, two = room_app(broker.url), room_app(broker.url)
        # A small write buffer: the stuck member's share fills up quickly.
        limits = Limits(write_high_water=16 * 1024, write_low_water=4 * 1024)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        # Closed after the servers: still stuck while they shut down.
        with stuck:
            async with (
                await one.start("tcp://127.0.0.1:0") as first,
                await two.start("tcp://127.0.0.1:0", limits=limits) as second,
            ):
                await asyncio.get_running_loop().sock_connect(
                    stuck, ("127.0.0.1", second.endpoint.port)
                )
                # The member that reads does so in a thread of its own, as a
                # client on another machine would: not at the mercy of the
                # servers' loop, only of its socket.
                reader = socket.create_connection(("127.0.0.1", second.endpoint.port))
                sender = await connect(first.url, one.pipeline)
                # Each node lists the other's members once it is subscribed to the room.
                await eventually(lambda: len(one.groups.members("room")) == 3)
                await eventually(lambda: len(two.groups.members("room")) == 3)
                reading = asyncio.create_task(asyncio.to_thread(read_lines, reader, LINES))
                for n in range(LINES):
                    await sender.send(f"{n} {LINE}")
                got = await asyncio.wait_for(reading, 20)
                # The member that reads gets every line, in order.
                assert [int(line.split()[0]) for line in got] == list(range(LINES))
                # The one that does not missed lines, counted, and held no one up.
                assert two.groups.stats.dropped > 0
                (slow,) = [m for m in two.groups.local_members("room") if two.groups.dropped(m)]
                assert two.groups.dropped(slow) == two.groups.stats.dropped
                slow.abort()  # or the shutdown would wait for it to read
                assert two.groups.backplane is not None
                assert two.groups.backplane.stats.dropped == 0
                sender.close()
                reader.close()

    run(main(), timeout=40)


def redis_publishes(port: int) -> int:
    """How many PUBLISH commands the Redis on ``port`` has run (INFO commandstats)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, _, data = data.partition(b"\r\n")
        while len(data) < int(header[1:]):
            data += sock.recv(65536)
    match = re.search(rb"cmdstat_publish:calls=(\d+)", data)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("members", [2, 40])
def test_a_publish_is_one_broker_command_whatever_the_room_size(
    redis_broker: Broker, members: int
) -> None:
    lines = 100

    async def main() -> None:
        one, two = room_app(redis_broker.url), room_app(redis_broker.url)
        async with (
            await one.start("tcp://127.0.0.1:0") as first,
            await two.start("tcp://127.0.0.1:0") as second,
        ):
            sender = await connect(first.url, one.pipeline)
            # The room's members, half on each node.
            room = [
                await connect((first if n % 2 else second).url, one.pipeline)
                for n in range(members)
            ]
            await eventually(lambda: len(one.groups.members("room")) == members + 1)
            await eventually(lambda: len(two.groups.members("room")) == members + 1)
            before = redis_publishes(redis_broker.port)
            for n in range(lines):
                await sender.send(f"line {n}")
            for member in room:
                for n in range(lines):
                    assert await member.receive() == f"line {n}"
            published = redis_publishes(redis_broker.port) - before
            # One PUBLISH per line; presence refreshes may add a few, never one per member.
            assert lines <= published <= lines + 4
            for conn in [sender, *room]:
                conn.close()

    run(main(), timeout=30)
