"""The transport side: every adapter implements all of it, and leaving a method out fails."""

from __future__ import annotations

import inspect

import pytest
from helpers_runtime import run

from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.runtime.adapter import TransportSide
from framework.runtime.connection import Connection
from framework.runtime.datagram import DatagramPeer, TimedDatagramPeer
from framework.runtime.datagram_client import DatagramClient
from framework.runtime.stream import StreamConnection, TimedStreamConnection
from framework.runtime.websocket import TimedWebSocketConnection, WebSocketConnection

pytestmark = pytest.mark.timeout(10)

ADAPTERS = [
    StreamConnection,
    TimedStreamConnection,
    WebSocketConnection,
    TimedWebSocketConnection,
    DatagramPeer,
    TimedDatagramPeer,
    DatagramClient,
]
REQUIRED = sorted(TransportSide.__abstractmethods__)


def test_the_protocol_names_what_the_dispatch_asks_of_a_transport() -> None:
    assert {"close", "abort", "_write_values", "_closing", "_pause_reading"} <= set(REQUIRED)
    assert TransportSide in Connection.__mro__
    assert set(REQUIRED) <= Connection.__abstractmethods__


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda cls: cls.__name__)
def test_every_adapter_implements_every_method_of_the_transport_side(adapter: type) -> None:
    assert not inspect.isabstract(adapter)
    for name in REQUIRED:
        # Each comes from the adapter's own code, not from the protocol's declaration.
        owner = next(cls for cls in adapter.__mro__ if name in vars(cls))
        assert owner not in (TransportSide, Connection), (adapter, name)
        assert not getattr(getattr(adapter, name), "__isabstractmethod__", False)


def test_an_adapter_that_leaves_a_method_out_cannot_be_made() -> None:
    class Partial(Connection):
        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    async def make() -> None:
        Partial(Pipeline(), router=None, limits=Limits())  # type: ignore[abstract]

    with pytest.raises(TypeError, match="_write_values"):
        run(make())
