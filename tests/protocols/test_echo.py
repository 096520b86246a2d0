"""The echo protocol sends back every value, nil included, in order."""

from __future__ import annotations

import pytest

from framework import BlockingClient, ServerThread
from protocols.echo import app


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_echoes_every_value_in_order_including_none(scheme: str) -> None:
    values = [1, None, "two", None, None, {"three": [3]}, b"\x00\x01"]
    with (
        ServerThread(app, f"{scheme}://127.0.0.1:0") as server,
        BlockingClient(server.url, app.pipeline, timeout=5) as client,
    ):
        for value in values:
            client.send(value)
        assert [client.receive() for _ in values] == values
