"""Load and soak: many peers, every reply checked, the server's memory watched.

Two ways to run it, all on loopback only, every loop bounded in count and time::

    python -m benchmarks.soak --minutes 10     # the soak (--minutes 0.5 for a smoke run)
    python -m benchmarks.soak --load           # the full-size load tests, once

The server is one wirekit :class:`~framework.App` (length-prefix + msgpack,
typed messages) served on TCP and UDP by one process. Every request carries
its connection (or peer) id, a sequence number and a payload; the reply
carries the id, the sequence number and the CRC-32 of the payload, so a reply
that went to the wrong connection, came out of order or was corrupted is a
*mismatch*, and a request never answered is *lost*: both are counted, per
connection, never inferred.

The clients are plain non-blocking sockets driven by ``epoll`` (no wirekit,
no asyncio), each kind in its own process, so the server's core is the one
being measured. ``tests/runtime/test_load.py`` uses the same app and clients at a
size CI can afford; this module runs the full size and the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import attrs
import msgpack
import psutil

from framework import App, Limits, Pipeline, message

__all__ = [
    "Reply",
    "Request",
    "TcpResult",
    "UdpResult",
    "build_app",
    "fitting_connections",
    "raise_fd_limit",
    "run_tcp_clients",
    "run_udp_peers",
    "server_limits",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: File descriptors kept free for the process's own files, the event loop, pipes.
FD_MARGIN = 64
PAYLOAD_REPEAT = 4  # a request's payload: its (id, seq) header repeated, 32 bytes


# -- the protocol under load ---------------------------------------------------------------


@message("load.request")
@attrs.frozen
class Request:
    """One request: who sends it, its number, and bytes to checksum."""

    id: int
    seq: int
    data: bytes


@message("load.reply")
@attrs.frozen
class Reply:
    """The answer: the request's id and number, and the CRC-32 of its data."""

    id: int
    seq: int
    crc: int


def build_app() -> App:
    """The load server: one typed handler, the same on TCP and on UDP."""
    app = App(Pipeline(framing="length-prefix", codecs="msgpack", messages=[Request, Reply]))

    @app.on(Request)
    def answer(request: Request, conn: Any) -> Reply:
        return Reply(request.id, request.seq, zlib.crc32(request.data))

    return app


def server_limits(connections: int, *, idle_timeout: float | None = 300.0) -> Limits:
    """Limits for a load run: every client comes from 127.0.0.1, so no per-address cap."""
    return Limits(
        max_connections=connections + FD_MARGIN,
        max_connections_per_peer=None,
        idle_timeout=idle_timeout,
    )


def payload(peer: int, seq: int) -> bytes:
    """The data of request ``seq`` from ``peer``: different for every request."""
    return (peer.to_bytes(4, "big") + seq.to_bytes(4, "big")) * PAYLOAD_REPEAT


def encode_request(peer: int, seq: int) -> bytes:
    """A request's msgpack envelope, as any peer in any language would write it."""
    data: bytes = msgpack.packb(
        {"type": "load.request", "id": peer, "seq": seq, "data": payload(peer, seq)}
    )
    return data


def reply_matches(reply: Any, peer: int, seq: int) -> bool:
    """Whether ``reply`` (a decoded envelope) answers request ``seq`` of ``peer``."""
    return (
        isinstance(reply, dict)
        and reply.get("type") == "load.reply"
        and reply.get("id") == peer
        and reply.get("seq") == seq
        and reply.get("crc") == zlib.crc32(payload(peer, seq))
    )


# -- file descriptors ----------------------------------------------------------------------


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def open_fds() -> int:
    """How many file descriptors this process has open."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:  # not Linux
        return 0


def fitting_connections(wanted: int, *, fds_per_connection: int = 2) -> tuple[int, str | None]:
    """``wanted``, or fewer if this process's fd limit cannot hold them; and why, if fewer."""
    soft, _hard = raise_fd_limit()
    if soft == resource.RLIM_INFINITY:
        return wanted, None
    room = (soft - open_fds() - FD_MARGIN) // fds_per_connection
    if room >= wanted:
        return wanted, None
    fits = max(room, 1)
    return fits, (
        f"RLIMIT_NOFILE is {soft}: {wanted} connections need {fds_per_connection} fds each "
        f"plus {FD_MARGIN} spare; scaled down to {fits} connections"
    )


# -- TCP clients ---------------------------------------------------------------------------


