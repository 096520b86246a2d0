"""``wirekit serve`` on several endpoints: repeated ``--url``, a config ``url`` list, workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_metrics import fetch, scrape, total

from framework import Pipeline
from framework.cli.config import parse_config
from framework.core.errors import ConfigError
from framework.runtime import connect

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20


def wirekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )


@contextlib.contextmanager
def serving(
    *args: str, urls: int, lines: list[str] | None = None
) -> Iterator[tuple[list[str], str]]:
    """Run ``wirekit serve ARGS``: the URLs of its ``urls`` start lines, its next stderr line.

    ``lines``, if given, gets the start lines themselves.
    """
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            bound = []
            for _ in range(urls):
                line = proc.stdout.readline()
                if lines is not None:
                    lines.append(line)
                match = re.search(r"serving \S+ on ((?:tcp|ws|udp)://\S+)", line)
                assert match, f"no URL in the start line {line!r}"
                bound.append(match.group(1))
            yield bound, proc.stderr.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                assert proc.wait(timeout=TIMEOUT) == 0
            except subprocess.TimeoutExpired:  # pragma: no cover - a hang is the failure
                proc.kill()
                proc.wait()
                raise


def _echoes(url: str) -> None:
    scheme = url.split(":")[0]
    result = wirekit("send", url, json.dumps({"via": scheme}), "[1, 2]")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"via": scheme},
        [1, 2],
    ]


def test_repeated_url_serves_every_endpoint_and_prints_each() -> None:
    args = ("protocols.echo", "--url", "tcp://127.0.0.1:0", "--url", "ws://127.0.0.1:0/echo")
    with serving(*args, urls=2) as (bound, loop_line):
        assert bound[0].startswith("tcp://127.0.0.1:")
        assert bound[1].startswith("ws://127.0.0.1:")
        assert bound[1].endswith("/echo")
        assert loop_line.startswith("wirekit: event loop:")
        for url in bound:
            _echoes(url)


def test_a_config_url_list_and_websocket_table(tmp_path: Path) -> None:
    config = tmp_path / "both.toml"
    config.write_text(
        'protocol = "protocols.echo"\n'
        'url = ["ws://127.0.0.1:0", "tcp://127.0.0.1:0"]\n'
        "[websocket]\n"
        'origins = ["https://game.example"]\n'
        "ping_interval = 5\n"
    )
    with serving(str(config), urls=2) as (bound, _):
        assert [url.split(":")[0] for url in bound] == ["ws", "tcp"]
        for url in bound:
            _echoes(url)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers need SO_REUSEPORT")
def test_workers_serve_every_url() -> None:
    args = ("protocols.echo", "--workers", "2", "--url", "tcp://127.0.0.1:0")
    with serving(*args, "--url", "ws://127.0.0.1:0", urls=2) as (bound, workers_line):
        assert "2 workers" in workers_line
        for url in bound:
            _echoes(url)


def test_metrics_on_several_urls_name_each_listener() -> None:
    args = ("protocols.echo", "--codec", "bytes", "--metrics", "127.0.0.1:0")
    urls = ("--url", "tcp://127.0.0.1:0", "--url", "ws://127.0.0.1:0/echo")
    lines: list[str] = []
    with serving(*args, *urls, urls=2, lines=lines) as (bound, loop_line):
        assert loop_line.startswith("wirekit: event loop:")
        # Every start line names its URL and the one metrics endpoint.
        shown = {re.search(r"\(metrics: (http://\S+)/metrics\)$", line.strip()) for line in lines}
        assert None not in shown
        metrics = {match.group(1) for match in shown if match is not None}
        assert len(metrics) == 1
        base = metrics.pop()
        pipeline = Pipeline(framing="length-prefix", codecs="bytes")

        async def load() -> None:
            for url, count in zip(bound, (2, 3), strict=True):
                async with connect(url, pipeline) as conn:
                    for _ in range(count):
                        await conn.send(b"hi")
                        assert await asyncio.wait_for(conn.receive(), 5) == b"hi"

        asyncio.run(load())
        samples = scrape(base)
        for url, transport, count in zip(bound, ("tcp", "ws"), (2, 3), strict=True):
            labels = {"listener": url, "transport": transport}
            assert total(samples, "wirekit_frames_received_total", **labels) == count
            assert total(samples, "wirekit_listener_up", **labels) == 1
        assert fetch(f"{base}/healthz") == (200, "ok\n")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ([], "must be a URL string or a list"),
        (["tcp://127.0.0.1:1", 5], "must be a URL string or a list"),
        (["tcp://127.0.0.1:1", "tcp://127.0.0.1:1"], "lists a URL twice"),
        (["tcp://127.0.0.1:1", "ws://nope"], "port is missing"),
    ],
)
def test_bad_url_lists_name_the_key(url: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"x.toml: url: .*{problem}"):
        parse_config({"url": url}, source="x.toml")


def test_websocket_table_is_checked() -> None:
    config = parse_config({"websocket": {"origins": ["https://a.example"], "compression": True}})
    assert config.websocket is not None
    assert config.websocket.origins == ("https://a.example",)
    assert config.websocket.compression
    with pytest.raises(ConfigError, match=r"websocket\.orgins"):
        parse_config({"websocket": {"orgins": []}})
    with pytest.raises(ConfigError, match=r"websocket\.ping_timeout"):
        parse_config({"websocket": {"ping_timeout": -1}})


def test_a_single_config_url_stays_a_string() -> None:
    assert parse_config({"url": "ws://127.0.0.1:0/x"}).url == "ws://127.0.0.1:0/x"
    assert parse_config({"url": ["ws://127.0.0.1:0/x"]}).url == ("ws://127.0.0.1:0/x",)
