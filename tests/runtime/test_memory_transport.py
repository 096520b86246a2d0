"""The in-memory transport behaves like a socket transport where a protocol can tell."""

from __future__ import annotations

import asyncio

import pytest
from helpers_runtime import memory_url, run

from framework.core.errors import TransportError
from framework.core.limits import MAX_UDP_PAYLOAD
from framework.runtime.transports import memory
from framework.runtime.transports.memory import MemoryTransport, memory_pair


class Recorder(asyncio.Protocol):
    """Records every callback in order."""

    def __init__(self, *, keep_open: bool = False) -> None:
        self.events: list[object] = []
        self.data = bytearray()
        self.transport: MemoryTransport | None = None
        self.keep_open = keep_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, MemoryTransport)
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.events.append(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc else None))

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_pair_connects_both_sides_now() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        assert client.events == ["made"]
        assert server.events == ["made"]
        assert client.transport is left
        assert server.transport is right
        assert left.get_protocol() is client
        assert left.get_extra_info("peername").startswith("memory://")
        assert left.get_extra_info("other", 42) == 42
        left.abort()
        await settle()

    run(main())


def test_delivery_is_asynchronous_and_ordered() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        left.write(b"one")
        left.write(bytearray(b"two"))
        left.write(memoryview(b"three"))
        left.write(b"")
        assert server.data == b""  # not delivered inside write()
        await settle()
        assert server.events == ["made", b"one", b"two", b"three"]
        right.write(b"back")
        await settle()
        assert client.data == b"back"
        left.abort()
        await settle()

    run(main())


def test_pause_reading_holds_data_until_resumed() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        right.pause_reading()
        assert not right.is_reading()
        left.write(b"held")
        await settle()
        assert server.data == b""
        right.resume_reading()
        assert right.is_reading()
        await settle()
        assert server.data == b"held"
        left.abort()
        await settle()

    run(main())


def test_a_writer_whose_peer_does_not_read_is_paused_then_resumed() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        left.set_write_buffer_limits(high=100, low=20)
        assert left.get_write_buffer_limits() == (20, 100)
        right.pause_reading()
        left.write(b"x" * 60)
        assert "pause_writing" not in client.events
        left.write(b"x" * 60)
        assert client.events[-1] == "pause_writing"
        assert left.get_write_buffer_size() == 120
        left.write(b"x" * 60)  # pause_writing is reported once
        assert client.events.count("pause_writing") == 1
        right.resume_reading()
        await settle()
        assert client.events[-1] == "resume_writing"
        assert left.get_write_buffer_size() == 0
        assert len(server.data) == 180
        left.abort()
        await settle()

    run(main())


def test_default_write_limits() -> None:
    async def main() -> None:
        left, _right = memory_pair(Recorder(), Recorder())
        assert left.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        left.set_write_buffer_limits(low=1000)
        assert left.get_write_buffer_limits() == (1000, 4000)
        left.set_write_buffer_limits(high=1000)
        assert left.get_write_buffer_limits() == (250, 1000)
        assert left.can_write_eof()
        left.abort()
        await settle()

    run(main())


def test_close_delivers_written_data_then_eof_then_lost() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        left.write(b"last words")
        left.close()
        assert left.is_closing()
        left.write(b"ignored after close")
        await settle()
        assert server.events == ["made", b"last words", "eof", ("lost", None)]
        assert client.events == ["made", ("lost", None)]
        assert right.is_closing()

    run(main())


def test_eof_kept_open_by_the_protocol() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder(keep_open=True)
        left, right = memory_pair(client, server)
        left.close()
        await settle()
        assert server.events == ["made", "eof"]
        assert not right.is_closing()
        right.close()
        await settle()
        assert server.events[-1] == ("lost", None)

    run(main())


def test_eof_waits_for_paused_reader() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, right = memory_pair(client, server)
        right.pause_reading()
        left.write(b"data")
        left.close()
        await settle()
        assert server.events == ["made"]
        right.resume_reading()
        await settle()
        assert server.events == ["made", b"data", "eof", ("lost", None)]

    run(main())


def test_abort_drops_data_and_resets_the_peer() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, _right = memory_pair(client, server)
        left.write(b"never delivered")
        left.abort()
        await settle()
        assert server.events == ["made", ("lost", "ConnectionResetError")]
        assert client.events == ["made", ("lost", None)]
        left.abort()  # idempotent
        left.close()
        await settle()
        assert client.events.count(("lost", None)) == 1

    run(main())


def test_listen_and_connect_by_name() -> None:
    async def main() -> None:
        name = memory_url().removeprefix("memory://")
        accepted: list[Recorder] = []

        def factory() -> Recorder:
            accepted.append(Recorder())
            return accepted[-1]

        listener = memory.listen(name, factory)
        with pytest.raises(TransportError, match="already in use"):
            memory.listen(name, factory)
        transport, client = memory.connect(name, Recorder)
        assert isinstance(client, Recorder)
        assert len(accepted) == 1
        transport.write(b"hi")
        await settle()
        assert accepted[0].data == b"hi"
        listener.close()
        await listener.wait_closed()
        with pytest.raises(TransportError, match="nothing listens"):
            memory.connect(name, Recorder)
        # The name is free again.
        memory.listen(name, factory).close()
        transport.abort()
        await settle()

    run(main())


class ClosesOnFirstChunk(Recorder):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.close()


def test_a_closing_end_reads_nothing_more() -> None:
    async def main() -> None:
        client, server = Recorder(), ClosesOnFirstChunk()
        left, _right = memory_pair(client, server)
        left.write(b"first")
        left.write(b"second")
        left.close()
        await settle()
        assert server.events == ["made", b"first", ("lost", None)]

    run(main())


