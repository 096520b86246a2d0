"""The load generator of the I/O benchmark: plain sockets, no wirekit, no asyncio.

Every run starts one or more worker processes (``multiprocessing``); each
opens its sockets, reports ready, and on "go" loads the server until a
deadline. Counts and latencies are taken only inside the measured window
``[t_start, t_end)`` (``time.monotonic``, the same clock in every process),
after a warm-up; the parent samples the server's CPU over the same window.

Three load shapes, all echo (a reply is byte-for-byte the request):

- :func:`pipelined`: one connection, a window of outstanding bytes, requests
  sent in batches; replies are counted, not parsed (echo keeps sizes);
- :func:`reqresp`: several connections per process, one request outstanding
  on each, latency of every reply recorded;
- :func:`udp`: one connected UDP socket with a window of datagrams in flight;
  a datagram not answered within 50 ms is counted lost and replaced.
"""

from __future__ import annotations

import array
import contextlib
import multiprocessing
import select
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Load", "LoadResult", "run_load", "verify_echo"]

Address = tuple[str, int]
# Socket buffers large enough that a window of outstanding requests never
# blocks both sides at once.
SOCKET_BUFFER = 4 * 1024 * 1024
UDP_TIMEOUT = 0.05


@dataclass(frozen=True)
class Load:
    """What one run sends: its shape, the bytes of one batch, and how much at once."""

    shape: str  # "pipelined", "ws-pipelined", "reqresp" or "udp"
    batch: bytes  # pipelined: sent back to back; reqresp/udp: one request
    messages_per_batch: int = 1
    window: int = 1  # pipelined: outstanding bytes; udp: datagrams in flight
    connections: int = 1  # reqresp
    processes: int = 1  # reqresp: connections are spread over these
    #: ws-pipelined: bytes of the echo of one batch (servers' frames are not
    #: masked, so they are shorter than the client's); None: the batch's size.
    reply_size: int | None = None


@dataclass
class LoadResult:
    """What the workers measured inside the window."""

    messages: int
    seconds: float
    client_cpu: float  # CPU seconds the workers spent inside the window
    latencies_ns: array.array  # reqresp only
    lost: int = 0  # udp only


# -- workers (run in child processes) ----------------------------------------------


def _connect(address: Address) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    return sock