@dataclass
class TcpResult:
    """What the TCP clients saw: per connection, replies that matched, mismatched, never came."""

    connections: int
    requests: int  # per connection
    ok: list[int]
    mismatched: list[int]
    lost: list[int]
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    connect_seconds: float = 0.0

    @property
    def total_ok(self) -> int:
        """Replies that matched their request, over all connections."""
        return sum(self.ok)

    @property
    def requests_per_second(self) -> float:
        """Matched replies per second of the request phase."""
        return self.total_ok / self.seconds if self.seconds else 0.0


class _TcpConn:
    __slots__ = ("buf", "closed", "mismatched", "next_seq", "ok", "peer", "sock")

    def __init__(self, peer: int, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.buf = bytearray()
        self.next_seq = 0  # the request outstanding
        self.ok = 0
        self.mismatched = 0
        self.closed = False


def run_tcp_clients(
    address: tuple[str, int],
    connections: int,
    requests: int,
    *,
    first_id: int = 0,
    timeout: float = 60.0,
) -> TcpResult:
    """Open ``connections`` at once, then run ``requests`` request/replies on each.

    One request is outstanding per connection (the next one goes out when its
    reply is in), so every connection is busy at the same time. Gives up after
    ``timeout`` seconds; what is unanswered then is counted lost.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    conns: dict[int, _TcpConn] = {}
    errors: list[str] = []
    poller = select.epoll()
    try:
        for index in range(connections):
            sock = socket.create_connection(address, timeout=max(deadline - time.monotonic(), 1))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conns[sock.fileno()] = _TcpConn(first_id + index, sock)
            poller.register(sock.fileno(), select.EPOLLIN)
        connected = time.monotonic()
        for conn in conns.values():
            # One small request on an idle socket: send() takes all of it.
            conn.sock.send(_frame(encode_request(conn.peer, 0)))
        running = len(conns) if requests else 0
        while running and time.monotonic() < deadline:
            for fd, _events in poller.poll(0.1):
                conn = conns[fd]
                running -= _tcp_readable(conn, requests, errors)
                if conn.closed:
                    poller.unregister(fd)
        finished = time.monotonic()
        if running:
            errors.append(f"{running} connections still waiting after {timeout:.0f} s")
    finally:
        poller.close()
        for conn in conns.values():
            conn.sock.close()
    ordered = sorted(conns.values(), key=lambda c: c.peer)
    return TcpResult(
        connections=connections,
        requests=requests,
        ok=[c.ok for c in ordered],
        mismatched=[c.mismatched for c in ordered],
        lost=[requests - c.ok - c.mismatched for c in ordered],
        errors=errors,
        seconds=finished - connected,
        connect_seconds=connected - started,
    )


def _tcp_readable(conn: _TcpConn, requests: int, errors: list[str]) -> int:
    """Read what ``conn`` has, check each reply, send the next request; 1 if it is done."""
    try:
        data = conn.sock.recv(65536)
    except BlockingIOError:
        return 0
    except OSError as exc:
        data = b""
        errors.append(f"connection {conn.peer}: {exc}")
    if not data:
        conn.closed = True
        if conn.next_seq < requests:
            errors.append(f"connection {conn.peer} closed by the server at request {conn.next_seq}")
            return 1
        return 0
    buf = conn.buf
    buf += data
    while len(buf) >= 4:
        size = int.from_bytes(buf[:4], "big")
        if len(buf) < 4 + size:
            break
        reply = msgpack.unpackb(bytes(buf[4 : 4 + size]))
        del buf[: 4 + size]
        if reply_matches(reply, conn.peer, conn.next_seq):
            conn.ok += 1
        else:
            conn.mismatched += 1
        conn.next_seq += 1
        if conn.next_seq == requests:
            conn.closed = True
            return 1
        conn.sock.send(_frame(encode_request(conn.peer, conn.next_seq)))
    return 0


def _frame(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


# -- UDP peers ------------------------------------------------------------------------------


@dataclass
class UdpResult:
    """What the UDP peers saw. ``lost`` = sent - echoed: never silent, never guessed."""

    peers: int
    datagrams: int  # per peer
    sent: int
    echoed: int  # distinct requests answered correctly
    lost: int
    late: int  # answered after the peer had given up waiting (still echoed, not lost)
    duplicates: int
    mismatched: int
    lost_per_peer: list[int]
    seconds: float = 0.0
    #: Replies for a peer of an earlier run that had this socket's port: the
    #: kernel reuses ports, and the server answers late what it had queued.
    strays: int = 0


@dataclass
class _UdpTally:
    duplicates: int = 0
    mismatched: int = 0
    late: int = 0
    strays: int = 0


class _UdpPeer:
    __slots__ = ("echoed", "last_reply", "next_seq", "outstanding", "peer", "presumed", "sock")

    def __init__(self, peer: int, sock: socket.socket, count: int) -> None:
        self.peer = peer
        self.sock = sock
        self.next_seq = 0
        self.outstanding: set[int] = set()
        self.presumed: set[int] = set()  # given up on; a late reply still counts
        self.echoed = bytearray(count)
        self.last_reply = 0.0


def run_udp_peers(
    address: tuple[str, int],
    peers: int,
    datagrams: int,
    *,
    window: int = 2,
    first_id: int = 0,
    patience: float = 0.2,
    drain: float = 0.5,
    timeout: float = 60.0,
) -> UdpResult:
    """``peers`` UDP sockets each send ``datagrams`` numbered requests, ``window`` in flight.

    A peer that hears nothing for ``patience`` seconds presumes its
    outstanding datagrams lost and goes on; after the last one is sent the
    peers listen ``drain`` seconds more for late replies. Every reply is
    checked against the request it names.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    poller = select.epoll()
    by_fd: dict[int, _UdpPeer] = {}
    tally = _UdpTally()
    try:
        for index in range(peers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.connect(address)
            sock.setblocking(False)
            by_fd[sock.fileno()] = _UdpPeer(first_id + index, sock, datagrams)
            poller.register(sock.fileno(), select.EPOLLIN)
        now = time.monotonic()
        for state in by_fd.values():
            state.last_reply = now
            _udp_refill(state, datagrams, window)
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            for fd, _events in poller.poll(0.05):
                _udp_readable(by_fd[fd], datagrams, window, first_id, tally)
            now = time.monotonic()
            busy = False
            for state in by_fd.values():
                if state.outstanding and now - state.last_reply > patience:
                    state.presumed |= state.outstanding
                    state.outstanding.clear()
                    state.last_reply = now
                    _udp_refill(state, datagrams, window)
                busy = busy or bool(state.outstanding) or state.next_seq < datagrams
            if busy:
                continue
            # Everything sent and answered or given up on: wait for stragglers.
            if not any(state.presumed for state in by_fd.values()):
                break
            quiet_since = quiet_since if quiet_since is not None else now
            if now - quiet_since > drain:
                break
    finally:
        poller.close()
        for state in by_fd.values():
            state.sock.close()
    ordered = sorted(by_fd.values(), key=lambda s: s.peer)
    echoed = [sum(s.echoed) for s in ordered]
    sent = sum(s.next_seq for s in ordered)
    return UdpResult(
        peers=peers,
        datagrams=datagrams,
        sent=sent,
        echoed=sum(echoed),
        lost=sent - sum(echoed),
        late=tally.late,
        duplicates=tally.duplicates,
        mismatched=tally.mismatched,
        lost_per_peer=[s.next_seq - e for s, e in zip(ordered, echoed, strict=True)],
        seconds=time.monotonic() - started,
        strays=tally.strays,
    )


def _udp_refill(state: _UdpPeer, datagrams: int, window: int) -> None:
    while len(state.outstanding) < window and state.next_seq < datagrams:
        seq = state.next_seq
        state.sock.send(encode_request(state.peer, seq))
        state.outstanding.add(seq)
        state.next_seq += 1


def _udp_readable(
    state: _UdpPeer, datagrams: int, window: int, first_id: int, tally: _UdpTally
) -> None:
    """Take every datagram waiting on ``state``'s socket, check it, count it in ``tally``."""
    while True:
        try:
            data = state.sock.recv(65536)
        except BlockingIOError:
            break
        except ConnectionRefusedError:
            continue  # ICMP for an earlier datagram: the server is gone, replies stop
        try:
            reply = msgpack.unpackb(data)
            seq = reply["seq"]
        except (ValueError, KeyError, TypeError, msgpack.ExtraData):
            tally.mismatched += 1
            continue
        peer = reply.get("id")
        if isinstance(peer, int) and 0 <= peer < first_id:
            tally.strays += 1  # for an earlier run's peer that had this port
            continue
        known = isinstance(seq, int) and 0 <= seq < state.next_seq
        if not known or not reply_matches(reply, state.peer, seq):
            tally.mismatched += 1
        elif state.echoed[seq]:
            tally.duplicates += 1
        else:
            state.echoed[seq] = 1
            if seq in state.outstanding:
                state.outstanding.discard(seq)
            else:
                state.presumed.discard(seq)
                tally.late += 1
            state.last_reply = time.monotonic()
    _udp_refill(state, datagrams, window)


# -- the server process ----------------------------------------------------------------------


def _serve(idle_timeout: float, connections: int, *, uvloop: bool = False) -> None:
    """Child: serve the load app on TCP and UDP; print ports, then stats on SIGTERM."""
    raise_fd_limit()

    async def main() -> None:
        app = build_app()
        limits = server_limits(connections, idle_timeout=idle_timeout)
        tcp = await app.start("tcp://127.0.0.1:0", limits=limits)
        udp = await app.start("udp://127.0.0.1:0", limits=limits)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop_name = type(loop).__module__.split(".")[0]
        print("ready", tcp.endpoint.port, udp.endpoint.port, loop_name, flush=True)
        await stop.wait()
        await tcp.close()
        await udp.close()
        stats = udp.datagram_stats
        assert stats is not None
        print("stats", json.dumps(attrs.asdict(stats)), flush=True)

    if uvloop:
        import uvloop as uv  # an optional extra: wirekit[uvloop]

        uv.run(main())
    else:
        asyncio.run(main())


class ServerProcess:
    """The load server in its own process (so its RSS and fds are its own)."""

    def __init__(
        self, *, idle_timeout: float = 300.0, connections: int = 1000, uvloop: bool = False
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--serve",
            "--idle-timeout",
            str(idle_timeout),
            "--connections",
            str(connections),
            *(["--uvloop"] if uvloop else []),
        ]
        self.popen = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().split()
        if not line or line[0] != "ready":
            self.popen.kill()
            raise RuntimeError(f"the load server did not start (said {line!r})")
        self.tcp = ("127.0.0.1", int(line[1]))
        self.udp = ("127.0.0.1", int(line[2]))
        self.loop = line[3]
        self.pid = self.popen.pid

    def stop(self) -> dict[str, int]:
        """Shut the server down gracefully; its UDP counters."""
        self.popen.send_signal(signal.SIGTERM)
        out, _ = self.popen.communicate(timeout=30)
        for line in out.splitlines():
            if line.startswith("stats "):
                stats: dict[str, int] = json.loads(line[len("stats ") :])
                return stats
        raise RuntimeError(f"the load server exited ({self.popen.returncode}) with no stats")

    def kill(self) -> None:
        """End the server if it still runs (after an error)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def udp_accounting(stats: dict[str, int]) -> tuple[int, int]:
    """(received, replied + dropped): equal when the server lost track of nothing."""
    dropped = sum(value for key, value in stats.items() if key.startswith("dropped_"))
    return stats["received"], stats["sent"] + dropped


# -- the full-size load run ------------------------------------------------------------------


def load(
    connections: int,
    requests: int,
    peers: int,
    datagrams: int,
    *,
    window: int = 2,
    patience: float = 0.2,
    uvloop: bool = False,
) -> int:
    """Run the load tests at full size against a server process; 0 if nothing was lost."""
    connections, note = fitting_connections(connections, fds_per_connection=1)
    if note:
        print(note)
    server = ServerProcess(connections=connections, uvloop=uvloop)
    print(_setting(server))
    try:
        tcp = run_tcp_clients(server.tcp, connections, requests)
        udp = run_udp_peers(server.udp, peers, datagrams, window=window, patience=patience)
        stats = server.stop()
    finally:
        server.kill()
    total = connections * requests
    print(
        f"TCP: {connections} connections x {requests} requests = {total:,}: "
        f"{tcp.total_ok:,} matched, {sum(tcp.mismatched)} mismatched, {sum(tcp.lost)} lost; "
        f"connect {tcp.connect_seconds:.2f} s, requests {tcp.seconds:.2f} s "
        f"({tcp.requests_per_second:,.0f} req/s)"
    )
    for error in tcp.errors[:10]:
        print("   ", error)
    _print_udp(udp, stats)
    received, accounted = udp_accounting(stats)
    clean = not tcp.errors and tcp.total_ok == total and received == accounted
    print("verdict:", "nothing lost on TCP, every UDP datagram accounted for" if clean else "FAIL")
    return 0 if clean else 1


def _setting(server: ServerProcess) -> str:
    """When and where: the figures mean little without it on a shared machine."""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}; server pid {server.pid}, {server.loop} loop"
    )


def _print_udp(udp: UdpResult, stats: dict[str, int]) -> None:
    worst = max(udp.lost_per_peer, default=0)
    print(
        f"UDP: {udp.peers} peers x {udp.datagrams} datagrams: sent {udp.sent:,}, "
        f"echoed {udp.echoed:,}, lost {udp.lost:,} ({100 * udp.lost / max(udp.sent, 1):.2f} %, "
        f"worst peer {worst}), late {udp.late}, duplicates {udp.duplicates}, "
        f"mismatched {udp.mismatched}; {udp.seconds:.2f} s "
        f"({udp.echoed / udp.seconds if udp.seconds else 0:,.0f} datagrams/s)"
    )
    received, accounted = udp_accounting(stats)
    print(
        f"     server: received {received:,} = replied {stats['sent']:,} + dropped "
        f"{accounted - stats['sent']:,} ({_dropped(stats)}); lost before the server's "
        f"socket: {udp.sent - received:,}; lost on the way back: {stats['sent'] - udp.echoed:,}"
    )


def _dropped(stats: dict[str, int]) -> str:
    parts = [f"{key[8:]} {value}" for key, value in stats.items() if key.startswith("dropped_")]
    return ", ".join(parts)


# -- the soak ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One point of the soak curve."""

    seconds: float
    tcp_requests: int
    udp_datagrams: int
    rss_mib: float
    fds: int


# Shared counters of the soak's client processes (int64, updated once per round).
(
    TCP_OK,
    TCP_MISMATCHED,
    TCP_LOST,
    UDP_SENT,
    UDP_ECHOED,
    UDP_LOST,
    ROUNDS,
    ERRORS,
    STRAYS,
    UDP_BAD,
) = range(10)


@dataclass(frozen=True)
class Round:
    """One soak round: fresh connections and peers each time, so churn is soaked too.

    ``connections=0`` (or ``peers=0``) leaves that transport without load.
    """

    connections: int = 100
    requests: int = 100
    peers: int = 50
    datagrams: int = 200
    window: int = 1
    patience: float = 0.2


#: The sizes of ``--load``: the issue's 1,000 x 100 TCP and 200 x 1,000 UDP.
FULL_LOAD = Round(connections=1000, requests=100, peers=200, datagrams=1000, window=2)


def _soak_tcp(address: tuple[str, int], until: float, counters: Any, shape: Round) -> None:
    first = 0
    while shape.connections and time.monotonic() < until:
        result = run_tcp_clients(address, shape.connections, shape.requests, first_id=first)
        first += shape.connections
        counters[TCP_OK] += result.total_ok
        counters[TCP_MISMATCHED] += sum(result.mismatched)
        counters[TCP_LOST] += sum(result.lost)
        counters[ERRORS] += len(result.errors)
        counters[ROUNDS] += 1
        for error in result.errors[:3]:
            print("TCP error:", error, flush=True)


def _soak_udp(address: tuple[str, int], until: float, counters: Any, shape: Round) -> None:
    first = 0
    while shape.peers and time.monotonic() < until:
        result = run_udp_peers(
            address,
            shape.peers,
            shape.datagrams,
            first_id=first,
            window=shape.window,
            patience=shape.patience,
            drain=0.2,
        )
        first += shape.peers
        counters[UDP_SENT] += result.sent
        counters[UDP_ECHOED] += result.echoed
        counters[UDP_LOST] += result.lost
        counters[UDP_BAD] += result.mismatched + result.duplicates
        counters[STRAYS] += result.strays


def soak(
    minutes: float,
    interval: float | None,
    idle_timeout: float,
    *,
    shape: Round = Round(),
    uvloop: bool = False,
    markdown: bool = False,
) -> int:
    """Load one server with TCP and UDP for ``minutes``; sample its memory; 0 if flat and whole."""

    duration = minutes * 60
    interval = interval if interval is not None else max(1.0, min(5.0, duration / 12))
    server = ServerProcess(idle_timeout=idle_timeout, connections=shape.connections, uvloop=uvloop)
    process = psutil.Process(server.pid)
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", UDP_BAD + 1, lock=False)
    samples: list[Sample] = []
    print(
        f"soak: {minutes:g} min; {_setting(server)}; rounds of {shape.connections} TCP "
        f"connections x {shape.requests} requests and {shape.peers} UDP peers x "
        f"{shape.datagrams} datagrams, {shape.window} in flight, patience "
        f"{shape.patience:g} s; server idle_timeout {idle_timeout:g} s",
        flush=True,
    )
    print(f"{'time s':>8} {'TCP replies':>12} {'UDP echoes':>12} {'RSS MiB':>8} {'fds':>5}")
    started = time.monotonic()
    until = started + duration
    workers = [
        ctx.Process(target=_soak_tcp, args=(server.tcp, until, counters, shape), daemon=True),
        ctx.Process(target=_soak_udp, args=(server.udp, until, counters, shape), daemon=True),
    ]
    try:
        for worker in workers:
            worker.start()
        next_sample = started
        while True:
            samples.append(_sample(process, counters, started))
            next_sample += interval
            if next_sample > until:
                break
            time.sleep(max(0.0, next_sample - time.monotonic()))
        for worker in workers:
            # A round started just before the deadline finishes first.
            worker.join(max(1.0, until + 120 - time.monotonic()))
            if worker.is_alive():
                raise RuntimeError("soak clients did not stop two minutes after the deadline")
        # After the last round: give the server a moment to see the last closes.
        settle = time.monotonic() + 5
        while process.num_fds() > samples[0].fds and time.monotonic() < settle:
            time.sleep(0.1)
        samples.append(_sample(process, counters, started))
        stats = server.stop()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join(5)
        server.kill()
    if markdown:
        print(markdown_table(samples))
    return _verdict(samples, list(counters), stats)


def _sample(process: psutil.Process, counters: Any, started: float) -> Sample:
    sample = Sample(
        seconds=time.monotonic() - started,
        tcp_requests=counters[TCP_OK],
        udp_datagrams=counters[UDP_ECHOED],
        rss_mib=process.memory_info().rss / 2**20,
        fds=process.num_fds(),
    )
    print(
        f"{sample.seconds:8.0f} {sample.tcp_requests:12,} {sample.udp_datagrams:12,} "
        f"{sample.rss_mib:8.1f} {sample.fds:5}",
        flush=True,
    )
    return sample


def markdown_table(samples: list[Sample], rows: int = 24) -> str:
    """The soak curve as a Markdown table of at most ``rows`` evenly spaced samples."""
    step = max(1, -(-len(samples) // rows))
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    lines = [
        "| time (s) | TCP replies | UDP echoes | server RSS (MiB) | server fds |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.seconds:.0f} | {s.tcp_requests:,} | {s.udp_datagrams:,} "
        f"| {s.rss_mib:.1f} | {s.fds} |"
        for s in picked
    ]
    return "\n".join(lines)


def memory_verdict(samples: list[Sample], *, tolerance: float = 0.05) -> tuple[bool, str]:
    """Flat if, after a warm-up fifth, the last quarter's mean RSS is within ``tolerance``
    of the first quarter's (more samples than that: compared by quarter)."""
    steady = samples[max(1, len(samples) // 5) :]
    if len(steady) < 4:
        return False, f"only {len(steady)} samples after warm-up: run longer"
    quarter = max(1, len(steady) // 4)
    first = statistics.mean(s.rss_mib for s in steady[:quarter])
    last = statistics.mean(s.rss_mib for s in steady[-quarter:])
    growth = (last - first) / first
    flat = growth <= tolerance
    return flat, (
        f"RSS first quarter {first:.1f} MiB, last quarter {last:.1f} MiB "
        f"({100 * growth:+.1f} %, limit +{100 * tolerance:.0f} %): "
        + ("flat" if flat else "GROWING")
    )


def _verdict(samples: list[Sample], counters: list[int], stats: dict[str, int]) -> int:
    flat, memory = memory_verdict(samples)
    fds = [s.fds for s in samples]
    tcp_whole = counters[TCP_LOST] == 0 and counters[TCP_MISMATCHED] == 0
    received, accounted = udp_accounting(stats)
    udp_sent = counters[UDP_SENT]
    print(f"memory: {memory}")
    print(
        f"fds: {fds[0]} before the load, max {max(fds)} during it, {fds[-1]} after it"
        + ("" if fds[-1] <= fds[0] else " (NOT back to where they started)")
    )
    print(
        f"TCP: {counters[TCP_OK]:,} replies matched in {counters[ROUNDS]} rounds, "
        f"{counters[TCP_MISMATCHED]} mismatched, {counters[TCP_LOST]} lost, "
        f"{counters[ERRORS]} errors"
    )
    print(
        f"UDP: sent {udp_sent:,}, echoed {counters[UDP_ECHOED]:,}, lost {counters[UDP_LOST]:,} "
        f"({100 * counters[UDP_LOST] / max(udp_sent, 1):.3f} %); server received {received:,} "
        f"= replied {stats['sent']:,} + dropped {accounted - stats['sent']:,} ({_dropped(stats)}); "
        f"{counters[UDP_BAD]} mismatched or duplicate replies; {counters[STRAYS]} late replies "
        "reached a later round's socket on a reused port"
    )
    ok = (
        flat
        and tcp_whole
        and fds[-1] <= fds[0]
        and received == accounted
        and counters[ERRORS] == counters[UDP_BAD] == 0
    )
    print("verdict:", "PASS: memory flat, fds released, no TCP reply lost" if ok else "FAIL")
    return 0 if ok else 1


# -- command line ----------------------------------------------------------------------------


def _tcp_child(port: int, shape: Round, timeout: float) -> None:
    """Child for tests: run the TCP clients, print the result as JSON."""
    raise_fd_limit()
    result = run_tcp_clients(
        ("127.0.0.1", port), shape.connections, shape.requests, timeout=timeout
    )
    print(json.dumps(asdict(result)), flush=True)


def _udp_child(port: int, shape: Round, timeout: float) -> None:
    """Child for tests: run the UDP peers, print the result as JSON."""
    result = run_udp_peers(
        ("127.0.0.1", port),
        shape.peers,
        shape.datagrams,
        window=shape.window,
        patience=shape.patience,
        timeout=timeout,
    )
    print(json.dumps(asdict(result)), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.soak``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--interval", type=float, help="seconds between samples (default: auto)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="the server's idle_timeout during the soak, so UDP peers expire (default 10)",
    )
    parser.add_argument("--load", action="store_true", help="run the full-size load tests once")
    sizes = parser.add_argument_group(
        "sizes",
        "for --load: of the whole run (default 1000, 100, 200, 1000, 2, 0.2); "
        "for the soak: of one round (default 100, 100, 50, 200, 1, 0.2)",
    )
    sizes.add_argument("--connections", type=int, help="TCP connections (0: no TCP load)")
    sizes.add_argument("--requests", type=int, help="requests per TCP connection")
    sizes.add_argument("--peers", type=int, help="UDP peers (0: no UDP load)")
    sizes.add_argument("--datagrams", type=int, help="datagrams per UDP peer")
    sizes.add_argument("--window", type=int, help="UDP datagrams in flight per peer")
    sizes.add_argument(
        "--patience", type=float, help="seconds a UDP peer waits before presuming loss"
    )
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop, not asyncio's loop")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the soak curve as a Markdown table"
    )
    internal = parser.add_mutually_exclusive_group()
    for flag in ("--serve", "--tcp-client", "--udp-client"):
        internal.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("minutes", "interval", "idle_timeout", "patience"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value:g}")
    for name in ("connections", "requests", "peers", "datagrams", "window"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("requests", "datagrams", "window") else 0):
            parser.error(f"--{name} cannot be {value}")
    given = {
        name: value
        for name in ("connections", "requests", "peers", "datagrams", "window", "patience")
        if (value := getattr(args, name)) is not None
    }
    full = _with(FULL_LOAD, given)
    if args.serve:
        _serve(args.idle_timeout, full.connections, uvloop=args.uvloop)
    elif args.tcp_client:
        _tcp_child(args.port, full, args.timeout)
    elif args.udp_client:
        _udp_child(args.port, full, args.timeout)
    elif args.load:
        return load(
            full.connections,
            full.requests,
            full.peers,
            full.datagrams,
            window=full.window,
            patience=full.patience,
            uvloop=args.uvloop,
        )
    else:
        return soak(
            args.minutes,
            args.interval,
            args.idle_timeout,
            shape=_with(Round(), given),
            uvloop=args.uvloop,
            markdown=args.markdown,
        )
    return 0


def _with(shape: Round, changes: dict[str, Any]) -> Round:
    """``shape`` with ``changes`` applied."""
    return dataclasses.replace(shape, **changes)


if __name__ == "__main__":
    raise SystemExit(main())
