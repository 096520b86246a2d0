"""The WebSocket benchmark's load, run briefly against an in-process server: real echoes."""

from __future__ import annotations

import pytest

from benchmarks.websocket import pipelined
from framework import App, Pipeline
from framework.core.endpoints import parse_url
from framework.runtime.blocking import ServerThread


def _echo() -> App:
    app = App(Pipeline(codecs="bytes"))

    @app.on(bytes)
    def echo(value: bytes, conn: object) -> bytes:
        return value

    return app


def test_pipelined_load_counts_echoed_messages() -> None:
    with ServerThread(_echo(), "ws://127.0.0.1:0") as served:
        endpoint = parse_url(served.url)
        result = pipelined((endpoint.host, endpoint.port), size=40, window=512, seconds=0.3)
    assert result["messages"] > 0
    assert result["seconds"] >= 0.3


def test_a_server_that_does_not_echo_is_refused() -> None:
    app = App(Pipeline(codecs="bytes"))

    @app.on(bytes)
    def other(value: bytes, conn: object) -> bytes:
        return b"x" * len(value)

    with ServerThread(app, "ws://127.0.0.1:0") as served:
        endpoint = parse_url(served.url)
        with pytest.raises(AssertionError, match="not an echo"):
            pipelined((endpoint.host, endpoint.port), size=8, window=64, seconds=0.1)


def test_the_io_suite_websocket_scenario_checks_and_counts_real_echoes() -> None:
    import time

    from benchmarks.io_load import pipelined as io_pipelined
    from benchmarks.io_load import verify_echo
    from benchmarks.io_scenarios import build_scenarios

    (scenario,) = [s for s in build_scenarios() if s.key == "websocket"]
    assert scenario.load.shape == "ws-pipelined"
    with ServerThread(_echo(), "ws://127.0.0.1:0") as served:
        endpoint = parse_url(served.url)
        address = (endpoint.host, endpoint.port)
        verify_echo(address, scenario.load.shape, scenario.check)
        now = time.monotonic()
        counts = io_pipelined(address, scenario.load, (now + 0.1, now + 0.4))
    assert counts["messages"] > 0
