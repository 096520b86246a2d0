"""``wirekit serve --workers N``: real processes sharing a port on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import TlsFiles, tls_files

from framework.core.endpoints import parse_url
from framework.core.errors import ConfigError, TransportError
from framework.core.pipeline import Pipeline
from framework.runtime import connect
from framework.runtime.tls import TlsOptions
from framework.runtime.workers import check_workers

__all__ = ["tls_files"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers need Linux's SO_REUSEPORT"
)

# A protocol that says which process answered, and can be asked to take its time.
PID_PROTOCOL = """
import asyncio
import os

from framework import App, Pipeline

app = App(Pipeline(framing="length-prefix", codecs="msgpack"))


@app.on(object)
async def reply(value, conn):
    if isinstance(value, dict) and "sleep" in value:
        await asyncio.sleep(value["sleep"])
    return [os.getpid(), value]
"""

PIPELINE = Pipeline(framing="length-prefix", codecs="msgpack")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pidproto.py").write_text(PID_PROTOCOL, encoding="utf-8")
    return tmp_path


@contextlib.contextmanager
def serving(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str, list[int]]]:
    """Run ``wirekit serve pidproto ARGS``; yield it, its URL and its worker pids."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "serve", "pidproto", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=directory,
        env=environment,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            banner = proc.stdout.readline()
            match = re.search(r"((?:tcp|udp|tls)://\S+)", banner)
            assert match, f"no URL in {banner!r}: {proc.stderr.read() if proc.poll() else ''}"
            line = proc.stderr.readline()
            pids = [int(pid) for pid in re.findall(r"\d+", line.split("pids", 1)[-1].split(")")[0])]
            yield proc, match.group(1), pids
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hang is the failure
                proc.kill()
                proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} still running"
        time.sleep(0.02)


async def ask_each(url: str, values: list[Any], tls: TlsOptions | None = None) -> list[Any]:
    """One connection (or UDP socket) per value, all at once; the replies in order."""

    async def one(value: Any) -> Any:
        async with connect(url, PIPELINE, tls=tls) as conn:
            await conn.send(value)
            return await asyncio.wait_for(conn.receive(), 5)

    return await asyncio.gather(*(one(value) for value in values))


