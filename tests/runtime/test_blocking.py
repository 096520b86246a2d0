"""The blocking facade: a client and a server usable from plain threads."""

from __future__ import annotations

import attrs
import pytest

from framework import Pipeline, message
from framework.runtime.app import App
from framework.runtime.blocking import BlockingClient, ServerThread


@message("position")
@attrs.frozen
class Position:
    x: float
    y: float
    z: float
    count: int


def make_app() -> App:
    app = App(Pipeline(codecs="msgpack", messages=[Position]))

    @app.on(Position)
    def moved(msg: Position, conn: object) -> Position:
        return attrs.evolve(msg, count=msg.count + 1)

    return app


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_blocking_client_request_reply(scheme: str) -> None:
    app = make_app()
    with (
        ServerThread(app, f"{scheme}://127.0.0.1:0") as server,
        BlockingClient(server.url, app.pipeline, timeout=5) as client,
    ):
        for count in range(5):
            assert client.request(Position(1.0, 2.0, 3.0, count)) == Position(
                1.0, 2.0, 3.0, count + 1
            )


def test_receive_times_out_when_nothing_arrives() -> None:
    app = make_app()
    with (
        ServerThread(app, "tcp://127.0.0.1:0") as server,
        BlockingClient(server.url, app.pipeline) as client,
        pytest.raises(TimeoutError),
    ):
        client.receive(timeout=0.1)


def test_connecting_to_nothing_raises_and_leaves_no_thread() -> None:
    import threading

    from framework import TransportError

    before = threading.active_count()
    with ServerThread(make_app(), "tcp://127.0.0.1:0") as server:
        url = server.url
    with pytest.raises(TransportError):
        BlockingClient(url, Pipeline())
    assert threading.active_count() == before


def test_a_timed_out_receive_never_loses_a_value() -> None:
    app = App(Pipeline(framing="newline", codecs="utf-8"))

    @app.on(str)
    def burst(line: str, conn: object) -> None:
        for n in range(int(line)):
            conn.send_nowait(str(n))  # type: ignore[attr-defined]

    with (
        ServerThread(app, "tcp://127.0.0.1:0") as server,
        BlockingClient(server.url, app.pipeline) as client,
    ):
        client.send("500")
        received: list[str] = []
        while len(received) < 500:
            try:
                received.append(client.receive(timeout=1e-5))
            except TimeoutError:
                continue
        assert received == [str(n) for n in range(500)]
