"""ReconnectingClient: backoff, the send queue while down, hooks, close; every stream transport."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import (
    STREAM_TRANSPORTS,
    TlsFiles,
    client_options,
    eventually,
    run,
    server_options,
    server_url,
    tls_files,
    within,
)

from framework.core.errors import ConfigError, EncodeError, TransportError
from framework.core.pipeline import Pipeline
from framework.runtime.app import App
from framework.runtime.connection import Connection, ConnectionClosed
from framework.runtime.reconnect import Backoff, ReconnectingClient, SendQueueFull
from framework.runtime.server import Server

__all__ = ["tls_files"]  # the fixture, imported for pytest

FAST = Backoff(initial=0.01, max_delay=0.05)


def recording_app() -> tuple[App, list[Any]]:
    """An echo server that also records every value it receives, in order."""
    app = App(Pipeline(framing="length-prefix", codecs="msgpack"))
    seen: list[Any] = []

    @app.on(object)
    def echo(value: Any, conn: Any) -> Any:
        seen.append(value)
        return value

    return app, seen


def same_address(server: Server) -> str:
    """The URL the server is bound to, port 0 resolved, to restart it on."""
    return server.url


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_values_sent_while_the_server_is_down_arrive_in_order_after_it_restarts(
    transport: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    app, seen = recording_app()
    events: list[str] = []

    async def main() -> None:
        url = server_url(transport, tmp_path)
        options = server_options(transport, tls_files)
        server = await app.start(url, **options)
        client = ReconnectingClient(
            server.url,
            app.pipeline,
            backoff=FAST,
            on_connect=lambda conn: events.append("connect"),
            on_disconnect=lambda conn: events.append("disconnect"),
            **client_options(transport, tls_files),
        )
        async with client:
            await within(client.wait_connected())
            await client.send("before")
            assert await within(client.receive()) == "before"

            await server.close()  # the server goes away...
            await eventually(lambda: not client.connected)
            for n in range(20):
                await client.send(n)  # ...so these wait in the queue
            assert client.pending == 20

            server = await app.start(same_address(server), **options)  # ...and comes back
            replies = [await within(client.receive()) for _ in range(20)]
            assert replies == list(range(20))
            assert seen == ["before", *range(20)]
            assert client.pending == 0
            assert client.stats.sent_from_queue == 20
            assert client.stats.connects == 2
            assert client.stats.disconnects == 1
        await server.close()
        assert events == ["connect", "disconnect", "connect", "disconnect"]

    run(main(), timeout=10)


def test_on_connect_runs_before_the_queue_is_flushed_so_it_can_resubscribe(
    tmp_path: Path,
) -> None:
    app, seen = recording_app()

    async def subscribe(conn: Connection) -> None:
        await conn.send("subscribe")

    async def main() -> None:
        # A Unix socket, not a TCP port: between the two servers another
        # test could be given the freed port, and the client would reach it.
        server = await app.start(f"unix://{tmp_path}/server.sock")
        async with ReconnectingClient(
            server.url, app.pipeline, backoff=FAST, on_connect=subscribe
        ) as client:
            await within(client.wait_connected())
            await server.close()
            await eventually(lambda: not client.connected)
            await client.send("queued")
            server = await app.start(server.url)
            await eventually(lambda: len(seen) == 3)
            assert seen == ["subscribe", "subscribe", "queued"]
        await server.close()

    run(main())


def test_backoff_schedule_with_a_seeded_rng_and_a_fake_sleep(tmp_path: Path) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    backoff = Backoff(initial=0.1, max_delay=1.0, multiplier=2.0, jitter=0.5, max_attempts=7)
    nowhere = f"unix://{tmp_path}/nobody-listens.sock"

    async def main() -> ReconnectingClient:
        client = ReconnectingClient(
            nowhere, Pipeline(), backoff=backoff, rng=random.Random(42), sleep=fake_sleep
        )
        client.start()
        with pytest.raises(ConnectionClosed) as info:
            await within(client.wait_connected())
        assert isinstance(info.value.__cause__, TransportError)
        assert client.closed
        with pytest.raises(ConnectionClosed):
            await client.send(b"too late")
        await client.close()
        return client

    client = run(main())
    assert client.stats.attempts == 7
    assert client.stats.connects == 0
    # Six waits between seven attempts, each in [d/2, d] for d = 0.1, 0.2, 0.4, 0.8, 1, 1.
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert len(slept) == len(ceilings)
    for wait, ceiling in zip(slept, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
    # The same seed gives the same schedule: a failure replays.
    again = backoff.delays(random.Random(42))
    assert slept == [next(again) for _ in ceilings]


def test_backoff_without_jitter_is_exactly_exponential_and_capped() -> None:
    delays = Backoff(initial=0.5, max_delay=3.0, multiplier=3.0, jitter=0).delays()
    assert [next(delays) for _ in range(5)] == [0.5, 1.5, 3.0, 3.0, 3.0]


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    delays = Backoff(initial=1.0, max_delay=8.0, jitter=1.0).delays(random.Random(7))
    waits = [next(delays) for _ in range(200)]
    assert all(0.0 <= wait <= 8.0 for wait in waits)
    assert len(set(waits)) == len(waits)  # actually random


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": -1}, "initial"),
        ({"max_delay": float("nan")}, "max_delay"),
        ({"initial": 2.0, "max_delay": 1.0}, "max_delay"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
    ],
)
def test_backoff_is_validated_naming_the_option(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        Backoff(**options)
    assert info.value.option == option


def test_full_queue_raises_by_default(tmp_path: Path) -> None:
    async def main() -> None:
        nowhere = f"unix://{tmp_path}/down.sock"
        async with ReconnectingClient(
            nowhere, Pipeline(codecs="msgpack"), backoff=FAST, max_pending=3
        ) as client:
            for n in range(3):
                await client.send(n)
            with pytest.raises(SendQueueFull, match="3 values already wait"):
                await client.send(3)
            assert client.pending == 3
            assert client.stats.dropped == 0

    run(main())


def test_full_queue_drops_the_oldest_when_asked_and_counts(tmp_path: Path) -> None:
    app, seen = recording_app()
    path = f"unix://{tmp_path}/later.sock"

    async def main() -> None:
        async with ReconnectingClient(
            path, app.pipeline, backoff=FAST, max_pending=3, when_full="drop-oldest"
        ) as client:
            for n in range(10):
                await client.send(n)
            assert client.pending == 3
            assert client.stats.dropped == 7
            server = await app.start(path)
            assert [await within(client.receive()) for _ in range(3)] == [7, 8, 9]
        await server.close()
        assert seen == [7, 8, 9]

    run(main())


def test_a_value_that_cannot_be_encoded_is_refused_before_it_is_queued(tmp_path: Path) -> None:
    async def main() -> None:
        nowhere = f"unix://{tmp_path}/down.sock"
        async with ReconnectingClient(nowhere, Pipeline(codecs="msgpack"), backoff=FAST) as client:
            with pytest.raises(EncodeError):
                await client.send(object())
            assert client.pending == 0

    run(main())


def test_close_stops_reconnecting(tmp_path: Path) -> None:
    attempts_after_close: list[int] = []

    async def main() -> None:
        client = ReconnectingClient(
            f"unix://{tmp_path}/never.sock", Pipeline(), backoff=FAST, timeout=1
        )
        client.start()
        await eventually(lambda: client.stats.attempts >= 3)
        await client.close()
        attempts = client.stats.attempts
        await asyncio.sleep(0.1)  # several backoff periods
        attempts_after_close.append(client.stats.attempts - attempts)
        assert client.closed
        with pytest.raises(ConnectionClosed):
            await client.receive()

    run(main())
    assert attempts_after_close == [0]


def test_close_closes_the_current_connection() -> None:
    app, _seen = recording_app()
    gone: list[Connection] = []
    app.on_disconnect(gone.append)

    async def main() -> None:
        async with await app.start("tcp://127.0.0.1:0") as server:
            client = ReconnectingClient(server.url, app.pipeline, backoff=FAST)
            conn = await within(client.wait_connected())
            await client.close()
            assert conn.closed
            await eventually(lambda: len(gone) == 1)
            assert not server.connections

    run(main())


def test_values_received_before_a_disconnect_can_still_be_read() -> None:
    app = App(Pipeline(codecs="msgpack"))

    @app.on(object)
    def burst_then_hang_up(value: Any, conn: Any) -> None:
        for n in range(5):
            conn.send_nowait(n)
        conn.close()

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        async with ReconnectingClient(server.url, app.pipeline, backoff=FAST) as client:
            await within(client.wait_connected())
            await client.send("go")
            assert [await within(client.receive()) for _ in range(5)] == list(range(5))
            await eventually(lambda: client.stats.connects == 2)  # and it came back
        await server.close()

    run(main())


def test_udp_is_refused_since_it_has_no_connection_to_lose() -> None:
    with pytest.raises(ConfigError, match="UDP"):
        ReconnectingClient("udp://127.0.0.1:9", Pipeline())


@pytest.mark.parametrize(
    ("options", "option"),
    [({"when_full": "block"}, "when_full"), ({"max_pending": 0}, "max_pending")],
)
def test_client_options_are_validated(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReconnectingClient("tcp://127.0.0.1:9", Pipeline(), **options)
    assert info.value.option == option
