"""``wirekit serve --workers N --metrics``: one endpoint, in the parent, adds every worker up.

Real processes on loopback: the load generator's own counts are the truth
the scrape must match exactly, across workers, a worker killed and
replaced, and a worker that stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_metrics import Samples, fetch, scrape, total
from helpers_websocket import counted_echoes

from framework import Pipeline
from framework.runtime import Connection, connect, metrics_workers
from framework.runtime.metrics import Snapshot
from framework.runtime.metrics_workers import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
RAW = Pipeline(framing="length-prefix", codecs="bytes")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers need Linux's SO_REUSEPORT"
)


@contextlib.contextmanager
def serving(scheme: str, workers: int = 2) -> Iterator[tuple[str, str, list[int]]]:
    """``wirekit serve protocols.echo --workers N --metrics``: its URL, metrics URL and pids."""
    with serving_all([f"{scheme}://127.0.0.1:0"], workers) as (urls, metrics, pids):
        yield urls[0], metrics, pids


@contextlib.contextmanager
def serving_all(urls: list[str], workers: int = 2) -> Iterator[tuple[list[str], str, list[int]]]:
    """The same on every URL of ``urls`` (a ``--url`` each): the bound URLs, metrics URL, pids."""
    command = [
        sys.executable,
        "-m",
        "framework",
        "serve",
        "protocols.echo",
        "--codec",
        "bytes",
        *(part for url in urls for part in ("--url", url)),
        "--workers",
        str(workers),
        "--metrics",
        "127.0.0.1:0",
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            bound: list[str] = []
            shown: set[str] = set()
            for _ in urls:  # one start line per URL, each naming the metrics endpoint
                banner = proc.stdout.readline()
                pattern = r"((?:tcp|udp|ws)://\S+) \(metrics: (http://\S+)/metrics\)"
                match = re.search(pattern, banner)
                assert match, f"no URLs in {banner!r}"
                bound.append(match.group(1))
                shown.add(match.group(2))
            assert len(shown) == 1, shown
            metrics = shown.pop()
            line = proc.stderr.readline()
            pids = [int(pid) for pid in re.findall(r"\d+", line.split("pids", 1)[-1].split(")")[0])]
            wait_healthy(metrics)
            yield bound, metrics, pids
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hang is the failure
                proc.kill()
                proc.wait()


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while fetch(f"{base}/healthz")[0] != 200:
        assert time.monotonic() < deadline, fetch(f"{base}/healthz")
        time.sleep(0.05)


async def load(url: str, clients: int, sizes: list[int]) -> tuple[int, int]:
    """Each client sends ``sizes`` one by one and reads each echo: (frames, payload bytes)."""

    async def one(client: int) -> None:
        async with connect(url, RAW) as conn:
            for size in sizes:
                payload = bytes([client % 256]) * size
                await conn.send(payload)
                assert await asyncio.wait_for(conn.receive(), 5) == payload

    await asyncio.gather(*(one(client) for client in range(clients)))
    return clients * len(sizes), clients * sum(sizes)


def listener_totals(samples: Samples, url: str) -> dict[str, float]:
    names = [
        "wirekit_frames_received_total",
        "wirekit_frames_sent_total",
        "wirekit_bytes_received_total",
        "wirekit_bytes_sent_total",
        "wirekit_connections_total",
        "wirekit_handler_duration_seconds_count",
    ]
    return {name: total(samples, name, listener=url) for name in names}


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_the_parent_reports_the_exact_sum_over_its_workers(scheme: str) -> None:
    sizes = [3, 30, 300]
    header = 4 if scheme == "tcp" else 0
    with serving(scheme) as (url, metrics, _pids):
        frames, payload = asyncio.run(load(url, 24, sizes))
        samples = scrape(metrics)
        totals = listener_totals(samples, url)
        wire = payload + header * frames
        assert totals == {
            "wirekit_frames_received_total": frames,
            "wirekit_frames_sent_total": frames,
            "wirekit_bytes_received_total": wire,
            "wirekit_bytes_sent_total": wire,
            "wirekit_connections_total": 24,
            "wirekit_handler_duration_seconds_count": frames,
        }
        # Both workers served, and each one's listener counts as one.
        assert total(samples, "wirekit_listener_up", listener=url) == 2


def test_workers_on_several_urls_sum_each_listener_exactly() -> None:
    sizes = [5, 50, 500]
    urls = ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/echo"]
    with serving_all(urls) as ([tcp, ws], metrics, _pids):
        assert ws.endswith("/echo")
        frames, payload = asyncio.run(load(tcp, 12, sizes))

        async def websockets(clients: int) -> list[tuple[int, int]]:
            exchanges = [
                counted_echoes(ws, [bytes([n]) * size for size in sizes]) for n in range(clients)
            ]
            return await asyncio.gather(*exchanges)

        counted = asyncio.run(websockets(12))
        samples = scrape(metrics)
        wire = payload + 4 * frames
        assert listener_totals(samples, tcp) == {
            "wirekit_frames_received_total": frames,
            "wirekit_frames_sent_total": frames,
            "wirekit_bytes_received_total": wire,
            "wirekit_bytes_sent_total": wire,
            "wirekit_connections_total": 12,
            "wirekit_handler_duration_seconds_count": frames,
        }
        # The WebSocket clients closed and read to the end: every byte is counted by now.
        assert listener_totals(samples, ws) == {
            "wirekit_frames_received_total": 12 * len(sizes),
            "wirekit_frames_sent_total": 12 * len(sizes),
            "wirekit_bytes_received_total": sum(sent for sent, _ in counted),
            "wirekit_bytes_sent_total": sum(read for _, read in counted),
            "wirekit_connections_total": 12,
            "wirekit_handler_duration_seconds_count": 12 * len(sizes),
        }
        for url, transport in ((tcp, "tcp"), (ws, "ws")):
            # Both workers serve both URLs, each listener under its own labels.
            assert total(samples, "wirekit_listener_up", listener=url, transport=transport) == 2


def test_a_replaced_worker_neither_loses_nor_doubles_and_its_gauges_leave() -> None:
    async def hold(url: str, count: int) -> list[Connection]:
        conns = [await connect(url, RAW) for _ in range(count)]
        for conn in conns:
            await conn.send(b"hold")
            await asyncio.wait_for(conn.receive(), 5)
        return conns

    async def main(url: str, metrics: str, pids: list[int]) -> None:
        held = await hold(url, 12)  # spread over both workers by the kernel
        frames, _payload = await load(url, 16, [10, 20])
        frames += len(held)
        before = await asyncio.to_thread(scrape, metrics)
        assert listener_totals(before, url)["wirekit_frames_received_total"] == frames
        assert total(before, "wirekit_connections_active", listener=url) == 12
        os.kill(pids[0], signal.SIGKILL)
        # The killed worker's connections end; the others stay open.
        await asyncio.sleep(0.5)
        still_open = sum(not conn.closed for conn in held)
        assert 0 < still_open < 12, "both workers should have held connections"
        await asyncio.to_thread(wait_healthy, metrics)  # replaced, and serving
        after = await asyncio.to_thread(scrape, metrics)
        assert listener_totals(after, url) == listener_totals(before, url)
        assert total(after, "wirekit_connections_active", listener=url) == still_open
        more, _payload = await load(url, 16, [5])
        final = await asyncio.to_thread(scrape, metrics)
        expected = listener_totals(before, url)["wirekit_frames_received_total"] + more
        assert listener_totals(final, url)["wirekit_frames_received_total"] == expected
        assert listener_totals(final, url)["wirekit_frames_sent_total"] == expected
        for conn in held:
            conn.abort()

    with serving("tcp") as (url, metrics, pids):
        asyncio.run(main(url, metrics, pids))


def test_healthz_fails_while_a_worker_does_not_answer() -> None:
    with serving("tcp") as (_url, metrics, pids):
        assert fetch(f"{metrics}/healthz") == (200, "ok\n")
        os.kill(pids[1], signal.SIGSTOP)
        try:
            status, reason = fetch(f"{metrics}/healthz")
        finally:
            os.kill(pids[1], signal.SIGCONT)
        assert status == 503
        assert reason == f"worker 1 (pid {pids[1]}) did not answer within 1 s\n"
        wait_healthy(metrics)


def test_app_run_with_workers_and_metrics_sums_them_too(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now; the app binds it next
    (tmp_path / "main.py").write_text(
        "import sys\n"
        "from protocols.echo import app\n"
        "from framework import Pipeline\n"
        "app = app.with_pipeline(Pipeline(framing='length-prefix', codecs='bytes'))\n"
        "def ready(server):\n"
        "    sys.stdout.write(f'ready {server.url}\\n')\n"
        "    sys.stdout.flush()\n"
        "app.run('tcp://127.0.0.1:0', workers=2, metrics=sys.argv[1], ready=ready)\n",
        encoding="utf-8",
    )
    metrics = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        [sys.executable, "main.py", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[1]
            wait_healthy(metrics)
            frames, payload = asyncio.run(load(url, 8, [1, 2, 3]))
            totals = listener_totals(scrape(metrics), url)
            assert totals["wirekit_frames_received_total"] == frames
            assert totals["wirekit_bytes_sent_total"] == payload + 4 * frames
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=TIMEOUT)


class FakeProcess:
    """What WorkerMetrics asks of a worker process: its pid, whether it lives."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def frames_snapshot(count: int, active: int = 0) -> Snapshot:
    labels = (("listener", "tcp://127.0.0.1:9"), ("transport", "tcp"))
    snap = Snapshot(listeners=1)
    snap.count("wirekit_frames_received_total", labels, count)
    snap.gauges["wirekit_connections_active", labels] = active
    return snap


