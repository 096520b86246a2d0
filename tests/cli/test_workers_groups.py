"""Groups across worker processes: the chat served by two workers on a real Redis and a real NATS.

Two workers are two nodes: users that the kernel spreads over both must
share #lobby, /who and every line, and the users of a worker killed with
SIGKILL must leave the other's presence within the configured TTL. The
broker is a redis-server or a nats-server this test starts on a free
loopback port (tests/brokers.py) and stops by PID. Which worker holds a
user is read from the workers' sockets (psutil), and whether both nodes
are subscribed to a room from the broker itself
(:meth:`~tests.brokers.Broker.subscribers`), so the tests wait for facts,
not for time.
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

import psutil
import pytest

from framework.core.groups import channel_name
from protocols import chat as chat_protocol
from tests.brokers import Broker, nats_broker, redis_broker

__all__ = ["nats_broker", "redis_broker"]  # the fixtures, for getfixturevalue

ROOT = Path(__file__).resolve().parents[2]
#: Seconds any single step may take before the test fails.
STEP = 5.0
#: The channels of the chat's groups, as every backplane carries them.
LOBBY = channel_name("chat", "#lobby")
USERS = channel_name("chat", chat_protocol.USERS)


class User:
    """A chat user on a plain socket, as nc would be."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        self.file = self.sock.makefile("rwb")
        welcome = self.line()
        assert welcome.startswith("* welcome, "), welcome
        self.nick = welcome.split()[2].rstrip("!")
        self.local_port: int = self.sock.getsockname()[1]

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

    def ended(self) -> bool:
        """Whether the server closed the connection (read to its end, at most STEP per line)."""
        try:
            while self.file.readline():
                pass
        except ConnectionResetError:
            pass  # a worker's death may reset the connection rather than end it
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Chat:
    """``wirekit serve`` of a chat config with two workers: its port, broker and workers."""

    def __init__(self, port: int, broker: Broker, pids: list[int]) -> None:
        self.port = port
        self.broker = broker
        self.pids = pids

    def worker_of(self, user: User) -> int:
        """The pid of the worker that holds ``user``'s connection.

        The user got its welcome, so a worker accepted the connection and
        holds its socket: the one whose peer is the user's own port.
        """
        holders = [
            pid
            for pid in self.pids
            for conn in psutil.Process(pid).net_connections("tcp")
            if conn.laddr
            and conn.laddr.port == self.port
            and conn.raddr
            and conn.raddr.port == user.local_port
        ]
        assert len(holders) == 1, f"{user.nick}'s connection is held by {holders}"
        return holders[0]


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Broker:
    found: Broker = request.getfixturevalue(f"{request.param}_broker")
    return found


@pytest.fixture
def chat(broker: Broker, tmp_path: Path) -> Iterator[Chat]:
    config = tmp_path / "chat.toml"
    config.write_text(
        'protocol = "protocols.chat"\nurl = "tcp://127.0.0.1:0"\nworkers = 2\n'
        f'backplane = "{broker.url}"\npresence_ttl = 1\n'
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
            assert len(pids) == 2, pids
            yield Chat(int(match.group(1)), broker, pids)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def on_both_workers(chat: Chat) -> dict[int, list[User]]:
    """Users, connected until each worker holds one; by worker pid, once both rooms are linked.

    The kernel spreads connections over the workers by their ports: 30
    users all on one worker is a 1 in 2^29 chance. A worker subscribes to
    #lobby's channel when its first user joins, a moment after the welcome:
    this returns once the broker counts both subscriptions, so a line sent
    on one worker then reaches the other.
    """
    placed: dict[int, list[User]] = {pid: [] for pid in chat.pids}
    while not all(placed.values()):
        assert sum(map(len, placed.values())) < 30, "every user landed on one worker"
        user = User(chat.port)
        placed[chat.worker_of(user)].append(user)
    deadline = time.monotonic() + STEP
    while (count := chat.broker.subscribers(LOBBY)) != 2:
        assert time.monotonic() < deadline, f"{count} nodes subscribed to {LOBBY}"
        time.sleep(0.02)
    return placed


def who_says(user: User, expected: str, within: float = STEP) -> str:
    deadline = time.monotonic() + within
    while True:
        user.say("/who")
        line = user.until("* in #lobby")
        if line == expected or time.monotonic() > deadline:
            return line
        time.sleep(0.05)


def in_lobby(users: list[User]) -> str:
    return f"* in #lobby: {', '.join(sorted(user.nick for user in users))}"


def test_users_on_two_workers_share_rooms_who_and_lines(chat: Chat) -> None:
    # Both workers track the users group before they serve: two nodes from the start.
    assert chat.broker.subscribers(USERS) == 2
    placed = on_both_workers(chat)
    users = [user for pid in chat.pids for user in placed[pid]]
    assert len({user.nick for user in users}) == len(users)  # numbers unique across nodes
    everyone = in_lobby(users)
    for user in users:
        assert who_says(user, everyone) == everyone
    # One user on each worker: each line crosses the backplane.
    here, there = placed[chat.pids[0]][0], placed[chat.pids[1]][0]
    there.say("hello from the other worker")
    assert here.until("hello from") == f"<{there.nick}> hello from the other worker"
    here.say("and back")
    assert there.until("and back") == f"<{here.nick}> and back"
    for user in users:
        user.close()


def test_a_killed_worker_s_users_leave_presence_within_the_ttl(chat: Chat) -> None:
    placed = on_both_workers(chat)
    doomed, alive = placed[chat.pids[0]], placed[chat.pids[1]]
    everyone = in_lobby(doomed + alive)
    assert who_says(alive[0], everyone) == everyone
    os.kill(chat.pids[0], signal.SIGKILL)  # no goodbye: its users just stop being refreshed
    for user in doomed:
        assert user.ended(), f"{user.nick}'s connection outlived its worker"
    # presence_ttl = 1 in the config: gone well before the 15 s default.
    survivors = in_lobby(alive)
    for user in alive:
        assert who_says(user, survivors) == survivors
    for user in doomed + alive:
        user.close()
