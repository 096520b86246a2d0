"""Prometheus metrics and /healthz of one process: real servers, real clients, a real scrape."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_metrics import Samples, endpoint, fetch, health, scraped, total
from helpers_runtime import (
    Ping,
    TlsFiles,
    echo_app,
    eventually,
    run,
    tls_files,
    typed_pipeline,
    within,
)

from framework import App, Limits, Pipeline
from framework.core.errors import ConfigError
from framework.runtime import connect, metrics_http
from framework.runtime.backplane.base import Backplane, BackplaneStats, Deliver, StateChanged
from framework.runtime.metrics import METRICS, REGISTRY, Snapshot, enable
from framework.runtime.metrics_http import MetricsCollector, parse_address, serve_metrics

__all__ = ["endpoint", "tls_files"]  # the fixtures, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
RAW = Pipeline(framing="length-prefix", codecs="bytes")
#: A generous bound on socket waits: what is never answered fails the test, slowly.
TIMEOUT = 20.0

#: The names the issue asks for, exactly: renaming one must fail here first.
PINNED = {
    "wirekit_listener_up": "gauge",
    "wirekit_connections_active": "gauge",
    "wirekit_connections_total": "counter",
    "wirekit_connections_rejected_total": "counter",
    "wirekit_frames_received_total": "counter",
    "wirekit_frames_sent_total": "counter",
    "wirekit_bytes_received_total": "counter",
    "wirekit_bytes_sent_total": "counter",
    "wirekit_decode_errors_total": "counter",
    "wirekit_handler_errors_total": "counter",
    "wirekit_handler_duration_seconds": "histogram",
    "wirekit_datagrams_dropped_total": "counter",
    "wirekit_tls_handshake_failures_total": "counter",
    "wirekit_backplane_up": "gauge",
    "wirekit_backplane_published_total": "counter",
    "wirekit_backplane_received_total": "counter",
    "wirekit_backplane_dropped_total": "counter",
    "wirekit_backplane_reconnects_total": "counter",
}


class FakeBackplane(Backplane):
    """A backplane whose broker connection the test turns on and off."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stats = BackplaneStats()
        self.up = True

    @property
    def connected(self) -> bool:
        return self.up

    async def start(self, deliver: Deliver, on_state: StateChanged) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    def publish(self, channel: str, payload: bytes) -> bool:
        self.stats.published += 1
        return True

    async def close(self) -> None:
        return None


def test_metric_names_types_and_labels_are_pinned() -> None:
    assert {name: spec[0] for name, spec in METRICS.items()} == PINNED
    for name, (_kind, labels, _meaning) in METRICS.items():
        # Bounded labels only: never a peer's address or anything a peer chooses.
        assert set(labels) <= {"transport", "listener", "reason", "message_type", "backplane"}, name


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_counters_match_what_the_clients_sent_and_received_exactly(
    endpoint: str, scheme: str
) -> None:
    sizes = [1, 7, 100, 1000]  # bytes codec: a frame is a 4-byte header + payload on TCP

    async def main() -> None:
        server = await echo_app(RAW).start(f"{scheme}://127.0.0.1:0")
        try:
            sent = received = sent_bytes = 0
            for client in range(3):
                async with connect(server.url, RAW) as conn:
                    for size in sizes:
                        payload = bytes([client]) * size
                        await conn.send(payload)
                        assert await within(conn.receive()) == payload
                        sent += 1
                        received += 1
                        sent_bytes += size + (4 if scheme == "tcp" else 0)
            await eventually(lambda: not server.connections)  # the closes reached the server
            samples = await scraped(endpoint)
            listener = {"listener": server.url, "transport": scheme}
            assert total(samples, "wirekit_frames_received_total", **listener) == sent
            assert total(samples, "wirekit_frames_sent_total", **listener) == received
            assert total(samples, "wirekit_bytes_received_total", **listener) == sent_bytes
            assert total(samples, "wirekit_bytes_sent_total", **listener) == sent_bytes
            assert total(samples, "wirekit_handler_duration_seconds_count", **listener) == sent
            assert total(samples, "wirekit_listener_up", **listener) == 1
            if scheme == "tcp":
                assert total(samples, "wirekit_connections_total", **listener) == 3
                assert total(samples, "wirekit_connections_active", **listener) == 0
            else:  # three client sockets: three peer addresses, still known
                assert total(samples, "wirekit_connections_total", **listener) == 3
                assert total(samples, "wirekit_connections_active", **listener) == 3
        finally:
            await server.close()

    run(main())


