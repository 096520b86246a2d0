"""Injected faults: each one does what it says, replays from its seed, and costs no real time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers_runtime import echo_app, memory_url
from hypothesis import given, settings
from hypothesis import strategies as st

from framework import Pipeline
from framework.core.errors import ConfigError
from framework.core.limits import Limits
from framework.runtime import ConnectionClosed, connect
from framework.runtime.transports import memory
from framework.testing import (
    DatagramFaults,
    FaultStats,
    ScriptedPeer,
    StreamFaults,
    inject,
    run_virtual,
)
from framework.testing.faults import SEED_VARIABLE


class Recorder(asyncio.Protocol):
    """Records each read with the virtual time it arrived at."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reads: list[tuple[float, bytes]] = []
        self.eof_at: float | None = None
        self.lost: asyncio.Future[Exception | None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.paused: list[float] = []
        self.resumed: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append((self.loop.time(), data))

    def eof_received(self) -> bool:
        self.eof_at = self.loop.time()
        return True  # keep our side open: a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused.append(self.loop.time())

    def resume_writing(self) -> None:
        self.resumed.append(self.loop.time())

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.reads)


def name_of(url: str) -> str:
    return url.split("://", 1)[1]


async def pair(url: str) -> tuple[Recorder, Recorder]:
    """A client and a server Recorder connected through ``url``'s listener."""
    accepted: list[Recorder] = []

    def factory() -> Recorder:
        accepted.append(Recorder())
        return accepted[-1]

    memory.listen(name_of(url), factory)
    _transport, client = memory.connect(name_of(url), Recorder)
    assert isinstance(client, Recorder)
    return client, accepted[0]


def close_listener(url: str) -> None:
    listener = memory._listeners.get(name_of(url))
    if listener is not None:
        listener.close()


async def settle(seconds: float = 60.0) -> None:
    await asyncio.sleep(seconds)


# -- streams ------------------------------------------------------------------------------------


def test_segment_one_delivers_byte_by_byte_in_order() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=1, segment=1)) as faults:
            client, server = await pair(url)
            assert client.transport is not None
            client.transport.write(b"hello, world")
            await settle(1)
        assert [chunk for _, chunk in server.reads] == [bytes([b]) for b in b"hello, world"]
        assert faults.to_server.pieces == 12
        assert faults.to_server.bytes == 12
        assert faults.stats.connections == 2  # one link each way
        close_listener(url)

    run_virtual(main())


def test_segments_are_at_most_segment_bytes_and_vary_with_the_seed() -> None:
    async def cuts(seed: int) -> list[int]:
        url = memory_url()
        with inject(url, StreamFaults(seed=seed, segment=7)):
            client, server = await pair(url)
            assert client.transport is not None
            client.transport.write(bytes(range(200)))
            await settle(1)
        close_listener(url)
        assert server.data == bytes(range(200))
        return [len(chunk) for _, chunk in server.reads]

    async def main() -> None:
        first, again, other = await cuts(5), await cuts(5), await cuts(6)
        assert max(first) <= 7
        assert first == again  # the same seed cuts the same way
        assert first != other

    run_virtual(main())


def test_latency_and_bandwidth_delay_delivery_and_back_up_the_writer() -> None:
    async def main() -> None:
        url = memory_url()
        loop = asyncio.get_running_loop()
        with inject(url, StreamFaults(seed=1, latency=0.5, bandwidth=1000.0)):
            client, server = await pair(url)
            transport = client.transport
            assert transport is not None
            transport.set_write_buffer_limits(high=3000, low=1500)
            start = loop.time()
            for _ in range(3):  # three seconds of sending at 1000 B/s
                transport.write(b"x" * 1000)
                assert client.paused == []  # a write is taken whole, not refused
            assert transport.get_write_buffer_size() == 3000
            transport.write(b"y")
            assert client.paused == [start]  # past the high-water mark
            await settle(10)
        assert server.data == b"x" * 3000 + b"y"
        arrivals = [when - start for when, _ in server.reads]
        assert arrivals == pytest.approx([1.5, 2.5, 3.5, 3.501])
        # Writing resumes once the backlog is under the low-water mark.
        assert client.resumed
        assert client.resumed[0] - start == pytest.approx(2.5)
        assert transport.get_write_buffer_size() == 0
        close_listener(url)

    run_virtual(main())


