"""``wirekit top`` against endpoints that answer anything but metrics: one line, no traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from framework.cli.top import Scrape, fetch
from framework.core.errors import TransportError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
OK = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"


class FakeEndpoint:
    """A server on 127.0.0.1 port 0: reads a request, answers ``reply`` bytes, closes."""

    def __init__(self) -> None:
        self.reply = b""
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.url = f"http://{self.address}/metrics"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(TIMEOUT)
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # the request: answered whatever it is
                    conn.sendall(self.reply)

    def close(self) -> None:
        # shutdown() wakes the accept() of the serving thread on Linux.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


NOT_PROMETHEUS = {
    "not HTTP": b"SSH-2.0-OpenSSH_9.2\r\n",
    "an HTML page": OK + b"<html><body>hello</body></html>",
    "not UTF-8": OK + b"\xff\xfe",
    "a cut body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nwirekit_",
    "a bad sample": OK + b'wirekit_frames_received_total{listener="x"} many\n',
}


@pytest.mark.parametrize("reply", NOT_PROMETHEUS.values(), ids=NOT_PROMETHEUS.keys())
def test_top_says_in_one_line_that_the_endpoint_is_not_a_metrics_endpoint(
    endpoint: FakeEndpoint, reply: bytes
) -> None:
    endpoint.reply = reply
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "top", endpoint.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        _out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1  # as when nothing answers
    prefix = f"wirekit: error: {endpoint.url} does not answer with Prometheus metrics ("
    assert err.startswith(prefix), err
    assert err.count("\n") == 1, err


# Bytes from the server: anything at all, anything after a 200 status line,
# and text made of the Prometheus format's own pieces.
TOKENS = st.sampled_from(
    [
        "wirekit_frames_received_total",
        "wirekit_handler_duration_seconds_bucket",
        "# TYPE ",
        "# HELP ",
        " counter",
        " histogram",
        "{",
        "}",
        'listener="tcp://a"',
        'le="0.5"',
        'le="+Inf"',
        ",",
        "=",
        '"',
        " ",
        "1",
        "2.5",
        "NaN",
        "-Inf",
        "\n",
        "\\",
    ]
)
REPLIES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda body: OK + body),
    st.lists(TOKENS, max_size=40).map(lambda parts: OK + "".join(parts).encode()),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(REPLIES)
@example(OK + b"wirekit_handler_duration_seconds_bucket 1\n")  # a bucket without its bound
@example(OK + b'wirekit_frames_received_total{b="c", =x} 1\n')  # a label without a name
def test_any_answer_is_a_view_or_one_clear_error(endpoint: FakeEndpoint, reply: bytes) -> None:
    endpoint.reply = reply
    outcome: Scrape | TransportError
    try:
        outcome = fetch(endpoint.url, timeout=TIMEOUT)
    except TransportError as exc:
        outcome = exc
    if isinstance(outcome, TransportError):
        assert "\n" not in str(outcome)
        assert str(outcome).startswith(f"{endpoint.url} does not answer with Prometheus metrics (")
    else:
        assert all(isinstance(value, float) for value in outcome.values.values())
