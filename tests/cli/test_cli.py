"""The wirekit command, end to end, as subprocesses on loopback; and how it reads its arguments."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.cli.commands import _Commands
from framework.cli.commands import _parser as cli_parser
from framework.cli.config import parse_config
from framework.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
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


def test_send_takes_flags_after_the_url_and_among_the_values() -> None:
    serve_flags = ("--framing", "newline", "--codec", "bytes")
    with running("serve", "protocols.echo", *serve_flags, "--url", "tcp://127.0.0.1:0") as (_, url):
        result = wirekit("send", url, "--codec", "bytes", '"one"', "--framing", "newline", '"two"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['"one"', '"two"']


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
        (("serve", "protocols.chat", "--workers", "2"), "pass --backplane redis://HOST:PORT"),
        (
            ("serve", "protocols.game", "--workers", "2", "--backplane", "memory://"),
            "pass --backplane",
        ),
        (
            ("serve", "protocols.echo", "--backplane", "kafka://x"),
            "backplane must be a URL starting with one of memory://",
        ),
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


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("serve", "protocols.echo", "--colour", "blue"), "unrecognized arguments: --colour blue"),
        (("send", "--codec", "json"), "the following arguments are required: url"),
        (("listen", "udp://127.0.0.1:0", "--workers", "2"), "unrecognized arguments: --workers 2"),
        (("rpc", "tcp://127.0.0.1:1"), "the following arguments are required: method"),
    ],
)
def test_a_usage_error_prints_the_command_s_own_usage(args: tuple[str, ...], error: str) -> None:
    result = wirekit(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: wirekit {args[0]} "), result.stderr
    assert f"wirekit {args[0]}: error: {error}" in result.stderr
    assert result.stdout == ""


def parsed(*args: str) -> dict[str, object]:
    return vars(cli_parser().parse_args(args))


@pytest.mark.parametrize(
    ("canonical", "reordered"),
    [
        (
            ("serve", "protocols.echo", "--url", "udp://127.0.0.1:0", "--workers", "2"),
            ("serve", "--url", "udp://127.0.0.1:0", "--workers", "2", "protocols.echo"),
        ),
        (
            ("serve", "protocols.echo", "--codec", "json", "--no-uvloop"),
            ("serve", "--codec", "json", "protocols.echo", "--no-uvloop"),
        ),
        (
            ("send", "tcp://127.0.0.1:9000", "1", "2", "3", "--codec", "json", "--expect", "1"),
            ("send", "--codec", "json", "tcp://127.0.0.1:9000", "1", "--expect", "1", "2", "3"),
        ),
        (
            ("send", "tcp://127.0.0.1:9000", "-", "--framing", "newline"),
            ("send", "--framing", "newline", "tcp://127.0.0.1:9000", "-"),
        ),
        (
            ("listen", "udp://127.0.0.1:9555", "--codec", "json", "--codec", "utf-8"),
            ("listen", "--codec", "json", "udp://127.0.0.1:9555", "--codec", "utf-8"),
        ),
        (
            ("rpc", "tcp://127.0.0.1:9200", "add", "1", "2", "--timeout", "3"),
            ("rpc", "tcp://127.0.0.1:9200", "--timeout", "3", "add", "1", "2"),
        ),
    ],
    ids=lambda args: " ".join(args),
)
def test_flags_may_come_before_after_or_among_the_positionals(
    canonical: tuple[str, ...], reordered: tuple[str, ...]
) -> None:
    assert parsed(*reordered) == parsed(*canonical)


def test_positionals_keep_their_order_around_flags() -> None:
    args = parsed("send", "--expect", "0", "tcp://127.0.0.1:9000", "1", "--timeout", "2", "[2]")
    assert (args["url"], args["values"], args["expect"], args["timeout"]) == (
        "tcp://127.0.0.1:9000",
        ["1", "[2]"],
        0,
        2.0,
    )
    assert parsed("send", "tcp://127.0.0.1:9000")["values"] == []
    assert parsed("--debug", "demo", "--players", "2")["debug"] is True


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


def start_lines(*args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """The stdout banner and the stderr line that follows it, of ``wirekit serve ARGS``."""
    inherited = {key: value for key, value in os.environ.items() if key != "WIREKIT_UVLOOP"}
    environment = {**inherited, **(env or {})}
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=environment,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            return proc.stdout.readline(), proc.stderr.readline()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=TIMEOUT) == 0


def test_serve_names_its_event_loop_and_no_uvloop_turns_uvloop_off() -> None:
    url = ("--url", "tcp://127.0.0.1:0")
    banner, loop_line = start_lines("protocols.echo", *url, "--no-uvloop")
    assert banner.startswith("wirekit: serving protocols.echo on tcp://127.0.0.1:")
    assert loop_line.strip() == "wirekit: event loop: asyncio"
    _banner, loop_line = start_lines("protocols.echo", *url, env={"WIREKIT_UVLOOP": "0"})
    assert loop_line.strip() == "wirekit: event loop: asyncio"
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        expected = "asyncio"
    else:
        expected = f"uvloop {uvloop.__version__}"
    _banner, loop_line = start_lines("protocols.echo", *url)
    assert loop_line.strip() == f"wirekit: event loop: {expected}"


def test_serve_on_sighup_reloads_the_tls_certificate(tmp_path: Path) -> None:
    import trustme

    cas = []
    for name in ("old", "new"):
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tmp_path / f"{name}-ca.pem"))
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.pem"))
        cas.append(str(tmp_path / f"{name}-ca.pem"))
    old_ca, new_ca = cas
    live = tmp_path / "live.pem"
    live.write_bytes((tmp_path / "old.pem").read_bytes())
    args = ("serve", "protocols.echo", "--url", "tls://127.0.0.1:0", "--tls-cert", str(live))
    with running(*args) as (proc, url):
        assert wirekit("send", url, "1", "--tls-ca", old_ca).returncode == 0
        live.write_bytes((tmp_path / "new.pem").read_bytes())
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while (result := wirekit("send", url, "2", "--tls-ca", new_ca)).returncode != 0:
            assert time.monotonic() < deadline, result.stderr
        assert result.stdout.strip() == "2"
        refused = wirekit("send", url, "3", "--tls-ca", old_ca)
        assert refused.returncode == 1
        assert "TLS handshake" in refused.stderr
    assert proc.returncode == 0


def test_a_tls_client_on_a_plain_port_is_told_so_in_one_line() -> None:
    with running("serve", "protocols.echo", "--url", "tcp://127.0.0.1:0") as (_, url):
        result = wirekit("send", url.replace("tcp://", "tls://"), "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "does not seem to speak TLS" in result.stderr


def test_a_command_intermixed_parsing_cannot_read_gets_argparse_s_usual_pass() -> None:
    # A command from another package may take the rest of the line as is.
    parser = argparse.ArgumentParser(prog="wirekit")
    commands = parser.add_subparsers(action=_Commands, dest="command", required=True)
    run = commands.add_parser("run")
    run.add_argument("--verbose", action="store_true")
    run.add_argument("program")
    run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(["run", "--verbose", "ls", "-l", "--all"])
    assert (args.command, args.program, args.rest, args.verbose) == (
        "run",
        "ls",
        ["-l", "--all"],
        True,
    )


def test_log_format_json_writes_one_object_per_line_naming_the_connection() -> None:
    args = ("--log-format", "json", "serve", "protocols.echo", "--url", "tcp://127.0.0.1:0")
    with running(*args) as (proc, url):
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(b"\xff" * 16)  # a length header far over max_frame_size
            assert sock.recv(1) == b""  # the server closed this connection
            client = sock.getsockname()
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines()]
        proc.wait(timeout=TIMEOUT)
    [closing] = [line for line in lines if "closing" in line["message"]]
    assert closing["level"] == "WARNING"
    assert closing["logger"] == "wirekit.connection"
    assert "FrameTooLarge" in closing["message"]
    assert isinstance(closing["connection"], int)
    assert closing["peer"] == f"{client[0]}:{client[1]}"
    assert (closing["listener"], closing["transport"]) == (url, "tcp")
    assert closing["time"].endswith("+00:00")


def test_log_format_comes_from_the_config_file_too() -> None:
    config = parse_config({"protocol": "protocols.echo", "log_format": "json"})
    assert config.log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        parse_config({"protocol": "protocols.echo", "log_format": "xml"})


def test_serve_takes_a_backplane_url() -> None:
    with running(
        "serve", "protocols.chat", "--url", "tcp://127.0.0.1:0", "--backplane", "memory://cli"
    ) as (_proc, url):
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            assert sock.makefile("rb").readline().startswith(b"* welcome, guest-1!")


def test_metrics_come_from_the_config_file_and_the_start_line_names_them(tmp_path: Path) -> None:
    config = tmp_path / "echo.toml"
    config.write_text(
        'protocol = "protocols.echo"\nurl = "tcp://127.0.0.1:0"\nmetrics = "127.0.0.1:0"\n'
    )
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "serve", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            match = re.search(r"on (tcp://\S+) \(metrics: (http://\S+)/metrics\)", banner)
            assert match, banner
            with urllib.request.urlopen(f"{match.group(2)}/healthz", timeout=5) as response:
                assert response.read() == b"ok\n"
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=TIMEOUT) == 0