def test_a_worker_that_does_not_answer_is_asked_once_and_a_dead_one_s_final_figures_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_workers, "ANSWER_TIMEOUT", 0.05)
    parent_end, worker_end = multiprocessing.Pipe()
    process = FakeProcess(4711)
    metrics = WorkerMetrics(1)
    metrics._new.append(metrics_workers._Channel(0, process, parent_end))  # no refresher thread
    for _ in range(3):
        assert metrics.snapshot().problems == ["worker 0 (pid 4711) is not serving yet"]
    assert worker_end.recv() == ("snapshot", 1)
    assert not worker_end.poll()  # asked once, not three times
    worker_end.send(("snapshot", 1, frames_snapshot(5, active=2)))
    live = metrics.snapshot()
    assert sum(live.counters.values()) == 5
    assert sum(live.gauges.values()) == 2
    worker_end.send(("final", 0, frames_snapshot(7, active=0)))
    process.alive = False
    for _ in range(2):  # kept once, however often it is read
        dead = metrics.snapshot()
        assert sum(dead.counters.values()) == 7
        assert dead.gauges == {}
        assert dead.problems == ["0 of 1 workers running (restarting)"]


def listening_inode(port: int) -> str:
    """The inode of the TCP socket listening on 127.0.0.1:``port`` (Linux's /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":  # LISTEN
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed while we look
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(target[len("socket:[") : -1])
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_hold_no_copy_of_the_metrics_socket() -> None:
    with serving("tcp") as (_url, metrics, pids):
        inode = listening_inode(int(metrics.rsplit(":", 1)[1]))
        for pid in pids:
            assert inode not in socket_inodes(pid), f"worker {pid} holds the metrics socket"


def test_workers_of_a_killed_parent_stop_and_free_every_port() -> None:
    with serving("tcp") as (url, metrics, pids):
        host, port = metrics.removeprefix("http://").rsplit(":", 1)
        try:
            (parent,) = parents_of(pids)
            os.kill(parent, signal.SIGKILL)
            deadline = time.monotonic() + TIMEOUT
            while any(running(pid) for pid in pids):
                assert time.monotonic() < deadline, "workers outlived their parent"
                time.sleep(0.05)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, int(port)), timeout=TIMEOUT).close()
            served = int(url.rsplit(":", 1)[1])
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", served), timeout=TIMEOUT).close()
        finally:
            for pid in pids:  # whatever the outcome, nothing this test started lives on
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def parents_of(pids: list[int]) -> set[int]:
    """The parents of ``pids`` (the fourth field of /proc/PID/stat)."""
    stats = [Path(f"/proc/{pid}/stat").read_text() for pid in pids]
    return {int(stat.rsplit(")", 1)[1].split()[1]) for stat in stats}
