"""The NATS backplane: ``nats://HOST:PORT``, core NATS publish/subscribe through nats-py.

nats-py already does what a backplane needs of a client, so this adapter
leans on it rather than hand-rolling: it reconnects forever at a fixed pace
(``reconnect_wait``), sends the subscriptions again before it reports the
connection back, and pings the server (``ping_interval``) so a broker that
vanishes without closing the socket is noticed too. Its disconnected and
reconnected callbacks drive the link's state; wirekit adds the bounded
queue and the rule that a payload published while the link is down is
dropped and counted, not kept in nats-py's pending buffer and replayed
after the outage (across nodes, delivery is at most once).

nats-py writes from a task of its own, a loop iteration or two after a
publish: by then the node has served its own members, so the other nodes
would get every value that much later. While nothing waits, in the queue
or in nats-py's pending buffer, :meth:`NatsBackplane.publish` writes the
``PUB`` to the connection's stream at once instead, as the Redis backplane
does (``direct_limit`` bounds the bytes the socket has not taken yet).

A channel is any string; a NATS subject is dot-separated tokens without
spaces, ``*`` or ``>``. :func:`subject_for` maps one to the other (the
identity for channels that are already plain subjects, an escape for the
others) so a group may be named anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.protocol.command import pub_cmd

from framework.core.errors import ConfigError
from framework.runtime.backplane.base import Deliver, StateChanged
from framework.runtime.backplane.queued import DIRECT_LIMIT, QueuedBackplane
from framework.runtime.backplane.streams import nats_stream

__all__ = ["NatsBackplane", "subject_for"]

log = logging.getLogger("wirekit.backplane")

# Characters a subject token may hold as they are: NATS forbids '.', '*',
# '>' and whitespace inside a token; '%' is kept for the escape.
_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:=+,@/!#$&'()[]{}|~^`;?\"<"
)


def subject_for(channel: str) -> str:
    """The NATS subject that carries ``channel``.

    A channel that is already a plain subject (dot-separated non-empty
    tokens of ordinary characters, e.g. ``wirekit.chat.users``) is its own
    subject, so the broker's monitoring shows the names wirekit uses. Any
    other channel becomes one token where every character a subject cannot
    hold, ``.`` and ``%`` included, is ``%XX`` (its UTF-8 bytes). A plain
    subject never holds a ``%`` and an escaped one always does, so distinct
    channels always get distinct subjects.
    """
    if channel and all(
        token and all(char in _PLAIN for char in token) for token in channel.split(".")
    ):
        return channel
    # The empty channel becomes a lone '%': no escape is a lone '%'.
    return (
        "".join(
            char if char in _PLAIN else "".join(f"%{byte:02X}" for byte in char.encode())
            for char in channel
        )
        or "%"
    )


def _server(url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    if parts.scheme != "nats":
        raise ConfigError(f"not a nats:// URL: {url!r}", option="backplane", value=url)
    try:
        port = parts.port or 4222
    except ValueError as error:
        raise ConfigError(f"bad port in {url!r}", option="backplane", value=url) from error
    if parts.path.strip("/"):
        raise ConfigError(
            f"{url!r}: a NATS URL has no path, e.g. nats://127.0.0.1:4222",
            option="backplane",
            value=url,
        )
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return f"nats://{host}:{port}", user, password


class NatsBackplane(QueuedBackplane):
    """Core NATS as a backplane; see the module docstring.

    ``max_queue`` bounds the payloads waiting for the writer,
    ``direct_limit`` the bytes written at once by :meth:`publish` and not
    yet taken by the socket (0: every publish goes through the queue),
    ``reconnect_wait`` is the pause between reconnection attempts,
    ``ping_interval`` the time between liveness pings (two unanswered ones
    count as a lost link), ``connect_timeout`` bounds each connection attempt
    and ``close_timeout`` the flush in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 512,
        direct_limit: int = DIRECT_LIMIT,
        reconnect_wait: float = 0.25,
        ping_interval: float = 5.0,
        connect_timeout: float = 2.0,
        close_timeout: float = 1.0,
    ) -> None:
        super().__init__(url, max_queue=max_queue, max_batch=max_batch, close_timeout=close_timeout)
        self._server, self._user, self._password = _server(url)
        # A fixed wait, not exponential: nats-py paces it; a quarter of a
        # second keeps a node within the second of the broker's return.
        self.reconnect_wait = reconnect_wait
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        self.direct_limit = direct_limit
        self._nc = Client()
        self._subs: dict[str, Subscription] = {}
        self._wanted: dict[str, object] = {}
        self._writer: asyncio.Task[None] | None = None
        self._first_error: asyncio.Future[BaseException] | None = None
        self._oversize_logged = False

    # -- the Backplane interface ------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> bool:
        """Write one ``PUB`` now, or queue it; ``False`` if it was dropped (and counted).

        A payload over the server's ``max_payload`` is dropped here: the
        server would answer it by closing the connection.
        """
        nc = self._nc
        if len(payload) > nc.max_payload:
            self.stats.dropped += 1
            if not self._oversize_logged:
                self._oversize_logged = True
                log.warning(
                    "backplane %s: a %d-byte payload is over the server's max_payload "
                    "(%d bytes): dropped, as every larger one will be",
                    self.url,
                    len(payload),
                    nc.max_payload,
                )
            return False
        if self._up and not self._queue and not self._writing and not nc.pending_data_size:
            # Nothing queued here or in nats-py: nothing this could overtake.
            # Without the stream (see streams.py), the queue.
            writer = nats_stream(nc)
            if (
                writer is not None
                and nc.is_connected
                and not writer.transport.is_closing()
                and writer.transport.get_write_buffer_size() < self.direct_limit
            ):
                writer.write(pub_cmd(subject_for(channel), "", payload))
                self.stats.published += 1
                return True
        return super().publish(channel, payload)

    async def start(self, deliver: Deliver, on_state: StateChanged) -> None:
        """Connect; raises :class:`ConfigError` naming the URL if NATS cannot be reached."""
        self._begin(deliver, on_state)
        loop = asyncio.get_running_loop()
        self._first_error = loop.create_future()
        connecting = loop.create_task(self._connect())
        # nats-py retries the first connection forever too: the first failure decides.
        racing: list[asyncio.Future[Any]] = [connecting, self._first_error]
        await asyncio.wait(
            racing,
            timeout=self.connect_timeout * 2,
            return_when=asyncio.FIRST_COMPLETED,
        )
        error: BaseException | None = None
        if not connecting.done():
            error = self._first_error.result() if self._first_error.done() else TimeoutError()
        else:
            error = connecting.exception()
        self._first_error = None
        if error is not None:
            await self._cancel(connecting)
            await self._nc.close()
            raise ConfigError(
                f"backplane {self.url}: cannot reach NATS: {error!r}",
                option="backplane",
                value=self.url,
            ) from error
        self._link_up()
        self._writer = loop.create_task(self._write_forever())

    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s payloads; returns once the server has it (if up)."""
        if channel in self._wanted:
            return
        # Which subscription of the channel is current: a payload nats-py had
        # queued for an earlier one, before unsubscribe(), is not delivered.
        token = self._wanted[channel] = object()
        wanted = self._wanted
        deliver_payload = self._deliver
        stats = self.stats

        async def on_message(msg: Msg) -> None:
            if wanted.get(channel) is token:
                stats.received += 1
                try:
                    deliver_payload(channel, msg.data)
                except Exception:
                    log.exception("backplane %s: deliver raised", self.url)

        self._subs[channel] = await self._nc.subscribe(subject_for(channel), cb=on_message)
        if self._up:
            try:
                # Two round trips: nats-py writes a flush's PING straight to
                # the socket, ahead of the SUB still in its pending buffer,
                # so the first PONG can come before the server has the SUB.
                # The second PING follows the SUB: its PONG means it is in.
                for _ in range(2):
                    await self._nc.flush(timeout=self.connect_timeout)  # type: ignore[arg-type]
            except (NatsError, OSError, TimeoutError) as error:
                log.debug("backplane %s: subscribe %r not confirmed: %s", self.url, channel, error)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``'s payloads, at once (late ones are not delivered)."""
        self._wanted.pop(channel, None)
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except (NatsError, OSError) as error:
            log.debug("backplane %s: unsubscribe %r: %s", self.url, channel, error)

    async def close(self) -> None:
        """Flush the queue (at most ``close_timeout``), then disconnect."""
        await self._flush_queue()
        self._closing = True
        self._link_down("closed")
        await self._cancel(self._writer)
        if self._nc.is_connected:
            try:
                await asyncio.wait_for(self._nc.flush(), self.close_timeout)
            except (NatsError, OSError, TimeoutError) as error:
                log.debug("backplane %s: final flush: %s", self.url, error)
        await self._nc.close()

    # -- the client ---------------------------------------------------------------------

    async def _connect(self) -> None:
        # nats-py annotates its waits as int; they are seconds and fractions work.
        await self._nc.connect(
            servers=[self._server],
            user=self._user,
            password=self._password,
            name="wirekit-backplane",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]
            ping_interval=self.ping_interval,  # type: ignore[arg-type]
            max_outstanding_pings=2,
            connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            # Subjects come from subject_for(): no whitespace, so no injection.
            skip_subject_validation=True,
        )

    async def _on_error(self, error: Exception) -> None:
        first = self._first_error
        if first is not None and not first.done():
            first.set_result(error)
        log.debug("backplane %s: %s", self.url, error)

    async def _on_disconnected(self) -> None:
        self._link_down("disconnected")

    async def _on_reconnected(self) -> None:
        self._link_up()

    async def _on_closed(self) -> None:
        self._link_down("closed")

    async def _write_forever(self) -> None:
        # A failed write (the link broke under it) drops its batch; nats-py
        # reconnects and the callbacks report it, so the writer goes on.
        while True:
            try:
                await self._write_queue()
            except (NatsError, OSError) as error:
                log.debug("backplane %s: write failed: %s", self.url, error)

    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        publish = self._nc.publish
        for channel, payload in batch:
            await publish(subject_for(channel), payload)