def test_each_end_names_itself_and_its_peer() -> None:
    async def scenario() -> None:
        client, server = asyncio.Protocol(), asyncio.Protocol()
        left, right = memory_pair(client, server, name="names")
        assert left.get_extra_info("peername") == right.get_extra_info("sockname")
        assert right.get_extra_info("peername") == left.get_extra_info("sockname")
        assert left.get_extra_info("sockname") != right.get_extra_info("sockname")
        left.abort()

    asyncio.run(scenario())


def test_write_eof_half_closes_and_the_other_direction_goes_on() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder(keep_open=True)
        left, right = memory_pair(client, server)
        left.write(b"request")
        left.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            left.write(b"too late")
        await settle()
        assert server.events == ["made", b"request", "eof"]
        right.write(b"reply")
        await settle()
        assert client.data == b"reply"
        assert not left.is_closing()
        right.close()
        await settle()
        assert server.events[-1] == ("lost", None)
        assert client.events[-2:] == ["eof", ("lost", None)]

    run(main())


def test_write_eof_after_close_is_ignored() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        left, _right = memory_pair(client, server)
        left.close()
        left.write_eof()
        await settle()
        assert server.events == ["made", "eof", ("lost", None)]

    run(main())


def test_feed_reset_delivers_what_was_fed_then_loses_the_connection() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        _left, right = memory_pair(client, server)
        right.feed(b"partial")
        error = ConnectionResetError("reset by the test")
        right.feed_reset(error)
        assert right.is_closing()
        right.feed(b"after the reset")
        await settle()
        assert server.events == ["made", b"partial", ("lost", "ConnectionResetError")]

    run(main())


def test_a_reset_discards_what_a_paused_reader_has_not_read() -> None:
    async def main() -> None:
        client, server = Recorder(), Recorder()
        _left, right = memory_pair(client, server)
        right.pause_reading()
        right.feed(b"unread")
        right.feed_reset(ConnectionResetError("reset"))
        await settle()
        assert server.events == ["made", ("lost", "ConnectionResetError")]

    run(main())


# -- memory+udp ---------------------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.errors: list[Exception] = []
        self.lost = False

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def test_datagrams_go_whole_one_iteration_later_and_replies_find_the_sender() -> None:
    async def main() -> None:
        server_transport, server = memory.bind_datagrams("dgram-basic", Datagrams)
        client_transport, client = memory.open_datagrams("dgram-basic", Datagrams)
        assert isinstance(server, Datagrams)
        assert isinstance(client, Datagrams)
        assert server_transport.get_extra_info("sockname") == ("memory+udp://dgram-basic", 0)
        assert server_transport.get_extra_info("peername") is None
        client_address = client_transport.get_extra_info("sockname")
        assert client_transport.get_extra_info("peername") == ("memory+udp://dgram-basic", 0)
        client_transport.sendto(b"one")
        client_transport.sendto(bytearray(b"two"), ("memory+udp://dgram-basic", 0))
        client_transport.sendto(b"")  # UDP carries empty datagrams
        assert server.received == []
        await settle()
        assert server.received == [
            (b"one", client_address),
            (b"two", client_address),
            (b"", client_address),
        ]
        server_transport.sendto(b"back", client_address)
        await settle()
        assert client.received == [(b"back", ("memory+udp://dgram-basic", 0))]
        assert server_transport.get_write_buffer_size() == 0
        client_transport.close()
        server_transport.close()
        await settle()
        assert client.lost
        assert server.lost

    run(main())


def test_a_datagram_of_the_largest_udp_payload_arrives_whole() -> None:
    async def main() -> None:
        server_transport, server = memory.bind_datagrams("dgram-largest", Datagrams)
        client_transport, client = memory.open_datagrams("dgram-largest", Datagrams)
        assert isinstance(server, Datagrams)
        assert isinstance(client, Datagrams)
        client_transport.sendto(b"x" * MAX_UDP_PAYLOAD)
        client_transport.sendto(b"y" * (MAX_UDP_PAYLOAD + 1))
        await settle()
        assert [len(data) for data, _ in server.received] == [MAX_UDP_PAYLOAD]
        assert [type(e) for e in client.errors] == [OSError]
        client_transport.close()
        server_transport.close()

    run(main())


def test_datagram_errors_are_reported_like_a_socket_s() -> None:
    async def main() -> None:
        client_transport, client = memory.open_datagrams("dgram-nobody", Datagrams)
        assert isinstance(client, Datagrams)
        client_transport.sendto(b"x" * (memory.MAX_DATAGRAM_SIZE + 1))
        client_transport.sendto(b"to nobody")
        await settle()
        assert [type(e) for e in client.errors] == [OSError, ConnectionRefusedError]
        assert "too long" in str(client.errors[0])
        with pytest.raises(ValueError, match="must be None or"):
            client_transport.sendto(b"x", ("memory+udp://elsewhere", 0))
        with pytest.raises(ValueError, match="tuple"):
            client_transport.sendto(b"x", "memory+udp://dgram-nobody")
        server_transport, _server = memory.bind_datagrams("dgram-nobody", Datagrams)
        with pytest.raises(TransportError, match="already in use"):
            memory.bind_datagrams("dgram-nobody", Datagrams)
        with pytest.raises(ValueError, match="needs an address"):
            server_transport.sendto(b"x")
        # A reply to a client that has gone is lost silently, as over UDP.
        client_transport.close()
        server_transport.sendto(b"gone", client_transport.get_extra_info("sockname"))
        client_transport.sendto(b"after close")
        await settle()
        assert len(client.errors) == 2
        server_transport.abort()
        assert server_transport.is_closing()
        # The name is free again.
        memory.bind_datagrams("dgram-nobody", Datagrams)[0].close()

    run(main())