def test_stalls_pause_delivery_for_stall_for_seconds() -> None:
    async def main() -> None:
        url = memory_url()
        loop = asyncio.get_running_loop()
        with inject(url, StreamFaults(seed=2, segment=1, stalls=1.0, stall_for=5.0)) as faults:
            client, server = await pair(url)
            assert client.transport is not None
            start = loop.time()
            client.transport.write(b"abc")
            await settle(60)
        assert [when - start for when, _ in server.reads] == [5.0, 10.0, 15.0]
        assert faults.to_server.stalls == 3
        close_listener(url)

    run_virtual(main())


def test_eof_after_ends_the_stream_mid_write_and_keeps_the_other_direction() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=1, direction="to_server", eof_after=5)) as faults:
            client, server = await pair(url)
            assert client.transport is not None
            assert server.transport is not None
            client.transport.write(b"0123456789")
            await settle(1)
            client.transport.write(b"more")  # lost: that direction has ended
            server.transport.write(b"still here")  # the other direction is open
            await settle(1)
        assert server.data == b"01234"
        assert server.eof_at is not None
        assert client.data == b"still here"
        assert faults.to_server.eofs == 1
        assert faults.to_server.discarded == 5 + 4
        close_listener(url)

    run_virtual(main())


def test_reset_after_resets_both_ends_after_exactly_n_bytes() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=9, direction="to_server", reset_after=7)) as faults:
            client, server = await pair(url)
            assert client.transport is not None
            client.transport.write(b"0123")
            client.transport.write(b"456789")
            server_error = await server.lost
            client_error = await client.lost
        assert server.data == b"0123456"
        for error in (server_error, client_error):
            assert isinstance(error, ConnectionResetError)
            assert "after 7 bytes" in str(error)
            assert "seed=9" in str(error)  # the message says how to replay it
        assert faults.to_server.resets == 1
        assert client.transport.is_closing()
        close_listener(url)

    run_virtual(main())


def test_direction_limits_faults_to_one_way() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=1, direction="to_client", segment=1)) as faults:
            client, server = await pair(url)
            assert client.transport is not None
            assert server.transport is not None
            client.transport.write(b"whole")
            server.transport.write(b"cut")
            await settle(1)
        assert [chunk for _, chunk in server.reads] == [b"whole"]
        assert [chunk for _, chunk in client.reads] == [b"c", b"u", b"t"]
        assert faults.to_server == FaultStats()
        assert faults.to_client.connections == 1
        close_listener(url)

    run_virtual(main())


def test_close_waits_for_the_link_to_deliver_then_the_peer_sees_eof() -> None:
    async def main() -> None:
        url = memory_url()
        loop = asyncio.get_running_loop()
        with inject(url, StreamFaults(seed=1, latency=2.0)):
            client, server = await pair(url)
            assert client.transport is not None
            client.transport.write(b"bye")
            client.transport.close()
            await client.lost
            lost_at = loop.time()
            await settle(1)
        assert lost_at == 2.0  # like a socket: gone once what it wrote has left
        assert server.data == b"bye"
        assert server.eof_at == 2.0
        close_listener(url)

    run_virtual(main())


def test_connections_keep_the_links_they_were_made_with() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=1, segment=1)):
            faulty_client, faulty_server = await pair(url)
        close_listener(url)
        plain_client, plain_server = await pair(url)
        for client in (faulty_client, plain_client):
            assert client.transport is not None
            client.transport.write(b"abcd")
        await settle(1)
        assert len(faulty_server.reads) == 4
        assert [chunk for _, chunk in plain_server.reads] == [b"abcd"]
        close_listener(url)

    run_virtual(main())


frames = st.lists(st.binary(max_size=300), max_size=12)


@settings(max_examples=40)
@given(
    values=frames,
    seed=st.integers(0, 2**32 - 1),
    segment=st.integers(1, 64),
    stalls=st.sampled_from([0.0, 0.1, 0.5]),
    latency=st.sampled_from([0.0, 0.25]),
)
def test_an_echo_server_returns_every_frame_in_order_whatever_the_faults(
    values: list[bytes], seed: int, segment: int, stalls: float, latency: float
) -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="bytes")

    async def main() -> list[Any]:
        url = memory_url()
        spec = StreamFaults(
            seed=seed, segment=segment, stalls=stalls, stall_for=1.0, latency=latency
        )
        # Byte by byte with a stall every other byte, a frame can take longer
        # than frame_timeout allows; cutting such a peer off is tested elsewhere.
        limits = Limits(frame_timeout=None)
        with inject(url, spec):
            server = await echo_app(pipeline).start(url, limits=limits)
            try:
                async with connect(url, pipeline) as conn:
                    for value in values:
                        await conn.send(value)
                    return [await asyncio.wait_for(conn.receive(), 10_000) for _ in values]
            finally:
                await server.close()

    assert run_virtual(main()) == values


