"""What the broker backplanes share: a bounded outgoing queue, one writer, the link's state.

:meth:`QueuedBackplane.publish` is synchronous and never waits: it appends
``(channel, payload)`` to a bounded queue, or drops and counts the payload
while the broker is unreachable or the queue is full. One writer task
empties the queue in batches (one batch is one socket write for the broker
client), so a burst of publishes costs one wake-up, not one per payload.

The link's state changes in one place, :meth:`QueuedBackplane._link_up` and
:meth:`QueuedBackplane._link_down`: the outage is logged once at WARNING,
its end once at INFO (with how long it lasted and what it dropped), and the
group layer's ``on_state`` hears of each once. Payloads still queued when
the link goes down are dropped and counted: across nodes delivery is at
most once, and replaying minutes-old chat lines after an outage would be
worse than losing them.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging

from framework.core._registry import check_limit
from framework.runtime.backplane.base import Backplane, BackplaneStats, Deliver, StateChanged
from framework.runtime.reconnect import Backoff

__all__ = ["DEFAULT_BACKOFF", "DIRECT_LIMIT", "QueuedBackplane"]

log = logging.getLogger("wirekit.backplane")

#: Reconnection waits of the broker backplanes. The cap is one second, not
#: :class:`Backoff`'s thirty: a node must be back on the backplane within
#: about a second of the broker's return, and one connection attempt a
#: second per node is nothing for a broker.
DEFAULT_BACKOFF = Backoff(initial=0.05, max_delay=1.0)
#: Bytes in a broker connection's socket buffer past which publishes go
#: through the queue, not to the socket at once: the broker is not reading
#: as fast as the node writes.
DIRECT_LIMIT = 256 * 1024


def _ignore_state(_up: bool) -> None:
    pass


def _ignore_payload(_channel: str, _payload: bytes) -> None:
    pass


class QueuedBackplane(Backplane):
    """A broker backplane with a bounded outgoing queue drained by one writer task.

    Subclasses connect, subscribe and write; they report the link with
    :meth:`_link_up` / :meth:`_link_down` and write what :meth:`_take`
    hands them.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 512,
        backoff: Backoff | None = None,
        close_timeout: float = 1.0,
    ) -> None:
        # 10,000 payloads: a second of a busy node's publishes, a few MiB at
        # most; past that the broker is not keeping up and waiting longer
        # would only make every line later.
        check_limit("max_queue", max_queue, allow_none=False)
        # 512 per write: large enough that a burst is a handful of writes,
        # small enough that one write is well under a millisecond of work.
        check_limit("max_batch", max_batch, allow_none=False)
        self.url = url
        self.stats = BackplaneStats()
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.backoff = backoff if backoff is not None else DEFAULT_BACKOFF
        self.close_timeout = close_timeout
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wake = asyncio.Event()
        self._up = False
        self._deliver: Deliver = _ignore_payload
        self._on_state: StateChanged = _ignore_state
        self._started = False
        self._closing = False
        self._down_since: float | None = None
        self._dropped_at_down = 0
        self._full_logged = False
        self._writing = False

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"<{type(self).__name__} {self.url} {state} queued={len(self._queue)}>"

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        return self._up

    @property
    def queued(self) -> int:
        """Payloads waiting for the writer."""
        return len(self._queue)

    # -- publishing ------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> bool:
        """Queue one broker message; ``False`` if it was dropped (and counted)."""
        queue = self._queue
        if self._up and len(queue) < self.max_queue:
            queue.append((channel, payload))
            if len(queue) == 1:
                self._wake.set()
            return True
        self.stats.dropped += 1
        if self._up and not self._full_logged:
            self._full_logged = True
            log.warning(
                "backplane %s: %d payloads wait for the broker; dropping new ones",
                self.url,
                self.max_queue,
            )
        return False

    def _take(self) -> list[tuple[str, bytes]]:
        """The next batch for the writer (at most ``max_batch``), removed from the queue."""
        queue = self._queue
        if len(queue) <= self.max_batch:
            batch = list(queue)
            queue.clear()
            self._full_logged = False
            return batch
        return [queue.popleft() for _ in range(self.max_batch)]

    async def _write_queue(self) -> None:
        """The writer: hand every queued batch to :meth:`_write` until the link fails."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = self._take()
            self._writing = True
            try:
                await self._write(batch)
            except BaseException:
                # Written or not, the broker gave no receipt: at most once.
                self.stats.dropped += len(batch)
                raise
            finally:
                self._writing = False
            self.stats.published += len(batch)

    @abc.abstractmethod
    async def _write(self, batch: list[tuple[str, bytes]]) -> None:
        """Send ``batch`` to the broker; raise if the link failed."""

    # -- the link's state ------------------------------------------------------------

    def _link_up(self) -> None:
        if self._up or self._closing:
            return
        self._up = True
        if self._down_since is not None:
            self.stats.reconnects += 1
            loop = asyncio.get_running_loop()
            log.info(
                "backplane %s: broker reachable again after %.1f s; %d publishes dropped meanwhile",
                self.url,
                loop.time() - self._down_since,
                self.stats.dropped - self._dropped_at_down,
            )
            self._down_since = None
            self._notify(True)

    def _link_down(self, reason: object) -> None:
        if not self._up:
            return
        self._up = False
        # What the writer had not sent yet will not be sent: at most once.
        self.stats.dropped += len(self._queue)
        self._queue.clear()
        self._full_logged = False
        if self._closing:
            return
        self._down_since = asyncio.get_running_loop().time()
        self._dropped_at_down = self.stats.dropped
        log.warning(
            "backplane %s: broker connection lost (%s); reconnecting, publishes are dropped "
            "until it is back",
            self.url,
            reason,
        )
        self._notify(False)

    def _notify(self, up: bool) -> None:
        try:
            self._on_state(up)
        except Exception:
            log.exception("backplane %s: on_state(%s) raised", self.url, up)

    def _begin(self, deliver: Deliver, on_state: StateChanged) -> None:
        """Record the callbacks; :meth:`start` may be called once."""
        if self._started:
            raise RuntimeError(f"backplane {self.url} is already started")
        self._started = True
        self._deliver = deliver
        self._on_state = on_state

    async def _flush_queue(self) -> None:
        """Wait, at most ``close_timeout``, for the writer to empty the queue."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_timeout
        while self._up and (self._queue or self._writing) and loop.time() < deadline:
            await asyncio.sleep(0.005)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        """Cancel ``task`` and wait for it; whatever it raised is retrieved and dropped."""
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves
        except Exception as error:
            # The link failed under it: the caller already knows, or no longer cares.
            log.debug("backplane task %s ended: %r", task.get_name(), error)
