"""The wirekit command, end to end, as subprocesses on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


def wirekit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )


@contextlib.contextmanager
def running(*args: str, banner: str = "serving") -> Iterator[tuple[subprocess.Popen[str], str]]:
    with subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            stream = proc.stdout if banner == "serving" else proc.stderr
            assert stream is not None
            line = stream.readline()
            match = re.search(r"((?:tcp|udp|tls|unix|memory)://\S+)", line)
            assert match, f"no URL in the start line {line!r}"
            yield proc, match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_serve_then_send_prints_replies_as_json_lines(scheme: str) -> None:
    with running("serve", "protocols.echo", "--url", f"{scheme}://127.0.0.1:0") as (_, url):
        result = wirekit("send", url, '{"hello": "world"}', "[1, 2, 3]", '"text"')
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"hello": "world"},
        [1, 2, 3],
        "text",
    ]


def test_serve_exits_cleanly_on_sigint() -> None:
    with running("serve", "protocols.echo", "--url", "tcp://127.0.0.1:0") as (proc, _):
        pass
    assert proc.returncode == 0


def test_send_reads_json_lines_from_stdin_with_framing_and_codec_flags() -> None:
    flags = ("--framing", "newline", "--codec", "json")
    with running("serve", "protocols.echo", "--url", "tcp://127.0.0.1:0", *flags) as (_, url):
        result = wirekit("send", url, "-", *flags, stdin='{"a": 1}\n\n[true]\n')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['{"a": 1}', "[true]"]


def test_serve_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "echo.toml"
    config.write_text(
        'protocol = "protocols.echo"\nurl = "tcp://127.0.0.1:0"\n'
        '[framing]\nname = "newline"\n[codec]\nname = "utf-8"\n'
    )
    with running("serve", str(config)) as (_, url):
        result = wirekit("send", url, '"hi there"', "--framing", "newline", "--codec", "utf-8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['"hi there"']


def test_listen_prints_every_value_received() -> None:
    with running("listen", "udp://127.0.0.1:0", "--codec", "json", banner="listening") as (
        proc,
        url,
    ):
        host, port = url.removeprefix("udp://").rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'{"x": 1.5}', (host, int(port)))
            sock.sendto(b"[1, 2]", (host, int(port)))
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
    assert lines == ['{"x": 1.5}', "[1, 2]"]


def test_send_times_out_with_one_clear_line() -> None:
    with running("serve", "protocols.echo", "--url", "tcp://127.0.0.1:0") as (_, url):
        result = wirekit("send", url, "1", "--expect", "2", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["1"]
    assert "timed out" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("send", f"tcp://127.0.0.1:{free_port()}", "1"), "cannot connect"),
        (("serve", "protocols.nope"), "no protocol module named 'protocols.nope'"),
        (("serve", "protocols.echo", "--url", "ftp://x"), "scheme 'ftp' is unknown"),
        (("serve", "protocols.echo", "--framing", "smoke-signals"), "unknown framing"),
        (("serve", "missing.toml"), "no such config file"),
        (("send", "tcp://127.0.0.1:1", "{not json"), "not a JSON value"),
    ],
)
def test_errors_print_one_line_and_exit_non_zero(args: tuple[str, ...], expected: str) -> None:
    result = wirekit(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = wirekit("serve", "protocols.echo", "--url", f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flag_is_a_usage_error() -> None:
    result = wirekit("serve", "protocols.echo", "--colour", "blue")
    assert result.returncode == 2
    assert "unrecognized arguments: --colour" in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = wirekit("--debug", "serve", "protocols.nope")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "wirekit"
    assert script.exists()
    result = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 0
    assert "serve" in result.stdout


@pytest.mark.parametrize(
    ("protocol", "scheme"),
    [
        ("protocols.echo", "tcp"),
        ("protocols.chat", "tcp"),
        ("protocols.rpc", "unix"),
        ("protocols.game", "udp"),
        ("protocols.game", "tcp"),
    ],
)
def test_every_protocol_serves_from_the_command_line(
    protocol: str, scheme: str, tmp_path: Path
) -> None:
    url = f"unix://{tmp_path}/p.sock" if scheme == "unix" else f"{scheme}://127.0.0.1:0"
    with running("serve", protocol, "--url", url) as (proc, bound):
        assert bound.startswith(f"{scheme}://")
        assert proc.poll() is None
    assert proc.returncode == 0
