"""A client that stays connected: reconnects with backoff, queues sends while down.

::

    async with ReconnectingClient("tcp://127.0.0.1:9000", pipeline) as client:
        await client.send(value)       # sent now, or queued until reconnected
        reply = await client.receive() # from whichever connection is current

What it promises, and what it does not:

- Values passed to ``send`` while no connection is up wait in a bounded queue
  (``max_pending``) and go out, in order, as soon as a connection is up again:
  after the ``on_connect`` hooks, so a hook can re-subscribe first.
- A value handed to a connection that then breaks may or may not have reached
  the server: TCP gives no receipt. Protocols that need exactly-once delivery
  acknowledge at the application level.
- Reconnecting waits between attempts by :class:`Backoff`: exponential, with
  jitter, capped, and optionally a bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs

from framework.core._registry import check_limit
from framework.core.endpoints import Endpoint, parse_url
from framework.core.errors import ConfigError, SendQueueFull, TransportError, WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.runtime.client import connect
from framework.runtime.connection import Connection, ConnectionClosed
from framework.runtime.tls import TlsOptions

__all__ = ["Backoff", "ReconnectStats", "ReconnectingClient", "SendQueueFull"]

log = logging.getLogger("wirekit.reconnect")

Hook = Callable[[Connection], Any]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = type(value) in (int, float) and (value >= 0 if allow_zero else value > 0)
    if not ok or value != value:  # NaN
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"{name} must be {kind} number, got {value!r}", option=name, value=value)


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before each reconnection attempt.

    The first connection is tried at once; every later attempt (after a
    failure, or after a connection ends) waits first. Wait ``n`` (from 0) is
    ``d = min(max_delay, initial * multiplier**n)`` minus a random part of up
    to ``jitter`` of it: with the default 0.5 it is drawn uniformly from
    ``[d/2, d]``, so clients cut off together do not all come back in the
    same instant. ``max_attempts=None`` retries forever; otherwise the client
    gives up after that many failed attempts in a row. The schedule starts
    over after a connection that stayed up for ``max_delay`` seconds or more.
    """

    #: Seconds before the first retry: short, since most outages are a restart.
    initial: float = 0.1
    #: The cap: a server down for long is still tried twice a minute.
    max_delay: float = 30.0
    #: Growth per failed attempt.
    multiplier: float = 2.0
    #: Fraction of each delay that is random, 0 (none) to 1 ("full jitter").
    jitter: float = 0.5
    #: Failed attempts in a row before giving up; ``None``: never give up.
    max_attempts: int | None = None

    def __attrs_post_init__(self) -> None:
        _positive("initial", self.initial)
        _positive("max_delay", self.max_delay)
        if self.max_delay < self.initial:
            raise ConfigError(
                f"max_delay ({self.max_delay}) must not be below initial ({self.initial})",
                option="max_delay",
                value=self.max_delay,
            )
        if type(self.multiplier) not in (int, float) or not self.multiplier >= 1:
            raise ConfigError(
                f"multiplier must be a number of at least 1, got {self.multiplier!r}",
                option="multiplier",
                value=self.multiplier,
            )
        if type(self.jitter) not in (int, float) or not 0 <= self.jitter <= 1:
            raise ConfigError(
                f"jitter must be between 0 and 1, got {self.jitter!r}",
                option="jitter",
                value=self.jitter,
            )
        attempts = self.max_attempts
        if attempts is not None and (type(attempts) is not int or attempts < 1):
            raise ConfigError(
                f"max_attempts must be a positive integer or None, got {attempts!r}",
                option="max_attempts",
                value=attempts,
            )

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before each reconnection attempt, in order (endless)."""
        rng = rng if rng is not None else random.Random()
        ceiling = self.initial
        while True:
            yield ceiling - rng.uniform(0.0, self.jitter * ceiling)
            ceiling = min(self.max_delay, ceiling * self.multiplier)


@attrs.define
class ReconnectStats:
    """Counters of a :class:`ReconnectingClient`."""

    #: Connection attempts made, successful or not.
    attempts: int = 0
    #: Connections established (the first one included).
    connects: int = 0
    #: Established connections that ended while the client was running.
    disconnects: int = 0
    #: Values dropped from a full send queue (``when_full="drop-oldest"``).
    dropped: int = 0
    #: Values that waited in the queue and were sent after a reconnection.
    sent_from_queue: int = 0


class ReconnectingClient:
    """A client connection to a stream endpoint that comes back when it breaks.

    ``send`` goes straight to the connection when one is up, and into a queue
    of at most ``max_pending`` values when not. When the queue is full,
    ``when_full="raise"`` (the default) raises :class:`SendQueueFull` and
    ``"drop-oldest"`` drops the oldest queued value (counted in
    ``stats.dropped``). ``on_connect`` hooks get each new connection before
    the queue is flushed on it; ``on_disconnect`` hooks get each one that
    ended. Hooks may be plain functions or ``async def``.

    ``rng`` and ``sleep`` exist for tests: a seeded ``random.Random`` and a
    fake sleep make the backoff schedule reproducible without waiting.
    """

    def __init__(
        self,
        url: str | Endpoint,
        pipeline: Pipeline,
        *,
        backoff: Backoff | None = None,
        limits: Limits | None = None,
        tls: TlsOptions | None = None,
        timeout: float | None = 10.0,
        max_pending: int = 1024,
        when_full: str = "raise",
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
    ) -> None:
        self.endpoint = parse_url(url) if isinstance(url, str) else url
        if not self.endpoint.is_stream:
            raise ConfigError(
                f"{self.endpoint.url}: UDP has no connection to lose; use connect() for datagrams",
                option="url",
            )
        if when_full not in ("raise", "drop-oldest"):
            raise ConfigError(
                f"when_full must be 'raise' or 'drop-oldest', got {when_full!r}",
                option="when_full",
                value=when_full,
            )
        check_limit("max_pending", max_pending, allow_none=False)
        self.pipeline = pipeline
        self.backoff = backoff if backoff is not None else Backoff()
        self.limits = limits
        self.tls = tls
        self.timeout = timeout
        self.max_pending = max_pending
        self.when_full = when_full
        self.stats = ReconnectStats()
        self.on_connect_hooks: list[Hook] = [on_connect] if on_connect else []
        self.on_disconnect_hooks: list[Hook] = [on_disconnect] if on_disconnect else []
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._pending: collections.deque[Any] = collections.deque()
        # The latest connection (receive() drains it even once it has ended),
        # and whether sends may go to it directly (the queue is flushed on it).
        self._current: Connection | None = None
        self._ready = False
        self._changed = asyncio.Event()  # set on every connect, disconnect and close
        self._closing = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._dropping_logged = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self.closed else "connecting"
        return f"<ReconnectingClient {self.endpoint.url} {state} pending={len(self._pending)}>"

    # -- state -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up (and the queue flushed on it)."""
        return self._ready and self._current is not None and not self._current.closed

    @property
    def connection(self) -> Connection | None:
        """The current connection, or ``None`` while reconnecting."""
        return self._current if self.connected else None

    @property
    def closed(self) -> bool:
        """Whether the client has stopped: ``close()``, or ``max_attempts`` exhausted."""
        return self._task is not None and self._task.done()

    @property
    def pending(self) -> int:
        """Values queued, waiting for a connection."""
        return len(self._pending)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (``async with`` does it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def wait_connected(self) -> Connection:
        """Wait until a connection is up; raises ``ConnectionClosed`` if the client stops first."""
        self.start()
        while True:
            conn = self.connection
            if conn is not None:
                return conn
            self._check_open()
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        """Stop reconnecting and close the current connection gracefully.

        Values still queued are dropped (``pending`` says how many).
        """
        self._closing = True
        self._changed.set()
        task = self._task
        if task is None:
            return
        conn = self._current
        if conn is not None:
            conn.close()
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we were cancelled ourselves
        if conn is not None:
            await conn.wait_closed()

    async def __aenter__(self) -> ReconnectingClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sending and receiving -------------------------------------------------------

    async def send(self, value: Any) -> None:
        """Send ``value`` now, or queue it until a connection is up.

        Raises :class:`SendQueueFull` (``when_full="raise"``), an
        ``EncodeError`` for a value that cannot be encoded (checked before it
        is queued), and ``ConnectionClosed`` once the client has stopped.
        """
        self.start()
        self._check_open()
        conn = self.connection
        if conn is not None and not self._pending:
            try:
                conn.send_nowait(value)
            except ConnectionClosed:
                pass  # it just broke: nothing was written, so queue the value
            else:
                if not conn.can_send and not conn.closed:
                    # Flow control: wait while the server is not keeping up.
                    with contextlib.suppress(ConnectionClosed):
                        await conn._drain()
                return
        self.pipeline.encode(value)  # fail now, not on the next connection
        self._enqueue(value)

    def _enqueue(self, value: Any) -> None:
        if len(self._pending) >= self.max_pending:
            if self.when_full == "raise":
                raise SendQueueFull(
                    f"{self.max_pending} values already wait for {self.endpoint.url} to come back",
                    peer=self.endpoint.url,
                )
            self._pending.popleft()
            self.stats.dropped += 1
            if not self._dropping_logged:
                self._dropping_logged = True
                log.warning(
                    "%r: send queue full (%d values), dropping the oldest", self, self.max_pending
                )
        self._pending.append(value)

    async def receive(self) -> Any:
        """The next value from the server, across reconnections.

        Values a connection received before it broke are returned first.
        Raises ``ConnectionClosed`` once the client has stopped.
        """
        self.start()
        while True:
            conn = self._current
            if conn is not None:
                try:
                    return await conn.receive()
                except ConnectionClosed:
                    pass
            # Nothing more from this one: wait for the next, or the end.
            while self._current is conn:
                self._check_open()
                self._changed.clear()
                await self._changed.wait()

    def _stopping(self) -> bool:
        # A method, not the attribute: a check after an await must not be
        # narrowed away by the one before it.
        return self._closing

    def _check_open(self) -> None:
        if self._closing or self.closed:
            raise ConnectionClosed(
                f"reconnecting client for {self.endpoint.url} is closed", peer=self.endpoint.url
            ) from self._error

    # -- the supervisor --------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        delays = self.backoff.delays(self._rng)
        limit = self.backoff.max_attempts
        failures = 0
        first = True
        try:
            while not self._closing:
                if not first:
                    await self._sleep(next(delays))
                    if self._stopping():
                        return
                first = False
                self.stats.attempts += 1
                try:
                    conn = await connect(
                        self.endpoint,
                        self.pipeline,
                        limits=self.limits,
                        tls=self.tls,
                        timeout=self.timeout,
                    )
                except (TransportError, OSError) as exc:
                    failures += 1
                    if limit is not None and failures >= limit:
                        log.warning(
                            "%r: giving up after %d failed attempts: %s", self, failures, exc
                        )
                        self._error = exc
                        return
                    log.info("%r: cannot connect: %s", self, exc)
                    continue
                failures = 0
                self.stats.connects += 1
                log.info("%r: connected (attempt %d)", self, self.stats.attempts)
                started = loop.time()
                await self._serve(conn)
                if loop.time() - started >= self.backoff.max_delay:
                    # It stayed up a while: the next outage starts the schedule over.
                    # (A server that accepts and drops at once keeps backing off.)
                    delays = self.backoff.delays(self._rng)
        finally:
            self._ready = False
            self._changed.set()

    async def _serve(self, conn: Connection) -> None:
        """Run hooks, flush the queue, open ``conn`` to sends; return once it has ended."""
        self._current = conn
        self._changed.set()
        try:
            await self._run_hooks(self.on_connect_hooks, conn)
            await self._flush(conn)
            if not conn.closed:
                self._ready = True
                self._dropping_logged = False
                self._changed.set()
                await conn.wait_closed()
        finally:
            self._ready = False
            if not self._closing:
                self.stats.disconnects += 1
                log.info("%r: connection lost", self)
            await self._run_hooks(self.on_disconnect_hooks, conn)
            self._changed.set()

    async def _flush(self, conn: Connection) -> None:
        pending = self._pending
        while pending and not conn.closed:
            value = pending[0]
            try:
                conn.send_nowait(value)
            except ConnectionClosed:
                return
            except WirekitError as exc:  # cannot happen for values checked on send
                log.error("%r: dropping a queued value that does not encode: %s", self, exc)
            pending.popleft()
            self.stats.sent_from_queue += 1
            if not conn.can_send and not conn.closed:
                try:
                    await conn._drain()
                except ConnectionClosed:
                    return

    async def _run_hooks(self, hooks: list[Hook], conn: Connection) -> None:
        for hook in hooks:
            try:
                result = hook(conn)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%r: hook %s raised", self, getattr(hook, "__name__", hook))
