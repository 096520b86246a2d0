"""The brokers' sockets are found with the installed redis-py and nats-py.

The backplanes write a publish to the broker's socket at once while nothing
waits; redis-py and nats-py keep that socket private, and
``framework/runtime/backplane/streams.py`` is the one place that reaches it.
If a library upgrade moves it, these tests fail, instead of every publish
quietly taking the slower queue.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers_runtime import run
from nats.aio.client import Client
from redis.asyncio.connection import Connection

from framework.runtime.backplane.streams import nats_stream, redis_stream
from tests.brokers import Broker, nats_broker, redis_broker

__all__ = ["nats_broker", "redis_broker"]

pytestmark = pytest.mark.timeout(30)


def test_redis_connection_has_a_stream_to_write_to(redis_broker: Broker) -> None:
    async def main() -> None:
        conn = Connection(host="127.0.0.1", port=redis_broker.port)
        assert redis_stream(conn) is None  # not connected yet
        await conn.connect()
        try:
            writer = redis_stream(conn)
            assert isinstance(writer, asyncio.StreamWriter)
            # The stream is the connection's own: a command written there is answered.
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            assert await conn.read_response() == b"PONG"
        finally:
            await conn.disconnect()

    run(main())


def test_nats_client_has_a_stream_to_write_to(nats_broker: Broker) -> None:
    async def main() -> None:
        sender, receiver = Client(), Client()
        assert nats_stream(sender) is None  # not connected yet
        await sender.connect(nats_broker.url, allow_reconnect=False)
        await receiver.connect(nats_broker.url, allow_reconnect=False)
        try:
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_message(msg: object) -> None:
                await got.put(msg.data)  # type: ignore[attr-defined]

            await receiver.subscribe("streams.check", cb=on_message)
            # nats-py's flush can write its PING ahead of the pending SUB: the
            # second one is answered only after the server has the SUB.
            await receiver.flush()
            await receiver.flush()
            writer = nats_stream(sender)
            assert isinstance(writer, asyncio.StreamWriter)
            writer.write(b"PUB streams.check 5\r\nhello\r\n")
            assert await asyncio.wait_for(got.get(), 5) == b"hello"
        finally:
            await sender.close()
            await receiver.close()

    run(main())
