"""Groups across worker processes: `wirekit serve protocols.chat --workers 2` on a real Redis.

Two workers are two nodes: users that the kernel spreads over both must
share #lobby, /who and every line. The broker is a redis-server this test
starts on a free loopback port (tests/brokers.py) and stops by PID.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

brokers = pytest.importorskip(
    "tests.brokers", reason="the broker helpers come with the Redis backplane (branch brokers)"
)
pytest.importorskip(
    "framework.runtime.backplane.redis", reason="the Redis backplane is not on this branch"
)
redis_broker = brokers.redis_broker

ROOT = Path(__file__).resolve().parents[2]
STEP = 5.0


def redis_command(port: int, *words: str) -> list[tuple[bytes, bytes]]:
    """One command over RESP on a plain socket; the reply's bulk strings and integers."""
    request = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
        sock.sendall(request.encode())
        time.sleep(0.05)
        reply = sock.recv(65536)
    found: list[tuple[bytes, bytes]] = re.findall(rb"(?:\$\d+\r\n([^\r]*)|:(\d+))\r\n", reply)
    return found


def subscribers(port: int, channel: str) -> int:
    """How many connections (one per node) subscribe to ``channel``."""
    found = redis_command(port, "PUBSUB", "NUMSUB", channel)
    return int(found[1][1]) if len(found) > 1 else 0


class User:
    """A chat user on a plain socket, as nc would be."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        self.file = self.sock.makefile("rwb")
        welcome = self.line()
        assert welcome.startswith("* welcome, "), welcome
        self.nick = welcome.split()[2].rstrip("!")

    def line(self) -> str:
        data = self.file.readline()
        assert data.endswith(b"\n"), f"connection ended: {data!r}"
        return data.decode().rstrip("\n")

    def say(self, text: str) -> None:
        self.file.write(text.encode() + b"\n")
        self.file.flush()

    def until(self, wanted: str) -> str:
        while True:
            line = self.line()
            if wanted in line:
                return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def chat(redis_broker: brokers.Broker) -> Iterator[tuple[int, int]]:
    """``wirekit serve protocols.chat --workers 2 --backplane redis://...``: its port and Redis'."""
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "framework",
            "serve",
            "protocols.chat",
            "--url",
            "tcp://127.0.0.1:0",
            "--workers",
            "2",
            "--backplane",
            redis_broker.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            match = re.search(r"tcp://127\.0\.0\.1:(\d+)", banner)
            assert match, f"no URL in {banner!r}"
            yield int(match.group(1)), redis_broker.port
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_users_on_two_workers_share_rooms_who_and_lines(chat: tuple[int, int]) -> None:
    port, redis_port = chat
    # Both workers track the users group from the start: two nodes.
    assert subscribers(redis_port, "wirekit.chat.users") == 2
    users = []
    # Connect until #lobby has members on both workers (the kernel spreads
    # connections by their ports: 30 users all on one is a 1 in 2^29 chance).
    while subscribers(redis_port, "wirekit.chat.=23lobby") < 2:
        assert len(users) < 30, "every user landed on one worker"
        users.append(User(port))
    assert len({user.nick for user in users}) == len(users)
    expected = f"* in #lobby: {', '.join(sorted(user.nick for user in users))}"
    deadline = time.monotonic() + STEP
    for user in users:
        while True:
            user.say("/who")
            line = user.until("* in #lobby")
            if line == expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert line == expected
    first, last = users[0], users[-1]
    last.say("hello from the last one")
    assert first.until("hello from") == f"<{last.nick}> hello from the last one"
    first.say("and back")
    assert last.until("and back") == f"<{first.nick}> and back"
    for user in users:
        user.close()