def test_open_connections_are_counted_live_and_their_frames_kept_once_they_close(
    endpoint: str,
) -> None:
    async def main() -> None:
        server = await echo_app(RAW).start("tcp://127.0.0.1:0")
        try:
            conns = [await connect(server.url, RAW) for _ in range(4)]
            for conn in conns:
                await conn.send(b"abc")
                await within(conn.receive())
            live = await scraped(endpoint)
            assert total(live, "wirekit_connections_active", listener=server.url) == 4
            assert total(live, "wirekit_frames_received_total", listener=server.url) == 4
            for conn in conns[:3]:
                await conn.__aexit__(None, None, None)
            await eventually(lambda: len(server.connections) == 1)
            after = await scraped(endpoint)
            assert total(after, "wirekit_connections_active", listener=server.url) == 1
            assert total(after, "wirekit_frames_received_total", listener=server.url) == 4
            assert total(after, "wirekit_bytes_sent_total", listener=server.url) == 4 * 7
            await conns[3].__aexit__(None, None, None)
        finally:
            await server.close()
        # Closed: the listener's counters stay (a counter never goes back), its gauges go.
        closed = await scraped(endpoint)
        assert total(closed, "wirekit_frames_received_total", listener=server.url) == 4
        assert (
            "wirekit_listener_up",
            frozenset({("listener", server.url), ("transport", "tcp")}),
        ) not in closed

    run(main())


def test_refused_connections_are_counted_by_reason(endpoint: str) -> None:
    async def main() -> None:
        limits = Limits(max_connections_per_peer=1)
        server = await echo_app(RAW).start("tcp://127.0.0.1:0", limits=limits)
        try:
            async with connect(server.url, RAW) as first:
                await first.send(b"x")
                await within(first.receive())
                for _ in range(3):
                    refused = await connect(server.url, RAW)
                    await within(refused.wait_closed())
                await eventually(lambda: server.refused == 3)
                samples = await scraped(endpoint)
            rejected = "wirekit_connections_rejected_total"
            per_peer = {"listener": server.url, "reason": "max_connections_per_peer"}
            assert total(samples, rejected, **per_peer) == 3
            assert total(samples, rejected, listener=server.url, reason="max_connections") == 0
            assert total(samples, "wirekit_connections_total", listener=server.url) == 1
        finally:
            await server.close()

    run(main())


def test_errors_are_counted_with_the_registered_message_type_only(endpoint: str) -> None:
    pipeline = typed_pipeline()
    app = App(pipeline, handler_errors="keep")

    @app.on(Ping)
    def ping(msg: Ping, conn: Any) -> None:
        raise RuntimeError("boom")

    @app.fallback
    def unknown(error: Any, conn: Any) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        try:
            async with connect(server.url, pipeline) as conn:
                await conn.send(Ping(1))
                await conn.send(Ping(2))
                await eventually(lambda: sum(c.stats.errors for c in server.connections) == 2)
            untyped = Pipeline(framing="length-prefix", codecs="msgpack")
            async with connect(server.url, untyped) as conn:
                # A type name the peer chose: the fallback's error is never labelled with it.
                await conn.send({"type": "chosen-by-the-peer"})
                await eventually(lambda: sum(c.stats.errors for c in server.connections) == 2)
            samples = await scraped(endpoint)
            errors = "wirekit_handler_errors_total"
            assert total(samples, errors, listener=server.url, message_type="ping") == 2
            assert total(samples, errors, listener=server.url, message_type="") == 1
            assert total(samples, errors, listener=server.url) == 3
            assert total(samples, "wirekit_decode_errors_total", listener=server.url) == 1
            # Bytes that are not msgpack: a decode error (the fallback sees it, and raises).
            async with connect(server.url, RAW) as raw:
                await raw.send(b"\xc1 not msgpack")
                await eventually(lambda: sum(c.stats.errors for c in server.connections) == 2)
            samples = await scraped(endpoint)
            assert total(samples, "wirekit_decode_errors_total", listener=server.url) == 2
        finally:
            await server.close()

    run(main())


def test_udp_drops_are_counted_by_reason(endpoint: str) -> None:
    async def main() -> None:
        server = await echo_app(RAW).start("udp://127.0.0.1:0", limits=Limits(max_datagram_size=64))
        try:
            host, port = server.endpoint.host, server.endpoint.port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(5):
                    sock.sendto(b"x" * 65, (host, port))  # over max_datagram_size
                sock.sendto(b"ok", (host, port))
                sock.settimeout(5)
                assert await asyncio.to_thread(sock.recv, 100) == b"ok"  # after the oversize ones
            samples = await scraped(endpoint)
            dropped = "wirekit_datagrams_dropped_total"
            assert total(samples, dropped, listener=server.url, reason="oversize") == 5
            assert total(samples, dropped, listener=server.url, reason="rate") == 0
            assert total(samples, "wirekit_frames_received_total", listener=server.url) == 1
        finally:
            await server.close()

    run(main())