def test_a_failure_inside_the_block_names_the_seed() -> None:
    with (
        pytest.raises(AssertionError) as caught,
        inject("memory://notes", StreamFaults(seed=4242, segment=3)),
    ):
        raise AssertionError("the test failed")
    notes = getattr(caught.value, "__notes__", [])
    assert any("seed=4242" in note and "segment=3" in note for note in notes), notes


def test_without_a_seed_one_is_drawn_or_taken_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SEED_VARIABLE, raising=False)
    drawn = inject("memory://x", StreamFaults(segment=1)).faults[0].seed
    assert isinstance(drawn, int)
    monkeypatch.setenv(SEED_VARIABLE, "1234")
    injection = inject("memory://x", StreamFaults(segment=1, direction="to_server"))
    assert injection.faults == (StreamFaults(seed=1234, segment=1, direction="to_server"),)
    monkeypatch.setenv(SEED_VARIABLE, "not a number")
    with pytest.raises(ConfigError, match=SEED_VARIABLE):
        inject("memory://x", StreamFaults())


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: StreamFaults(segment=0), "segment"),
        (lambda: StreamFaults(latency=-1), "latency"),
        (lambda: StreamFaults(bandwidth=0), "bandwidth"),
        (lambda: StreamFaults(stalls=1.5), "stalls"),
        (lambda: StreamFaults(reset_after=-1), "reset_after"),
        (lambda: StreamFaults(eof_after=1.5), "eof_after"),
        (lambda: StreamFaults(direction="up"), "direction"),
        (lambda: StreamFaults(seed="7"), "seed"),
        (lambda: DatagramFaults(drop=2), "drop"),
        (lambda: DatagramFaults(duplicate=float("nan")), "duplicate"),
        (lambda: DatagramFaults(jitter=-0.1), "jitter"),
    ],
)
def test_bad_options_name_themselves(make: Any, option: str) -> None:
    with pytest.raises(ConfigError, match=option) as caught:
        make()
    assert caught.value.option == option


def test_faults_must_fit_the_endpoint() -> None:
    with pytest.raises(ConfigError, match="memory://, memory\\+ws:// and memory\\+udp://"):
        inject("tcp://127.0.0.1:0", StreamFaults())
    with pytest.raises(ConfigError, match="takes StreamFaults"):
        inject("memory+ws://x", DatagramFaults())
    with pytest.raises(ConfigError, match="takes StreamFaults"):
        inject("memory://x", DatagramFaults())
    with pytest.raises(ConfigError, match="takes DatagramFaults"):
        inject("memory+udp://x", StreamFaults())
    with pytest.raises(ConfigError, match="at least one"):
        inject("memory://x")
    with pytest.raises(ConfigError, match="two faults given for to_server"):
        inject("memory://x", StreamFaults(), StreamFaults(direction="to_server"))
    with inject("memory://nested", StreamFaults()):  # noqa: SIM117 - nesting is the point
        with pytest.raises(ConfigError, match="already has links"):
            with inject("memory://nested", StreamFaults()):
                pass
    # Each direction may have its own faults.
    both = inject(
        "memory://x", StreamFaults(direction="to_server"), StreamFaults(direction="to_client")
    )
    assert len(both.faults) == 2
    assert "seed=" in repr(both)


# -- datagrams ----------------------------------------------------------------------------------