def _ws_connect(address: Address) -> socket.socket:
    from benchmarks.websocket import client_handshake

    sock, _protocol = client_handshake(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    return sock


def pipelined(address: Address, load: Load, window: tuple[float, float]) -> dict[str, Any]:
    """Keep ``load.window`` bytes outstanding on one connection; count echoed bytes.

    ``ws-pipelined``: the same over a WebSocket, once the handshake is done
    (by the websockets library's client protocol, :mod:`benchmarks.websocket`).
    """
    t_start, t_end = window
    sock = _ws_connect(address) if load.shape == "ws-pipelined" else _connect(address)
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    mask = select.POLLIN
    batch = memoryview(load.batch)
    size = len(batch)
    limit = max(load.window, size)
    reply = load.reply_size or size
    recv_buf = memoryview(bytearray(1 << 20))
    send, recv_into, now = sock.send, sock.recv_into, time.monotonic
    sent = received = 0
    pending: memoryview | None = None
    marked: int | None = None
    cpu0 = 0.0
    while True:
        progressed = False
        if pending is None and sent - received * size // reply + size <= limit:
            pending = batch
        if pending is not None:
            try:
                n = send(pending)
            except BlockingIOError:
                n = 0
            if n:
                sent += n
                progressed = True
                pending = None if n == len(pending) else pending[n:]
        try:
            n = recv_into(recv_buf)
        except BlockingIOError:
            n = -1
        if n == 0:
            raise ConnectionError("server closed the connection")
        if n > 0:
            received += n
            progressed = True
        t = now()
        if marked is None and t >= t_start:
            marked, cpu0 = received, time.process_time()
        if t >= t_end:
            break
        if not progressed:
            wanted = select.POLLIN | (select.POLLOUT if pending is not None else 0)
            if wanted != mask:
                poller.modify(sock, wanted)
                mask = wanted
            poller.poll(100)
    cpu = time.process_time() - cpu0
    sock.close()
    assert marked is not None
    return {
        "messages": (received - marked) * load.messages_per_batch // reply,
        "client_cpu": cpu,
    }


def reqresp(address: Address, load: Load, window: tuple[float, float]) -> dict[str, Any]:
    """One request outstanding on each of this worker's connections; time every reply."""
    t_start, t_end = window
    request = load.batch
    size = len(request)
    count = max(1, load.connections // load.processes)
    socks = [_connect(address) for _ in range(count)]
    latencies = array.array("q")
    record = latencies.append
    perf, now = time.perf_counter_ns, time.monotonic
    done = 0
    cpu0 = None
    if count == 1:
        # The cheapest client: a blocking socket, no poll.
        (sock,) = socks
        buf = memoryview(bytearray(size))
        sendall, recv_into = sock.sendall, sock.recv_into
        while True:
            t0 = perf()
            sendall(request)
            got = 0
            while got < size:
                n = recv_into(buf[got:])
                if n == 0:
                    raise ConnectionError("server closed the connection")
                got += n
            t = now()
            if t >= t_start:
                if cpu0 is None:
                    cpu0 = time.process_time()
                else:
                    record(perf() - t0)
                    done += 1
                if t >= t_end:
                    break
    else:
        poller = select.poll()
        by_fd = {}
        for sock in socks:
            sock.setblocking(False)
            by_fd[sock.fileno()] = [sock, 0, memoryview(bytearray(size)), 0]
            poller.register(sock, select.POLLIN)
        for state in by_fd.values():
            state[0].send(request)
            state[3] = perf()
        running = True
        while running:
            events = poller.poll(100)
            if not events and now() >= t_end:
                raise TimeoutError("no reply on any connection by the end of the run")
            for fd, _event in events:
                state = by_fd[fd]
                sock = state[0]
                n = sock.recv_into(state[2][state[1] :])
                if n == 0:
                    raise ConnectionError("server closed the connection")
                state[1] += n
                if state[1] < size:
                    continue
                t = now()
                if t >= t_start:
                    if cpu0 is None:
                        cpu0 = time.process_time()
                    else:
                        record(perf() - state[3])
                        done += 1
                    if t >= t_end:
                        running = False
                        break
                state[1] = 0
                state[3] = perf()
                sock.send(request)  # a 56-byte send on an idle socket does not block
    cpu = time.process_time() - (cpu0 or 0.0)
    for sock in socks:
        sock.close()
    return {"messages": done, "client_cpu": cpu, "latencies": latencies.tobytes()}


def udp(address: Address, load: Load, window: tuple[float, float]) -> dict[str, Any]:
    """Keep ``load.window`` datagrams in flight; replace one per reply (or per loss)."""
    t_start, t_end = window
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    # A kernel receive timeout: one syscall per recv, unlike settimeout().
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, int(UDP_TIMEOUT * 1e6))
    )
    sock.connect(address)
    datagram = load.batch
    send, recv_into, now = sock.send, sock.recv_into, time.monotonic
    buf = bytearray(65536)
    for _ in range(load.window):
        send(datagram)
    received = lost = 0
    marked: int | None = None
    lost_mark = 0
    cpu0 = 0.0
    while True:
        try:
            recv_into(buf)
        except (BlockingIOError, TimeoutError):
            # Everything in flight is presumed lost: start a fresh window.
            if now() >= t_end:
                raise TimeoutError("no datagram came back by the end of the run") from None
            lost += load.window
            for _ in range(load.window):
                send(datagram)
            continue
        received += 1
        send(datagram)
        if received & 63 == 0:
            t = now()
            if marked is None and t >= t_start:
                marked, lost_mark, cpu0 = received, lost, time.process_time()
            if t >= t_end:
                break
    cpu = time.process_time() - cpu0
    sock.close()
    assert marked is not None
    return {"messages": received - marked, "client_cpu": cpu, "lost": lost - lost_mark}


