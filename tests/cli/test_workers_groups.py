"""Groups across worker processes: the chat served by two workers on a real Redis.

Two workers are two nodes: users that the kernel spreads over both must
share #lobby, /who and every line, and the users of a worker killed with
SIGKILL must leave the other's presence within the configured TTL. The
broker is a redis-server this test starts on a free loopback port
(tests/brokers.py) and stops by PID.
"""

from __future__ import annotations

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

from tests import brokers

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


class Chat:
    """``wirekit serve`` of a chat config with two workers on Redis: its port and its workers."""

    def __init__(self, port: int, redis_port: int, pids: list[int]) -> None:
        self.port = port
        self.redis_port = redis_port
        self.pids = pids


@pytest.fixture
def chat(redis_broker: brokers.Broker, tmp_path: Path) -> Iterator[Chat]:
    config = tmp_path / "chat.toml"
    config.write_text(
        'protocol = "protocols.chat"\nurl = "tcp://127.0.0.1:0"\nworkers = 2\n'
        f'backplane = "{redis_broker.url}"\npresence_ttl = 1\n'
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
            assert proc.stderr is not None
            banner = proc.stdout.readline()
            match = re.search(r"tcp://127\.0\.0\.1:(\d+)", banner)
            assert match, f"no URL in {banner!r}"
            workers = re.search(r"pids ([\d, ]+)\)", proc.stderr.readline())
            assert workers, "no worker pids announced"
            pids = [int(pid) for pid in workers.group(1).split(", ")]
            yield Chat(int(match.group(1)), redis_broker.port, pids)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def on_both_workers(chat: Chat) -> list[User]:
    """Users, connected until #lobby has members on both workers.

    The kernel spreads connections over the workers by their ports: 30
    users all on one worker is a 1 in 2^29 chance.
    """
    users: list[User] = []
    while subscribers(chat.redis_port, "wirekit.chat.=23lobby") < 2:
        assert len(users) < 30, "every user landed on one worker"
        users.append(User(chat.port))
    return users


def who_says(user: User, expected: str, within: float = STEP) -> str:
    deadline = time.monotonic() + within
    while True:
        user.say("/who")
        line = user.until("* in #lobby")
        if line == expected or time.monotonic() > deadline:
            return line
        time.sleep(0.05)


def test_users_on_two_workers_share_rooms_who_and_lines(chat: Chat) -> None:
    # Both workers track the users group from the start: two nodes.
    assert subscribers(chat.redis_port, "wirekit.chat.users") == 2
    users = on_both_workers(chat)
    assert len({user.nick for user in users}) == len(users)
    expected = f"* in #lobby: {', '.join(sorted(user.nick for user in users))}"
    for user in users:
        assert who_says(user, expected) == expected
    first, last = users[0], users[-1]
    last.say("hello from the last one")
    assert first.until("hello from") == f"<{last.nick}> hello from the last one"
    first.say("and back")
    assert last.until("and back") == f"<{first.nick}> and back"
    for user in users:
        user.close()


def test_a_killed_worker_s_users_leave_presence_within_the_ttl(chat: Chat) -> None:
    users = on_both_workers(chat)
    everyone = f"* in #lobby: {', '.join(sorted(user.nick for user in users))}"
    assert who_says(users[0], everyone) == everyone
    os.kill(chat.pids[0], signal.SIGKILL)  # no goodbye: its users just stop being refreshed
    time.sleep(0.3)
    alive = []
    for user in users:
        user.say("/who")
        try:
            user.until("* in #lobby")
            alive.append(user)
        except (AssertionError, OSError):
            user.close()  # its worker is gone
    assert alive, "every user was on the killed worker"
    assert len(alive) < len(users)
    survivors = f"* in #lobby: {', '.join(sorted(user.nick for user in alive))}"
    # presence_ttl = 1 in the config: gone well before the 15 s default.
    assert who_says(alive[0], survivors, within=STEP) == survivors
    for user in users:
        user.close()
