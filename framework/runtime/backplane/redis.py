"""The Redis backplane: ``redis://HOST:PORT[/DB]``, Redis pub/sub through redis-py.

Two connections per node, as Redis requires: a connection that has
subscribed can only (un)subscribe and ping, so publishes go on a second one.

* A publish is one ``PUBLISH`` command, whatever the number of members.
  When nothing waits in the queue it is written to the connection's socket
  buffer at once, inside :meth:`RedisBackplane.publish`: the group layer
  publishes before it fans a value out to the node's own members, so the
  other nodes get it that much sooner (a millisecond or more for a room of
  hundreds). Otherwise, and whenever that buffer holds ``direct_limit``
  bytes or more, it goes through the bounded queue, whose writer
  packs each batch into one write and waits for the socket to drain. A
  third task reads the replies.
* The reader turns ``message`` pushes into ``deliver(channel, payload)``,
  for the channels subscribed now only, so a payload still in flight when
  :meth:`RedisBackplane.unsubscribe` returns is not delivered.
* When the subscriber connection is idle for ``ping_interval`` seconds it
  sends ``PING``; no answer within another ``ping_interval`` counts as a
  lost link, so a broker that vanishes without closing the socket (a
  network cut, not a crash) is noticed too.

On a lost link both connections are closed and reopened with backoff, and
every channel is subscribed again before the link is reported up: a node
that hears ``on_state(True)`` receives every payload published after it.

redis-py's ``PubSub`` object reconnects by itself, but inside whichever
call meets the failure, a bounded number of times, and without telling
anyone that the link was down; the contract needs the outage reported once
and publishes dropped meanwhile, so one supervisor task here owns the
connections (redis-py's :class:`~redis.asyncio.connection.Connection` and
its hiredis parser) and their reconnection.

Redis pub/sub ignores the database number (``/DB`` selects only the key
space): nodes of unrelated apps sharing a Redis are kept apart by their
channel names, which the group layer prefixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from framework.core.errors import ConfigError
from framework.runtime.backplane.base import Deliver, StateChanged
from framework.runtime.backplane.queued import DIRECT_LIMIT, QueuedBackplane
from framework.runtime.backplane.streams import redis_stream
from framework.runtime.reconnect import Backoff

__all__ = ["RedisBackplane"]

log = logging.getLogger("wirekit.backplane")

#: What a lost or broken Redis link raises.
LINK_ERRORS = (RedisError, OSError, EOFError)


def _parse(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ConfigError(f"not a redis:// URL: {url!r}", option="backplane", value=url)
    try:
        port = parts.port or 6379
    except ValueError as error:
        raise ConfigError(f"bad port in {url!r}", option="backplane", value=url) from error
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(
            f"the path of {url!r} must be a database number, e.g. redis://127.0.0.1:6379/0",
            option="backplane",
            value=url,
        )
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": port,
        "db": int(path) if path else 0,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


class RedisBackplane(QueuedBackplane):
    """Redis pub/sub as a backplane; see the module docstring.

    ``max_queue`` bounds the payloads waiting for the writer,
    ``direct_limit`` the bytes written at once by :meth:`publish` and not
    yet taken by the socket (0: every publish goes through the queue), ``backoff``
    paces reconnection, ``ping_interval`` is the idle time after which the
    link is checked, ``connect_timeout`` bounds each connection attempt and
    ``close_timeout`` the flush in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 512,
        direct_limit: int = DIRECT_LIMIT,
        backoff: Backoff | None = None,
        ping_interval: float = 5.0,
        connect_timeout: float = 2.0,
        close_timeout: float = 1.0,
    ) -> None:
        super().__init__(
            url,
            max_queue=max_queue,
            max_batch=max_batch,
            backoff=backoff,
            close_timeout=close_timeout,
        )
        self._params = _parse(url)
        self.direct_limit = direct_limit
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        # Channels wanted (restored after a reconnect), as the bytes Redis sends back.
        self._channels: dict[bytes, str] = {}
        # Subscriptions sent and not yet confirmed, with whoever waits for them.
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._pub: Connection | None = None
        self._sub: Connection | None = None
        # The publisher connection's stream, written to at once by publish().
        self._direct: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the Backplane interface ------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> bool:
        """Write one ``PUBLISH`` now, or queue it; ``False`` if it was dropped (and counted)."""
        direct, pub = self._direct, self._pub
        if direct is not None and pub is not None and self._up and not self._queue:
            # Nothing queued: nothing this could overtake. Order is the
            # socket buffer's, which the writer's batches go into too.
            transport = direct.transport
            if not transport.is_closing() and transport.get_write_buffer_size() < self.direct_limit:
                direct.writelines(pub.pack_command("PUBLISH", channel, payload))
                self.stats.published += 1
                return True
        return super().publish(channel, payload)

    async def start(self, deliver: Deliver, on_state: StateChanged) -> None:
        """Connect; raises :class:`ConfigError` naming the URL if Redis cannot be reached."""
        self._begin(deliver, on_state)
        try:
            await self._connect()
        except LINK_ERRORS as error:
            raise ConfigError(
                f"backplane {self.url}: cannot reach Redis: {error}",
                option="backplane",
                value=self.url,
            ) from error
        self._link_up()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s payloads; returns once Redis has confirmed it (if up)."""
        key = channel.encode()
        if key in self._channels:
            return
        self._channels[key] = channel
        sub = self._sub
        if not self._up or sub is None:
            return  # the reconnection subscribes it
        waiter = self._confirming.get(key)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._confirming[key] = waiter
            try:
                await sub.send_command("SUBSCRIBE", key, check_health=False)
            except LINK_ERRORS:
                return  # the reader notices the broken link; the reconnection subscribes it
        await asyncio.shield(waiter)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``'s payloads, at once (late ones are not delivered)."""
        key = channel.encode()
        if self._channels.pop(key, None) is None:
            return
        # A subscribe() still waiting returns; subscribing again sends a new SUBSCRIBE.
        waiter = self._confirming.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        sub = self._sub
        if self._up and sub is not None:
            # On a broken link there is nothing to undo: a reconnection does not subscribe it.
            with contextlib.suppress(*LINK_ERRORS):
                await sub.send_command("UNSUBSCRIBE", key, check_health=False)

    async def close(self) -> None:
        """Flush the queue (at most ``close_timeout``), then disconnect."""
        await self._flush_queue()
        self._closing = True
        self._link_down("closed")
        await self._cancel(self._task)
        await self._disconnect()

    # -- connections ------------------------------------------------------------------

    def _connection(self) -> Connection:
        return Connection(
            **self._params,
            socket_connect_timeout=self.connect_timeout,
            client_name="wirekit-backplane",
            # RESP2: pub/sub messages are plain replies on the subscriber
            # connection (RESP3 would route them through push handlers), and
            # every Redis version speaks it.
            protocol=2,
        )

    async def _connect(self) -> None:
        """Open both connections and subscribe every wanted channel, confirmed."""
        pub = self._connection()
        sub = self._connection()
        try:
            # redis-py leaves connect() unannotated; it returns nothing.
            await pub.connect()  # type: ignore[no-untyped-call]
            await sub.connect()  # type: ignore[no-untyped-call]
            done: set[bytes] = set()
            # A channel subscribed while this runs is picked up by the next round.
            while missing := [key for key in self._channels if key not in done]:
                await sub.send_command("SUBSCRIBE", *missing, check_health=False)
                wanted = set(missing)
                while wanted:
                    response = await sub.read_response(timeout=self.connect_timeout)
                    if response is None:
                        raise TimeoutError(f"no reply to SUBSCRIBE in {self.connect_timeout} s")
                    confirmed = self._handle(response)
                    if confirmed is not None:
                        wanted.discard(confirmed)
                done.update(missing)
        except BaseException:
            await self._close_connections(pub, sub)
            raise
        self._pub, self._sub = pub, sub
        # Without the stream (see streams.py) every publish takes the queue.
        self._direct = redis_stream(pub)

    async def _disconnect(self) -> None:
        pub, sub = self._pub, self._sub
        self._pub = self._sub = None
        self._direct = None
        await self._close_connections(pub, sub)
        # Whoever waits for a confirmation is released: the reconnection subscribes again.
        for waiter in self._confirming.values():
            if not waiter.done():
                waiter.set_result(None)
        self._confirming.clear()

    @staticmethod
    async def _close_connections(*connections: Connection | None) -> None:
        for conn in connections:
            if conn is not None:
                try:
                    await conn.disconnect(nowait=True)
                except LINK_ERRORS as error:
                    log.debug("closing a Redis connection: %s", error)

    # -- the supervisor, the reader and the writer --------------------------------------

    async def _supervise(self) -> None:
        while True:
            reason = await self._serve()
            self._link_down(reason)
            await self._disconnect()
            for delay in self.backoff.delays():
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except LINK_ERRORS as error:
                    log.debug("backplane %s: reconnecting: %s", self.url, error)
                    continue
                break
            self._link_up()

    async def _serve(self) -> object:
        """Run the reader, the writer and the replies until one of them fails; return why."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._read()),
            loop.create_task(self._write_queue()),
            loop.create_task(self._read_replies()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # All of them, even when we are cancelled: what they raised is retrieved here.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next(iter(done)).exception()
        if error is not None and not isinstance(error, LINK_ERRORS):
            log.error("backplane %s: unexpected error", self.url, exc_info=error)
        return error

    async def _read(self) -> None:
        sub = self._sub
        assert sub is not None
        interval = self.ping_interval
        pinged = False
        while True:
            response = await sub.read_response(timeout=interval)
            if response is None:
                if pinged:
                    raise TimeoutError(f"no reply to PING in {interval} s")
                await sub.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            self._handle(response)

    def _handle(self, response: Any) -> bytes | None:
        """Deliver a message; return the channel a ``subscribe`` reply confirms."""
        kind = response[0]
        if kind == b"message":
            channel = self._channels.get(response[1])
            if channel is not None:
                self.stats.received += 1
                try:
                    self._deliver(channel, response[2])
                except Exception:
                    log.exception("backplane %s: deliver raised", self.url)
            return None
        if kind == b"subscribe":
            key: bytes = response[1]
            waiter = self._confirming.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return key
        return None  # unsubscribe confirmations and pongs: the read itself was the proof of life

    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        pub = self._pub
        assert pub is not None
        packed = pub.pack_commands([("PUBLISH", channel, payload) for channel, payload in batch])
        # Written before the first await (order), then waits for the socket to drain.
        await pub.send_packed_command(packed, check_health=False)

    async def _read_replies(self) -> None:
        """Read the publisher connection's replies (subscriber counts) as they come."""
        pub = self._pub
        assert pub is not None
        while True:
            await pub.read_response()
