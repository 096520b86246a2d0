"""The fan-out load: chat members and senders on plain sockets, in their own processes.

A *member* process holds a share of the room's members (sockets in the
default room #lobby of ``protocols.chat``) and counts the lines they
receive inside a measuring window; a few members of each node are
*observers* that also read the send time each line carries and record the
latency, split into same-node and cross-node. The *sender* process holds
the S senders (members too) and sends lines at a fixed total rate, round
robin, each line ``<node> <seq> <monotonic_ns>``. CLOCK_MONOTONIC is one
clock for every process of a Linux machine, so a latency is a subtraction.

Commands go to the processes over pipes: ``("window", t0, t1)`` to
members, ``("send", rate, t0, t1)`` to the sender; each answers once the
window has ended.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Room", "WindowResult"]

READ_SIZE = 1 << 18
#: Seconds a bulk member process sleeps between rounds of reads (see _members).
COALESCE = 0.005


@dataclass
class WindowResult:
    """What the load processes saw in one window."""

    deliveries: int = 0
    lines_sent: int = 0
    same_node_ns: list[int] = field(default_factory=list)
    cross_node_ns: list[int] = field(default_factory=list)
    disconnected: int = 0

    def add(self, other: dict[str, Any]) -> None:
        self.deliveries += other["deliveries"]
        self.lines_sent += other.get("lines_sent", 0)
        self.same_node_ns += other.get("same", [])
        self.cross_node_ns += other.get("cross", [])
        self.disconnected += other["disconnected"]


def _join(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b""
    while b"\n" not in data:  # the welcome line: the member is in #lobby
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"chat on port {port} closed the connection")
        data += chunk
    sock.setblocking(False)
    return sock


def _members(
    pipe: multiprocessing.connection.Connection,
    seats: list[tuple[int, int, bool]],
    coalesce: float,
) -> None:
    """A member process: ``seats`` are (node, port, observer).

    ``coalesce`` seconds of sleep after each round of reads let several
    lines gather in each socket, so that one ``recv`` takes them all: the
    load generator's CPU per delivery drops several times, and the nodes,
    not the generator, are what is measured. Observers run with 0.
    """
    selector = selectors.DefaultSelector()
    partial: dict[socket.socket, bytes] = {}
    for node, port, observer in seats:
        sock = _join(port)
        selector.register(sock, selectors.EVENT_READ, (node, observer))
        if observer:
            partial[sock] = b""
    pipe.send("ready")
    window: tuple[int, int] | None = None
    result: dict[str, Any] = {}
    disconnected = 0
    while True:
        if pipe.poll():
            command = pipe.recv()
            if command[0] == "stop":
                break
            window = (command[1], command[2])
            result = {"deliveries": 0, "same": [], "cross": []}
        for key, _ in selector.select(0.005):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                disconnected += 1
                continue
            now = time.monotonic_ns()
            if window is None or not window[0] <= now < window[1]:
                if sock in partial:
                    partial[sock] = data.rpartition(b"\n")[2]
                continue
            result["deliveries"] += data.count(b"\n")
            node, observer = key.data
            if observer:
                lines = (partial[sock] + data).split(b"\n")
                partial[sock] = lines.pop()
                for line in lines:
                    _, _, text = line.partition(b"> ")
                    parts = text.split(b" ")
                    if len(parts) == 3 and parts[0].isdigit():
                        kind = "same" if int(parts[0]) == node else "cross"
                        result[kind].append(now - int(parts[2]))
        if window is not None and time.monotonic_ns() >= window[1]:
            result["disconnected"] = disconnected
            pipe.send(result)
            window = None
        if coalesce:
            time.sleep(coalesce)


def _sender(pipe: multiprocessing.connection.Connection, seats: list[tuple[int, int]]) -> None:
    """The sender process: ``seats`` are (node, port)."""
    socks = [(node, _join(port)) for node, port in seats]
    for _, sock in socks:
        sock.setblocking(True)
    pipe.send("ready")
    seq = 0
    while True:
        command = pipe.recv()
        if command[0] == "stop":
            break
        _, rate, t0, t1 = command
        deliveries = sent = issued = 0
        start = time.monotonic_ns()
        interval = 1e9 / rate
        while (now := time.monotonic_ns()) < t1:
            # Open loop: as many lines as the rate says by now (a late
            # sender catches up in bursts of at most 1,000).
            due = min(int((now - start) / interval) + 1 - issued, 1000)
            for _ in range(max(0, due)):
                node, sock = socks[seq % len(socks)]
                sock.sendall(b"%d %d %d\n" % (node, seq, time.monotonic_ns()))
                seq += 1
                issued += 1
                if t0 <= now:
                    sent += 1
            for _, sock in socks:  # senders are members: read what the others say
                try:
                    data = sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                if t0 <= now:
                    deliveries += data.count(b"\n")
            time.sleep(0.0005)
        pipe.send({"deliveries": deliveries, "lines_sent": sent, "disconnected": 0})


class Room:
    """M members (S of them senders) spread round robin over the nodes' ports."""

    def __init__(
        self, ports: list[int], members: int, senders: int, processes: int, observers: int
    ) -> None:
        context = multiprocessing.get_context("spawn")
        nodes = len(ports)
        listeners = members - senders
        seats = [(i % nodes, ports[i % nodes], i < observers * nodes) for i in range(listeners)]
        # The observers in a process of their own that reads at once (latency),
        # the other members in processes that read in coalesced rounds (cost).
        shares = [([seat for seat in seats if seat[2]], 0.0)]
        bulk = [seat for seat in seats if not seat[2]]
        shares += [(bulk[share::processes], COALESCE) for share in range(processes)]
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for share, coalesce in shares:
            mine, theirs = context.Pipe()
            proc = context.Process(target=_members, args=(theirs, share, coalesce))
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)
        mine, theirs = context.Pipe()
        sender_seats = [(i % nodes, ports[i % nodes]) for i in range(senders)]
        proc = context.Process(target=_sender, args=(theirs, sender_seats))
        proc.start()
        self.sender = mine
        self.procs.append(proc)
        for pipe in [*self.pipes, self.sender]:
            if not pipe.poll(60) or pipe.recv() != "ready":
                self.close()
                raise RuntimeError("the load processes did not connect")

    def run(self, rate: float, warmup: float, duration: float) -> WindowResult:
        """Send ``rate`` lines/s for ``warmup + duration`` s; measure the last ``duration``."""
        now = time.monotonic_ns()
        t0 = now + int(warmup * 1e9)
        t1 = t0 + int(duration * 1e9)
        for pipe in self.pipes:
            pipe.send(("window", t0, t1))
        self.sender.send(("send", rate, t0, t1))
        result = WindowResult()
        for pipe in [*self.pipes, self.sender]:
            result.add(pipe.recv())
        return result

    def close(self) -> None:
        for pipe in [*self.pipes, self.sender] if hasattr(self, "sender") else self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
