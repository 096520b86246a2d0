"""A group value is encoded once per pipeline, framed once per transport, whatever the room size."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from framework import App, Codec, Connection, Datagram, Pipeline, connect, message
from framework.core.security import HmacAuth
from tests.helpers_runtime import eventually, run, within


@message("say")
@attrs.frozen
class Say:
    text: str
    n: int


@attrs.frozen
class Counted(Codec):
    """The wire side of a stack, as it is: counts the values it encodes."""

    name: ClassVar[str] = "counted"
    encoded: list[bytes] = attrs.field(factory=list, eq=False)

    def encode(self, value: Any) -> bytes:
        self.encoded.append(value)
        return bytes(value)

    def decode(self, data: Any) -> bytes:
        return bytes(data)


def room(pipeline: Pipeline, hub: str) -> App:
    """Everyone joins "room" on connect; a Say is echoed (a UDP peer exists once it sent)."""
    app = App(pipeline, backplane=f"memory://{hub}", namespace="encoding")
    groups = app.groups  # what a copy made with with_pipeline shares

    @app.on_connect
    def enter(conn: Connection) -> None:
        verify = getattr(conn, "verify_address", None)
        if verify is not None:
            verify()  # loopback: a UDP peer may get more than it sent
        groups.join(conn, "room")

    @app.on(Say)
    def echo(value: Say, conn: Connection) -> Say:
        return value

    return app


def test_one_publish_reaches_tcp_udp_and_websocket_members_each_in_its_wire_encoded_once() -> None:
    async def main() -> None:
        binary, text = Counted(), Counted()
        # Two pipelines of one app (one node): msgpack under a length prefix,
        # served on TCP, UDP and WebSocket, and JSON lines on TCP.
        app = room(
            Pipeline(framing="length-prefix", codecs=(binary, "msgpack"), messages=[Say]), "mixed"
        )
        lines = app.with_pipeline(
            Pipeline(framing="newline", codecs=(text, "json"), messages=[Say])
        )
        servers = [
            await app.start("tcp://127.0.0.1:0"),
            await app.start("udp://127.0.0.1:0"),
            await app.start("ws://127.0.0.1:0"),
            await lines.start("tcp://127.0.0.1:0"),
        ]
        # The clients' pipelines write the same bytes, without the counters.
        plain = Pipeline(framing="length-prefix", codecs="msgpack", messages=[Say])
        json_lines = Pipeline(framing="newline", codecs="json", messages=[Say])
        kinds = [plain, plain, plain, json_lines]
        clients = []
        for server, pipeline in zip(servers, kinds, strict=True):
            for n in range(3):
                client = await connect(server.url, pipeline)
                await client.send(Say("hello", n))
                assert await within(client.receive()) == Say("hello", n)
                clients.append(client)
        await eventually(lambda: len(app.groups.local_members("room")) == 12)
        members = app.groups.local_members("room")
        before = [(m.stats.frames_out, m.stats.bytes_out) for m in members]
        binary.encoded.clear()
        text.encoded.clear()

        assert app.groups.publish("room", Say("to all", 7)) == 12
        for client in clients:
            assert await within(client.receive()) == Say("to all", 7)
        # The codec stack ran once per pipeline, not once per member or per transport.
        assert binary.encoded == [plain.encode_frame(Say("to all", 7))]
        assert text.encoded == [json_lines.encode_frame(Say("to all", 7))]
        # Each member counted one frame of its own wire form's size: a stream's
        # frame, a datagram, a WebSocket message (a 2-byte header here).
        value = Say("to all", 7)
        size = {
            ("tcp", app.pipeline): len(plain.encode(value)),
            ("udp", app.pipeline): len(plain.encode_frame(value)),
            ("ws", app.pipeline): len(plain.encode_frame(value)) + 2,
            ("tcp", lines.pipeline): len(json_lines.encode(value)),
        }
        for member, (frames, sent) in zip(members, before, strict=True):
            scheme = str(member.listener).partition(":")[0]
            assert member.stats.frames_out == frames + 1
            assert member.stats.bytes_out - sent == size[scheme, member.pipeline]
        stats = app.groups.stats
        assert (stats.delivered, stats.undeliverable, stats.dropped) == (12, 0, 0)
        for client in clients:
            client.close()
        for server in servers:
            await server.close()

    run(main())


def test_a_value_a_pipeline_cannot_encode_is_counted_once_and_the_others_still_get_it() -> None:
    async def main() -> None:
        app = room(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Say]), "typed")
        # JSON lines without the message class: a Say is nothing it can write.
        lines = app.with_pipeline(Pipeline(framing="newline", codecs="json"))
        typed = await app.start("tcp://127.0.0.1:0")
        untyped = await lines.start("tcp://127.0.0.1:0")
        ada = await connect(typed.url, app.pipeline)
        others = [await connect(untyped.url, lines.pipeline) for _ in range(3)]
        groups = app.groups
        await eventually(lambda: len(groups.local_members("room")) == 4)

        assert groups.publish("room", Say("typed", 1)) == 1
        assert await within(ada.receive()) == Say("typed", 1)
        assert (groups.stats.delivered, groups.stats.undeliverable) == (1, 1)
        # And a dict is nothing the typed pipeline can write: its member misses it.
        assert groups.publish("room", {"plain": 2}) == 3
        for conn in others:
            assert await within(conn.receive()) == {"plain": 2}
        assert (groups.stats.delivered, groups.stats.undeliverable) == (4, 2)
        for conn in (ada, *others):
            conn.close()
        await typed.close()
        await untyped.close()

    run(main())


def test_authenticated_udp_members_each_get_the_value_sealed_for_their_own_session() -> None:
    async def main() -> None:
        auth = HmacAuth({1: b"k" * 32})
        counted = Counted()
        served = Pipeline(codecs=(counted, "msgpack"), messages=[Say], datagram=Datagram(auth=auth))
        app = room(served, "sealed")
        udp = await app.start("udp://127.0.0.1:0")
        pipeline = Pipeline(codecs="msgpack", messages=[Say], datagram=Datagram(auth=auth))
        clients = [await connect(udp.url, pipeline) for _ in range(3)]
        for n, client in enumerate(clients):  # each its own session
            await client.send(Say("hello", n))
            assert await within(client.receive()) == Say("hello", n)
        counted.encoded.clear()

        assert app.groups.publish("room", Say("sealed", 3)) == 3
        for client in clients:  # a datagram sealed for another session would be dropped
            assert await within(client.receive()) == Say("sealed", 3)
        assert len(counted.encoded) == 1
        for client in clients:
            assert client.datagram_stats.dropped_unauthenticated == 0
            client.close()
        await udp.close()

    run(main())