def test_an_async_handler_is_timed_from_start_to_end(endpoint: str) -> None:
    app = App(RAW)

    @app.on(bytes)
    async def slow(value: bytes, conn: Any) -> bytes:
        await asyncio.sleep(0.06)
        return value

    async def main() -> None:
        server = await app.start("tcp://127.0.0.1:0")
        try:
            async with connect(server.url, RAW) as conn:
                for _ in range(3):
                    await conn.send(b"z")
                    await within(conn.receive())
            samples = await scraped(endpoint)
            name = "wirekit_handler_duration_seconds"
            assert total(samples, f"{name}_count", listener=server.url) == 3
            assert total(samples, f"{name}_bucket", listener=server.url, le="0.05") == 0
            assert total(samples, f"{name}_bucket", listener=server.url, le="0.1") == 3
            assert total(samples, f"{name}_sum", listener=server.url) >= 0.18
        finally:
            await server.close()

    run(main())


def test_healthz_is_ok_while_every_listener_serves_and_503_with_a_reason_otherwise(
    endpoint: str,
) -> None:
    async def main() -> None:
        assert (await health(endpoint))[0] == 503  # nothing listens yet
        tcp = await echo_app(RAW).start("tcp://127.0.0.1:0")
        udp = await echo_app(RAW).start("udp://127.0.0.1:0")
        try:
            assert await health(endpoint) == (200, "ok\n")
            # Break the TCP listener: its socket closes under the server.
            assert tcp._listener is not None
            tcp._listener.close()
            status, reason = await health(endpoint)
            assert status == 503
            assert reason == f"listener {tcp.url} is not serving\n"
            samples = await scraped(endpoint)
            assert total(samples, "wirekit_listener_up", listener=tcp.url) == 0
            assert total(samples, "wirekit_listener_up", listener=udp.url) == 1
            await tcp.close()
            assert await health(endpoint) == (200, "ok\n")
            # Break the UDP socket.
            assert udp._datagrams is not None
            assert udp._datagrams.transport is not None
            udp._datagrams.transport.close()
            await asyncio.sleep(0)
            assert await health(endpoint) == (503, f"listener {udp.url} is not serving\n")
        finally:
            await tcp.close()
            await udp.close()
        assert await health(endpoint) == (503, "no listener is serving\n")

    run(main())


def test_healthz_fails_while_a_registered_backplane_is_disconnected(endpoint: str) -> None:
    backplane = FakeBackplane("redis://user:secret@127.0.0.1:6379/0")

    async def main() -> None:
        server = await echo_app(RAW).start("tcp://127.0.0.1:0")
        REGISTRY.add_backplane(backplane)
        try:
            assert await health(endpoint) == (200, "ok\n")
            backplane.up = False
            backplane.stats.dropped = 4
            backplane.stats.reconnects = 2
            backplane.publish("room", b"x")
            status, reason = await health(endpoint)
            assert (status, reason) == (503, "backplane redis://127.0.0.1:6379/0 is disconnected\n")
            samples = await scraped(endpoint)
            labels = {"backplane": "redis://127.0.0.1:6379/0"}  # the password is not a label
            assert total(samples, "wirekit_backplane_up", **labels) == 0
            assert total(samples, "wirekit_backplane_dropped_total", **labels) == 4
            assert total(samples, "wirekit_backplane_reconnects_total", **labels) == 2
            assert total(samples, "wirekit_backplane_published_total", **labels) == 1
            backplane.up = True
            assert await health(endpoint) == (200, "ok\n")
        finally:
            REGISTRY.remove_backplane(backplane)
            await server.close()

    run(main())


def test_a_users_own_registry_exports_the_same_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(MetricsCollector())
    try:

        async def main() -> bytes:
            server = await echo_app(RAW).start("tcp://127.0.0.1:0")
            try:
                async with connect(server.url, RAW) as conn:
                    await conn.send(b"hello")
                    await within(conn.receive())
                return generate_latest(registry)
            finally:
                await server.close()

        text = run(main()).decode()
    finally:
        enable(False)
    assert "wirekit_frames_received_total{" in text
    assert "wirekit_handler_duration_seconds_bucket{" in text


def test_the_endpoint_answers_only_its_two_paths_and_bounds_the_request_line(
    endpoint: str,
) -> None:
    assert fetch(f"{endpoint}/other")[0] == 404
    host, port = parse_address(endpoint.removeprefix("http://"))
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n")
        answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.0 414")