@pytest.mark.parametrize("scheme", ["tcp", "udp", "tls"])
def test_workers_share_the_port_and_all_of_them_serve(
    project: Path, scheme: str, tls_files: TlsFiles
) -> None:
    tls_args = ["--tls-cert", tls_files.server] if scheme == "tls" else []
    client_tls = tls_files.client_options() if scheme == "tls" else None
    url = f"{scheme}://127.0.0.1:0"
    with serving(project, "--url", url, "--workers", "2", *tls_args) as (proc, bound, pids):
        assert len(pids) == 2
        assert not bound.endswith(":0")
        # Padded: a UDP server answers an unverified peer with at most 3x the
        # bytes it received (Limits.amplification_factor).
        values = [{"n": n, "pad": "x" * 32} for n in range(24)]
        replies = asyncio.run(ask_each(bound, values, client_tls))
        assert [value for _pid, value in replies] == values
        # 24 connections (or UDP source ports) hashed over two workers: both serve.
        assert {pid for pid, _value in replies} == set(pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    wait_gone(pids)


def test_sigterm_lets_every_worker_finish_its_in_flight_requests(project: Path) -> None:
    async def main(url: str, parent: subprocess.Popen[str]) -> list[Any]:
        conns = [await connect(url, PIPELINE) for _ in range(8)]
        for n, conn in enumerate(conns):
            await conn.send({"sleep": 0.5, "n": n})
        await asyncio.sleep(0.2)  # every request is in a handler now
        parent.send_signal(signal.SIGTERM)
        replies = [await asyncio.wait_for(conn.receive(), 5) for conn in conns]
        for conn in conns:
            await asyncio.wait_for(conn.wait_closed(), 5)  # and then the server closed
        return replies

    with serving(project, "--url", "tcp://127.0.0.1:0", "--workers", "2") as (proc, url, pids):
        replies = asyncio.run(main(url, proc))
        assert [value["n"] for _pid, value in replies] == list(range(8))
        assert proc.wait(timeout=TIMEOUT) == 0
    wait_gone(pids)


def test_a_worker_that_dies_is_reported_and_replaced(project: Path) -> None:
    with serving(project, "--url", "tcp://127.0.0.1:0", "--workers", "2") as (proc, url, pids):
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT
        seen: set[int] = set()
        # Keep asking until a process that is not one of the first two answers.
        while not seen - set(pids):
            assert time.monotonic() < deadline, f"no replacement worker; answers from {seen}"
            with contextlib.suppress(TransportError, TimeoutError):
                replies = asyncio.run(ask_each(url, list(range(8))))
                seen |= {pid for pid, _value in replies}
            time.sleep(0.05)
        assert pids[0] not in seen or not alive(pids[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert re.search(rf"worker 0 \(pid {pids[0]}\) died with status -9", log), log
    wait_gone([pids[1], *(seen - set(pids))])


def test_sighup_reloads_the_certificate_in_every_worker(project: Path, tmp_path: Path) -> None:
    import trustme

    cas = []
    for name in ("old", "new"):
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tmp_path / f"{name}-ca.pem"))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(tmp_path / f"{name}.pem")
        )
        cas.append(TlsOptions(cafile=str(tmp_path / f"{name}-ca.pem")))
    old, new = cas
    live = tmp_path / "live.pem"
    shutil.copy(tmp_path / "old.pem", live)
    args = ("--url", "tls://127.0.0.1:0", "--workers", "2", "--tls-cert", str(live))
    with serving(project, *args) as (proc, url, _pids):
        assert len(asyncio.run(ask_each(url, [1, 2, 3, 4], old))) == 4
        shutil.copy(tmp_path / "new.pem", live)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while True:  # the signal reaches each worker in its own time
            try:
                replies = asyncio.run(ask_each(url, list(range(8)), new))
                break
            except TransportError:
                assert time.monotonic() < deadline, "the new certificate was never served"
                time.sleep(0.05)
        assert [value for _pid, value in replies] == list(range(8))
        with pytest.raises(TransportError, match="TLS handshake"):
            asyncio.run(ask_each(url, [0], old))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("unix:///tmp/wirekit-workers.sock", "tcp://, tls://, udp://, ws:// or wss://"),
        ("memory://workers", "tcp://, tls://, udp://, ws:// or wss://"),
    ],
)
def test_workers_on_a_scheme_that_cannot_share_a_port_is_one_clear_line(
    project: Path, url: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framework", "serve", "pidproto", "--url", url, "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_workers_on_a_port_another_server_holds_is_one_clear_line(project: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        url = f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        command = ["serve", "pidproto", "--url", url, "--workers", "2"]
        result = subprocess.run(
            [sys.executable, "-m", "framework", *command],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=project,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
    assert result.returncode == 1
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [0, -1, 2.5])
def test_workers_must_be_a_positive_integer(workers: Any) -> None:
    with pytest.raises(ConfigError, match="workers") as info:
        check_workers(parse_url("tcp://127.0.0.1:0"), workers)
    assert info.value.option == "workers"


def test_one_worker_is_fine_on_every_scheme() -> None:
    for url in ("unix:///tmp/x.sock", "memory://x", "tcp://127.0.0.1:0"):
        check_workers(parse_url(url), 1)


def test_other_platforms_get_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ConfigError, match="SO_REUSEPORT"):
        check_workers(parse_url("tcp://127.0.0.1:0"), 2)


def test_app_run_with_workers_serves_from_several_processes(project: Path) -> None:
    (project / "main.py").write_text(
        "import os, sys\n"
        "from pidproto import app\n"
        "def ready(server):\n"
        # One write per line: two workers share the pipe, and with
        # PYTHONUNBUFFERED print() writes each of its arguments on its own,
        # so two workers' lines could interleave.
        "    sys.stdout.write(f'ready {server.url} {os.getpid()}\\n')\n"
        "    sys.stdout.flush()\n"
        "app.run(sys.argv[1], workers=2, ready=ready)\n",
        encoding="utf-8",
    )
    errors = project / "stderr.txt"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "main.py", "tcp://127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=project,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{project}"},
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().split() for _ in range(2)]
            assert all(len(line) == 3 for line in lines), (lines, errors.read_text())
            urls = {line[1] for line in lines}
            pids = {int(line[2]) for line in lines}
            assert len(urls) == 1  # one port, resolved once for both
            assert len(pids) == 2
            values = [{"n": n} for n in range(16)]
            replies = asyncio.run(ask_each(urls.pop(), values))
            assert [value for _pid, value in replies] == values
            assert {pid for pid, _value in replies} <= pids
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=TIMEOUT) == 0
    wait_gone(list(pids))