SHAPES: dict[str, Callable[[Address, Load, tuple[float, float]], dict[str, Any]]] = {
    "pipelined": pipelined,
    "ws-pipelined": pipelined,
    "reqresp": reqresp,
    "udp": udp,
}


def _worker(pipe: Connection, address: Address, load: Load) -> None:
    """Child process: wait for the window, run the shape, send back its counts."""
    try:
        pipe.send(("ready", None))
        _, window = pipe.recv()
        pipe.send(("done", SHAPES[load.shape](address, load, window)))
    except KeyboardInterrupt:
        pass  # Ctrl-C reached the parent too: it stops everything
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        pipe.close()


# -- the parent's side ------------------------------------------------------------------


def _context() -> Any:
    # fork starts workers in milliseconds; elsewhere the worker module is importable.
    method = "fork" if sys.platform == "linux" else "spawn"
    return multiprocessing.get_context(method)


def run_load(
    address: Address,
    load: Load,
    *,
    warmup: float,
    duration: float,
    on_window: Callable[[str], None],
) -> LoadResult:
    """Run ``load`` against ``address``: warm up, then measure for ``duration`` seconds.

    ``on_window("start")`` and ``on_window("end")`` are called at the edges of
    the measured window (the caller samples the server's CPU there).
    """
    ctx = _context()
    workers = load.processes if load.shape == "reqresp" else 1
    pipes: list[Connection] = []
    procs = []
    try:
        for _ in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, address, load), daemon=True)
            proc.start()
            theirs.close()
            pipes.append(ours)
            procs.append(proc)
        for pipe in pipes:
            _expect(pipe, "ready", 15.0)
        t_start = time.monotonic() + warmup
        t_end = t_start + duration
        for pipe in pipes:
            pipe.send(("go", (t_start, t_end)))
        _sleep_until(t_start)
        on_window("start")
        _sleep_until(t_end)
        on_window("end")
        results = [_expect(pipe, "done", duration + 15.0) for pipe in pipes]
    finally:
        for proc in procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
        for pipe in pipes:
            pipe.close()
    latencies = array.array("q")
    for result in results:
        if "latencies" in result:
            latencies.frombytes(result["latencies"])
    return LoadResult(
        messages=sum(result["messages"] for result in results),
        seconds=duration,
        client_cpu=sum(result["client_cpu"] for result in results),
        latencies_ns=latencies,
        lost=sum(result.get("lost", 0) for result in results),
    )


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _expect(pipe: Connection, what: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"load worker sent no {what!r} within {timeout:.0f} s")
    kind, payload = pipe.recv()
    if kind == "error":
        raise RuntimeError(f"load worker failed: {payload}")
    if kind != what:
        raise RuntimeError(f"load worker sent {kind!r}, expected {what!r}")
    return payload


def verify_echo(address: Address, shape: str, data: bytes, timeout: float = 5.0) -> None:
    """Send ``data`` once and check the server echoes it byte for byte (a datagram for udp).

    ``ws-pipelined``: ``data`` is one message, echoed as one binary frame.
    """
    if shape == "ws-pipelined":
        from benchmarks.websocket import verify_echo as verify_ws_echo

        verify_ws_echo(address, data, timeout)
        return
    if shape == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.send(data)
            reply = sock.recv(65536)
    else:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            got = 0
            while got < len(data):
                chunk = sock.recv(len(data) - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            reply = b"".join(chunks)
    if reply != data:
        raise AssertionError(
            f"echo mismatch on {shape}: sent {len(data)} bytes, got {len(reply)} "
            f"(first difference at byte {_first_difference(data, reply)})"
        )


def _first_difference(a: bytes, b: bytes) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))
