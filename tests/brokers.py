"""Real brokers for the backplane tests: redis-server and nats-server on free loopback ports.

Each :class:`Broker` is a server process the test started itself, on
127.0.0.1 and a port nobody else holds, with no persistence. Tests stop it
by PID: :meth:`Broker.kill` is ``SIGKILL`` (a crash: no goodbye on the
sockets it held), :meth:`Broker.pause` is ``SIGSTOP`` (a broker that stalls
and reads nothing), :meth:`Broker.restart` starts it again on the same port,
and the fixtures always stop it at the end. :meth:`Broker.subscribers` asks
the broker itself how many connections subscribe to a backplane channel
(Redis ``PUBSUB NUMSUB``; nats-server's monitoring port, ``/connz``), so a
test can wait for the nodes' subscriptions whichever the broker. Without
the program the tests skip, saying which package to install; with ``CI``
set they fail instead, since CI installs both (``.ci/run``).

::

    def test_something(redis_broker: Broker) -> None:
        url = redis_broker.url            # redis://127.0.0.1:PORT/0
        redis_broker.kill(); redis_broker.restart()
        redis_broker.subscribers("wirekit.chat.users")  # 2 with two nodes up
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.runtime.backplane.nats import subject_for

__all__ = ["KINDS", "Broker", "broker_program", "free_port", "nats_broker", "redis_broker"]

#: What each kind of broker runs: program, Debian package, arguments, URL.
#: ``{monitor}`` is a second free port, for nats-server's HTTP monitoring.
KINDS = {
    "redis": (
        "redis-server",
        "redis-server",
        "--port {port} --bind 127.0.0.1 --save '' --appendonly no --daemonize no "
        "--loglevel warning",
        "redis://127.0.0.1:{port}/0",
    ),
    "nats": (
        "nats-server",
        "nats-server",
        "-a 127.0.0.1 -p {port} -m {monitor}",
        "nats://127.0.0.1:{port}",
    ),
}
#: Seconds a broker may take to accept connections: it takes milliseconds.
READY_TIMEOUT = 10.0
# Debian installs nats-server in /usr/sbin, outside a user's PATH.
_EXTRA_PATH = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def broker_program(kind: str) -> str:
    """The broker's executable; skips the test (fails it under ``CI``) when it is missing."""
    program, package, _, _ = KINDS[kind]
    found = shutil.which(program) or shutil.which(
        program, path=os.pathsep.join((os.environ.get("PATH", ""), *_EXTRA_PATH))
    )
    if found is None:
        reason = f"{program} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must install it (.ci/run)")
        pytest.skip(reason)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child, before exec
    """Linux: the kernel SIGKILLs the broker if the test process dies first.

    A test process ended by a hard timeout (pytest-timeout's thread method
    calls ``os._exit``) runs no ``finally``: without this its brokers would
    outlive it.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _answers(kind: str, port: int) -> bool:
    """Whether the broker on ``port`` speaks its protocol yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if kind == "redis":
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
            return sock.recv(64).startswith(b"INFO ")
    except OSError:
        return False


class Broker:
    """One broker process on a fixed loopback port, started and stopped by PID."""

    def __init__(self, kind: str, log_dir: Path) -> None:
        self.kind = kind
        self.program = broker_program(kind)
        self.port = free_port()
        # nats-server binds its monitoring port on the -a address: loopback.
        self.monitor_port = free_port()
        while self.monitor_port == self.port:
            self.monitor_port = free_port()
        _, _, arguments, url = KINDS[kind]
        self.args = [
            self.program,
            *_split(arguments.format(port=self.port, monitor=self.monitor_port)),
        ]
        self.url = url.format(port=self.port)
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<Broker {self.url} pid={pid}>"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the broker and wait until it answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(self.kind, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self} did not start:\n{log_text}")
            time.sleep(0.01)

    def subscribers(self, channel: str, timeout: float = 5.0) -> int:
        """How many connections (one per wirekit node) subscribe to backplane ``channel`` now.

        The broker's own count: Redis answers ``PUBSUB NUMSUB``, nats-server
        lists each connection's subjects on its monitoring port (the channel's
        subject as the NATS backplane names it, escaped if need be). The
        broker has a subscription once the node's ``subscribe`` returned, so
        what this reports includes every subscription a node has finished.
        """
        if self.kind == "redis":
            return _numsub(self.port, channel, timeout)
        subject = subject_for(channel)
        address = f"http://127.0.0.1:{self.monitor_port}/connz?subs=1&limit=100000"
        with urllib.request.urlopen(address, timeout=timeout) as response:
            connz = json.load(response)
        return sum(
            subject in connection.get("subscriptions_list", [])
            for connection in connz["connections"]
        )

    def kill(self) -> None:
        """``SIGKILL`` the broker: a crash, its sockets closed by the kernel."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def pause(self) -> None:
        """``SIGSTOP`` the broker: its sockets stay open, it reads nothing."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` a paused broker."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start it again on the same port (after :meth:`kill`)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL if it lingers) and reap it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused one would ignore SIGTERM until then
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _numsub(port: int, channel: str, timeout: float) -> int:
    """``PUBSUB NUMSUB channel`` over RESP on a plain socket: the channel's subscribers."""
    name = channel.encode()
    request = b"*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$%d\r\n%s\r\n" % (len(name), name)
    # The reply is an array of the channel (a bulk string) and its count (an integer).
    reply = re.compile(rb"\*2\r\n\$%d\r\n%s\r\n:(\d+)\r\n" % (len(name), re.escape(name)))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while (found := reply.fullmatch(data)) is None:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"redis on {port} closed before answering: {data!r}")
            data += chunk
            if data.startswith(b"-") and data.endswith(b"\r\n"):
                raise ConnectionError(f"redis on {port} refused PUBSUB NUMSUB: {data!r}")
    return int(found.group(1))


def _split(arguments: str) -> list[str]:
    # ``--save ''`` is one empty argument, as a shell would pass it.
    return ["" if part == "''" else part for part in arguments.split()]


def _broker(kind: str, tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(kind, tmp_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[Broker]:
    """A redis-server of this test's own, stopped at its end."""
    yield from _broker("redis", tmp_path)


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[Broker]:
    """A nats-server of this test's own, stopped at its end."""
    yield from _broker("nats", tmp_path)