class Sink(asyncio.DatagramProtocol):
    """A datagram protocol that records what arrives, and when."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.arrived: list[tuple[float, bytes]] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.arrived.append((self.loop.time(), data))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def datagram_pair(url: str) -> tuple[Any, Sink, Sink]:
    """A bound server Sink and a client transport (with its Sink) connected to it."""
    server_transport, server = memory.bind_datagrams(name_of(url), Sink)
    client_transport, client = memory.open_datagrams(name_of(url), Sink)
    assert isinstance(server, Sink)
    assert isinstance(client, Sink)
    return (client_transport, server_transport), server, client


def numbered(count: int) -> list[bytes]:
    return [n.to_bytes(4, "big") for n in range(count)]


def test_drop_loses_datagrams_and_counts_them() -> None:
    async def main() -> None:
        url = "memory+udp://drop-test"
        with inject(url, DatagramFaults(seed=3, drop=0.3)) as faults:
            (client, server_transport), server, _ = await datagram_pair(url)
            for data in numbered(1000):
                client.sendto(data)
            await settle(1)
        stats = faults.to_server
        assert stats.sent == 1000
        assert 200 < stats.dropped < 400
        assert stats.delivered == len(server.arrived) == 1000 - stats.dropped
        # What arrives is in order and unchanged: only drops were asked for.
        got = [data for _, data in server.arrived]
        assert got == sorted(got)
        assert set(got) <= set(numbered(1000))
        client.close()
        server_transport.close()

    run_virtual(main())


def test_duplicate_delivers_twice() -> None:
    async def main() -> None:
        url = "memory+udp://dup-test"
        with inject(url, DatagramFaults(seed=3, duplicate=1.0)) as faults:
            (client, server_transport), server, _ = await datagram_pair(url)
            for data in numbered(5):
                client.sendto(data)
            await settle(1)
        assert [data for _, data in server.arrived] == [d for d in numbered(5) for _ in (0, 1)]
        assert faults.to_server.duplicated == 5
        assert faults.to_server.delivered == 10
        client.close()
        server_transport.close()

    run_virtual(main())


def test_reorder_lets_the_next_datagram_go_first() -> None:
    async def main() -> None:
        url = "memory+udp://reorder-test"
        with inject(url, DatagramFaults(seed=11, reorder=0.3)) as faults:
            (client, server_transport), server, _ = await datagram_pair(url)
            for data in numbered(500):
                client.sendto(data)
                await asyncio.sleep(0.01)
            await settle(5)
        got = [int.from_bytes(data, "big") for _, data in server.arrived]
        assert sorted(got) == list(range(500))  # nothing lost, nothing repeated
        late = sum(1 for i, n in enumerate(got) if n < max(got[: i + 1]))
        assert late == faults.to_server.reordered > 50
        client.close()
        server_transport.close()

    run_virtual(main())


def test_a_held_datagram_with_no_successor_is_released_after_reorder_wait() -> None:
    async def main() -> None:
        url = "memory+udp://hold-test"
        loop = asyncio.get_running_loop()
        with inject(url, DatagramFaults(seed=1, reorder=1.0, reorder_wait=3.0)) as faults:
            (client, server_transport), server, _ = await datagram_pair(url)
            start = loop.time()
            client.sendto(b"alone")
            await settle(10)
        assert [(when - start, data) for when, data in server.arrived] == [(3.0, b"alone")]
        assert faults.to_server.reordered == 0  # late, but nothing overtook it
        client.close()
        server_transport.close()

    run_virtual(main())


def test_truncate_cuts_datagrams_short() -> None:
    async def main() -> None:
        url = "memory+udp://truncate-test"
        with inject(url, DatagramFaults(seed=5, truncate=1.0)) as faults:
            (client, server_transport), server, _ = await datagram_pair(url)
            for _ in range(50):
                client.sendto(b"0123456789")
            await settle(1)
        assert len(server.arrived) == 50
        assert all(len(data) < 10 and b"0123456789".startswith(data) for _, data in server.arrived)
        assert faults.to_server.truncated == 50
        client.close()
        server_transport.close()

    run_virtual(main())


def test_delay_and_jitter_set_the_arrival_time() -> None:
    async def main() -> None:
        url = "memory+udp://delay-test"
        loop = asyncio.get_running_loop()
        with inject(url, DatagramFaults(seed=5, delay=2.0, jitter=0.5, direction="to_client")):
            (client, server_transport), server, client_sink = await datagram_pair(url)
            start = loop.time()
            client.sendto(b"up")
            for _ in range(100):
                server_transport.sendto(b"down", client.get_extra_info("sockname"))
            await settle(10)
        assert [when - start for when, _ in server.arrived] == [0.0]
        delays = [when - start for when, _ in client_sink.arrived]
        assert len(delays) == 100
        assert all(2.0 <= d <= 2.5 for d in delays)
        assert len(set(delays)) > 50  # jittered
        client.close()
        server_transport.close()

    run_virtual(main())


def test_the_same_seed_replays_the_same_datagram_faults() -> None:
    async def once(seed: int) -> list[bytes]:
        url = f"memory+udp://replay-{seed}"
        spec = DatagramFaults(seed=seed, drop=0.2, duplicate=0.2, reorder=0.2, truncate=0.1)
        with inject(url, spec):
            (client, server_transport), server, _ = await datagram_pair(url)
            for data in numbered(200):
                client.sendto(data)
                await asyncio.sleep(0.001)
            await settle(5)
        client.close()
        server_transport.close()
        await asyncio.sleep(0)
        return [data for _, data in server.arrived]

    async def main() -> None:
        first = await once(77)
        assert first == await once(77)
        assert first != await once(78)

    run_virtual(main())


probabilities = st.sampled_from([0.0, 0.1, 0.5, 1.0])


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=probabilities,
    duplicate=probabilities,
    reorder=probabilities,
    truncate=probabilities,
    jitter=st.sampled_from([0.0, 0.05]),
    gap=st.sampled_from([0.0, 0.01]),
)
def test_datagram_faults_account_for_every_datagram(
    seed: int,
    drop: float,
    duplicate: float,
    reorder: float,
    truncate: float,
    jitter: float,
    gap: float,
) -> None:
    spec = DatagramFaults(
        seed=seed,
        drop=drop,
        duplicate=duplicate,
        reorder=reorder,
        truncate=truncate,
        jitter=jitter,
        direction="to_server",
    )
    sent = [n.to_bytes(2, "big") * 4 for n in range(60)]

    async def main() -> tuple[list[bytes], FaultStats]:
        url = "memory+udp://property"
        with inject(url, spec) as injected:
            (client, server_transport), server, _ = await datagram_pair(url)
            for data in sent:
                client.sendto(data)
                if gap:
                    await asyncio.sleep(gap)
            await settle(10)
        client.close()
        server_transport.close()
        return [data for _, data in server.arrived], injected.to_server

    arrived, stats = run_virtual(main())
    assert stats.sent == len(sent)
    assert stats.delivered == len(arrived) == len(sent) - stats.dropped + stats.duplicated
    # Every arrival is a datagram that was sent, whole or (if truncated) cut short.
    for data in arrived:
        assert any(original.startswith(data) for original in sent), data
    if not truncate:
        assert set(arrived) <= set(sent)
        # Each datagram arrives once, twice if duplicated, never more.
        assert all(arrived.count(data) <= 2 for data in set(arrived))
        numbers = [sent.index(data) for data in arrived]
        late = sum(1 for i, n in enumerate(numbers) if n < max(numbers[: i + 1]))
        assert late == stats.reordered
    if not (drop or duplicate or reorder or truncate or jitter):
        assert arrived == sent


# -- the scripted peer ----------------------------------------------------------------------------


def test_a_scripted_peer_trickles_and_half_closes() -> None:
    pipeline = Pipeline(framing="length-prefix", codecs="bytes")

    async def main() -> None:
        url = memory_url()
        loop = asyncio.get_running_loop()
        server = await echo_app(pipeline).start(url)
        async with await ScriptedPeer.connect(url) as peer:
            wire = pipeline.encode(b"abc")
            start = loop.time()
            assert await peer.trickle(wire, every=2.0) == len(wire)
            assert loop.time() - start == 2.0 * (len(wire) - 1)
            peer.write_eof()  # done sending; the reply still comes
            assert await peer.receive(len(wire)) == wire
            # The server closes after our EOF: with both directions over, so do we.
            assert await asyncio.wait_for(peer.wait_closed(), 60) is None
            assert peer.closed_at is not None
            with pytest.raises(ConnectionClosed, match="closed after 7 of 100 bytes"):
                await peer.receive(100)
            assert await peer.trickle(b"late", every=1.0) == 0
        await server.close()

    run_virtual(main())


def test_a_scripted_peer_closes_when_the_server_ends_its_side_unless_kept_open() -> None:
    async def main() -> None:
        url = memory_url()
        servers: list[Recorder] = []
        memory.listen(name_of(url), lambda: servers.append(Recorder()) or servers[-1])
        loop = asyncio.get_running_loop()
        plain = await ScriptedPeer.connect(url)
        half = await ScriptedPeer.connect(url, keep_open=True)
        await settle(1)
        for server in servers:
            assert server.transport is not None
            server.transport.write(b"bye")
            server.transport.write_eof()
        await settle(1)
        assert await plain.wait_closed() is None
        assert plain.eof_at == plain.closed_at == 1.0
        assert half.eof_at == 1.0
        assert not half.closed
        half.write(b"still talking")  # the server reads on after its own EOF
        await settle(1)
        assert servers[1].data == b"still talking"
        assert bytes(half.received) == bytes(plain.received) == b"bye"
        half.write_eof()  # both sides done: the peer closes
        assert await half.wait_closed() is None
        assert half.closed_at == loop.time()
        close_listener(url)

    run_virtual(main())


def test_a_scripted_peer_sees_a_reset() -> None:
    async def main() -> None:
        url = memory_url()
        with inject(url, StreamFaults(seed=1, direction="to_server", reset_after=3)):
            memory.listen(name_of(url), Recorder)
            peer = await ScriptedPeer.connect(url)
            assert await peer.trickle(b"abcdef", every=1.0, size=2) == 4
        assert isinstance(await peer.wait_closed(), ConnectionResetError)
        with pytest.raises(ValueError, match="size"):
            await peer.trickle(b"x", every=1.0, size=0)
        close_listener(url)

    run_virtual(main())
