"""Fuzz target for a UDP server: an ``App`` on ``memory+udp://``, fed hostile datagrams.

Like the stream server target, one event loop serves every input; one client
socket sends each input as datagrams cut by the input's chunk sizes (an
empty datagram included). ``Pipeline.decode_datagram`` on the same datagrams
is the oracle. Checks, per input:

- every decoded message is echoed in its own datagram, once; a datagram that
  fails to decode costs only itself (the good frames of a packed datagram
  still count) and reaches the fallback handler, except an oversize datagram,
  which is dropped and counted without decoding;
- the server's counters add up: datagrams received, dropped as oversize,
  dropped as undecodable (none dropped for capacity, rate or amplification,
  which this server does not limit);
- nothing logs an error or reaches the loop's exception handler, within the
  deadline.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

from framework.core.errors import DecodeError, FrameTooLarge, FramingError, WirekitError
from framework.core.framing import Datagram, LengthPrefix
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.runtime.app import App
from framework.runtime.server import Server
from framework.runtime.transports import memory

from . import _model
from ._support import KNOWN_BUGS, Input, Target, seed, split
from .pipeline import REGISTRY, json_bug_in
from .server import DEADLINE, _logged_errors

__all__ = ["STACKS", "TARGETS"]

STACKS = (
    Pipeline(codecs="msgpack", messages=REGISTRY, datagram=Datagram(max_frame_size=600)),
    Pipeline(
        framing=LengthPrefix(prefix_size=2, max_frame_size=300),
        codecs="msgpack",
        messages=REGISTRY,
        datagram=Datagram(max_frame_size=900, packed=True),
    ),
    Pipeline(codecs="json", messages=REGISTRY, datagram=Datagram(max_frame_size=600)),
)
_names = itertools.count()


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


class _Expected:
    """What the server should do with ``datagrams``, from the sans-I/O pipeline."""

    def __init__(self, pipeline: Pipeline, datagrams: list[bytes]) -> None:
        self.values: list[Any] = []
        self.errors: list[str] = []  # what the fallback should see: oversize is only counted
        self.oversize = 0
        self.undecodable = 0
        for datagram in datagrams:
            limit = pipeline.datagram_framing.max_frame_size
            if limit is not None and len(datagram) > limit:
                self.oversize += 1
                continue
            try:
                self.values += pipeline.decode_datagram(datagram)
            except FrameTooLarge as exc:
                # A frame inside a packed datagram over the stream framing's limit.
                self.oversize += 1
                if "udp-packed-oversize-frame" not in KNOWN_BUGS:
                    self.values += exc.decoded
            except (FramingError, DecodeError) as exc:
                self.values += exc.decoded
                self.errors.append(type(exc).__name__)
                self.undecodable += 1


class _UdpHarness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.fallback: list[str] = []
        self.servers: list[Server] = []
        self.sockets: list[tuple[Any, _Socket]] = []
        with _logged_errors():
            self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        # No rate limit, no amplification bound, no idle expiry: an exact oracle.
        limits = Limits(idle_timeout=None, amplification_factor=None)
        for pipeline in STACKS:
            app = App(pipeline)

            def echo(msg: Any, _conn: Any) -> Any:
                return msg

            for cls in _model.CLASSES:
                app.on(cls)(echo)

            @app.fallback
            def bad_input(error: Any, _conn: Any) -> None:
                self.fallback.append(type(error).__name__)

            name = f"wirekit-fuzz-udp-{next(_names)}"
            self.servers.append(await app.start(f"memory+udp://{name}", limits=limits))
            self.sockets.append(memory.open_datagrams(name, _Socket))

    def close(self) -> None:
        async def stop() -> None:
            for transport, _protocol in self.sockets:
                transport.close()
            for server in self.servers:
                await server.close()

        if not self.loop.is_closed():
            self.loop.run_until_complete(stop())
            self.loop.close()

    async def _exchange(self, index: int, datagrams: list[bytes], replies: int) -> None:
        transport, client = self.sockets[index]
        stats = self.servers[index].datagram_stats
        assert stats is not None
        target = stats.received + len(datagrams)
        for datagram in datagrams:
            transport.sendto(datagram)
        while stats.received < target or len(client.received) < replies:
            await asyncio.sleep(0)
        for _ in range(4):  # room for replies that should not come
            await asyncio.sleep(0)

    def exchange(self, index: int, datagrams: list[bytes], expected: _Expected) -> list[bytes]:
        """Send ``datagrams`` to server ``index``; return the reply datagrams."""
        client = self.sockets[index][1]
        client.received.clear()
        self.fallback.clear()
        self.loop_errors.clear()
        stats = self.servers[index].datagram_stats
        assert stats is not None
        before = (stats.received, stats.dropped_oversize, stats.dropped_undecodable)
        with _logged_errors() as errors:
            try:
                self.loop.run_until_complete(
                    asyncio.wait_for(
                        self._exchange(index, datagrams, len(expected.values)), timeout=DEADLINE
                    )
                )
            except TimeoutError:
                raise AssertionError(
                    f"no end within {DEADLINE} s: {len(client.received)} of "
                    f"{len(expected.values)} replies, stats {stats}"
                ) from None
        assert not errors, f"the server logged: {[r.getMessage() for r in errors]}"
        assert not self.loop_errors, f"the loop caught: {self.loop_errors}"
        after = (stats.received, stats.dropped_oversize, stats.dropped_undecodable)
        counted = tuple(b - a for a, b in zip(before, after, strict=True))
        wanted = (len(datagrams), expected.oversize, expected.undecodable)
        assert counted == wanted, f"received/oversize/undecodable {counted}, expected {wanted}"
        assert self.fallback == expected.errors, (
            f"the fallback saw {self.fallback}, not {expected.errors}"
        )
        return list(client.received)


_harness: _UdpHarness | None = None


def close() -> None:
    """Release the harness (its servers and loop), if one was started."""
    global _harness
    if _harness is not None:
        _harness.close()
        _harness = None


def run_udp_server(data: bytes) -> int:
    """Send one input as datagrams to an echo server and check what comes back."""
    global _harness
    inp = Input(data)
    index = inp.pick(range(len(STACKS)))
    sizes, _kind = inp.chunking()
    pipeline = STACKS[index]
    datagrams = split(inp.rest(), sizes)
    expected = _Expected(pipeline, datagrams)
    if json_bug_in(pipeline, expected.values):
        return 0
    if _harness is None:
        _harness = _UdpHarness()
    replies = _harness.exchange(index, datagrams, expected)
    got = collections.Counter(replies)
    wanted = collections.Counter(pipeline.encode_datagram(value) for value in expected.values)
    assert got == wanted, f"echoed {got}, expected {wanted}"
    return len(expected.values)


def seeds_udp_server() -> list[bytes]:
    """Sample messages as datagrams of each stack, one per datagram and packed."""
    out = []
    for index, pipeline in enumerate(STACKS):
        datagrams = []
        for sample in _model.samples():
            try:
                datagrams.append(pipeline.encode_datagram(sample))
            except WirekitError:
                continue  # JSON cannot carry bytes
        sizes = [len(d) for d in datagrams if len(d) < 256][:3]
        datagrams = [d for d in datagrams if len(d) < 256]
        out.append(seed(b"".join(datagrams[: len(sizes)]), [index, len(sizes), *sizes, 0]))
        out.append(seed(datagrams[0], [index, 0, 0]))
    packed = STACKS[1].encode_datagram(*_model.samples())
    out.append(seed(packed, [1, 0, 0]))
    out.append(seed(packed[:-3], [1, 0, 0]))  # the last frame cut short
    return out


TARGETS = [
    Target(
        "udp-server",
        "App on memory+udp:// with an echo router and a fallback: plain, packed and JSON datagrams",
        run_udp_server,
        seeds_udp_server,
        close,
        max_len=2048,
    ),
]