@pytest.mark.parametrize("address", ["9100", "host:", ":9100", "127.0.0.1:99999", "a:b"])
def test_a_bad_metrics_address_is_a_clear_error(address: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT") as info:
        parse_address(address)
    assert info.value.option == "metrics"


def test_a_snapshot_adds_up_and_a_dead_ones_gauges_do_not() -> None:
    labels = (("listener", "tcp://x:1"), ("transport", "tcp"))
    one = Snapshot(listeners=1)
    one.count("wirekit_frames_received_total", labels, 3)
    one.gauges["wirekit_connections_active", labels] = 2
    one.histograms["wirekit_handler_duration_seconds", labels] = ([1, 2], 0.5)
    summed = Snapshot()
    summed.add(one)
    summed.add(one, live=False)
    assert summed.counters == {("wirekit_frames_received_total", labels): 6}
    assert summed.gauges == {("wirekit_connections_active", labels): 2}
    assert summed.histograms["wirekit_handler_duration_seconds", labels] == ([2, 4], 1.0)
    assert summed.listeners == 1


BLOCKED = "import sys; sys.modules['prometheus_client'] = None; "


def test_framework_imports_without_prometheus_client() -> None:
    code = (
        BLOCKED + "import framework, framework.runtime.server, framework.cli.commands; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout == "ok\n", done.stderr


def test_metrics_without_prometheus_client_is_one_line_naming_the_extra() -> None:
    code = BLOCKED + (
        "from framework.cli.commands import main; "
        "sys.exit(main(['serve', 'protocols.echo', '--url', 'tcp://127.0.0.1:0', "
        "'--metrics', '127.0.0.1:0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'wirekit[metrics]'" in done.stderr


def test_labels_never_carry_a_peer_address(endpoint: str) -> None:
    async def main() -> tuple[Samples, str]:
        server = await echo_app(RAW).start("tcp://127.0.0.1:0")
        try:
            async with connect(server.url, RAW) as conn:
                await conn.send(b"x")
                await within(conn.receive())
                (served,) = server.connections
                return await scraped(endpoint), str(served.peer[1])
        finally:
            await server.close()

    samples, peer_port = run(main())
    values = {value for _name, keys in samples for _key, value in keys}
    assert values
    assert not any(peer_port in value for value in values)


def test_the_how_to_s_table_is_the_metrics_exported() -> None:
    page = (ROOT / "docs" / "howto" / "monitor.md").read_text(encoding="utf-8")
    rows = {}
    for line in page.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`wirekit_"):
            labels = tuple(label.strip("` ") for label in cells[2].split(","))
            rows[cells[0].strip("`")] = (cells[1], labels, cells[3])
    assert rows == METRICS


def test_failed_tls_handshakes_are_counted(endpoint: str, tls_files: TlsFiles) -> None:
    async def main() -> None:
        server = await echo_app(RAW).start("tls://127.0.0.1:0", tls=tls_files.server_options())
        try:
            host, port = server.endpoint.host, server.endpoint.port
            for _ in range(2):  # plaintext clients on a TLS port
                _reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"\x00\x00\x00\x05hello")
                await writer.drain()
                writer.close()
            await eventually(lambda: server.handshake_failures == 2)
            samples = await scraped(endpoint)
            failures = "wirekit_tls_handshake_failures_total"
            assert total(samples, failures, listener=server.url, transport="tls") == 2
        finally:
            await server.close()

    run(main())


def test_idle_clients_of_the_endpoint_do_not_hold_up_a_scrape(endpoint: str) -> None:
    host, port = parse_address(endpoint.removeprefix("http://"))
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(4)]
    try:
        assert fetch(f"{endpoint}/healthz")[0] == 503  # answered at once: no listener yet
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_trickles_its_request_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_http, "REQUEST_TIMEOUT", 0.5)
    with serve_metrics("127.0.0.1:0") as served:
        host, port = parse_address(served.url.removeprefix("http://"))
        with socket.create_connection((host, port), timeout=5) as sock:
            started = time.monotonic()
            with contextlib.suppress(OSError):  # the cut may come as a reset
                for byte in b"GET /metrics HTTP/1.0\r\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
                    if time.monotonic() - started > 3:
                        break
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed by the server, unanswered
            assert time.monotonic() - started < 3
    enable(False)


def test_more_idle_clients_than_slots_delay_a_health_check_but_never_drop_it(
    endpoint: str,
) -> None:
    host, port = parse_address(endpoint.removeprefix("http://"))
    idle = [
        socket.create_connection((host, port), timeout=TIMEOUT)
        for _ in range(metrics_http.MAX_REQUESTS + 4)
    ]
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as probe:
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            answer = probe.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.0 503 "), answer  # answered: no listener yet
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_sends_no_request_head_is_let_go_before_the_request_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_http, "HEAD_TIMEOUT", 0.2)
    monkeypatch.setattr(metrics_http, "REQUEST_TIMEOUT", 3600.0)
    with serve_metrics("127.0.0.1:0") as served:
        host, port = parse_address(served.url.removeprefix("http://"))
        with socket.create_connection((host, port), timeout=TIMEOUT) as idle:
            idle.sendall(b"GET /healthz HTTP/1.0\r\n")  # and never the end of the head
            try:
                answer = idle.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed by the server, long before an hour
    enable(False)
