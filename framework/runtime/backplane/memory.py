"""``memory://``: the in-process backplane, the default.

One hub per process (``memory://NAME`` picks a separate one): every
:class:`MemoryBackplane` on a hub is a node of one cluster, so two apps
served in one process with ``memory://`` see each other's groups, as two
machines on one Redis would (what the tests do). Nothing crosses processes:
with ``--workers`` each worker has its own hub, which is why a protocol that
uses groups refuses several workers on ``memory://``.

It keeps the backplane contract (:mod:`framework.runtime.backplane.base`):
a publish is queued for each other node subscribed to the channel and handed
to it on its own event loop (another thread's, too) on a later turn, in
publish order; a node whose queue holds ``max_queued`` payloads drops the
next ones, counted in the publisher's ``stats.dropped``. A node does not get
its own publishes back (a broker would echo them; the group layer drops
echoes anyway). There is no broker to lose, so ``connected`` is always true.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from urllib.parse import urlsplit

from framework.core.errors import ConfigError
from framework.runtime.backplane.base import Backplane, BackplaneStats, Deliver, StateChanged

__all__ = ["DEFAULT_MAX_QUEUED", "MemoryBackplane"]

log = logging.getLogger("wirekit.backplane")

#: Payloads waiting for one node before publishes to it are dropped: a
#: node whose loop is stuck must not grow the others' memory without bound.
DEFAULT_MAX_QUEUED = 100_000

# Hubs by name; a hub maps a channel to the backplanes subscribed to it.
_hubs: dict[str, dict[str, set[MemoryBackplane]]] = {}
# Nodes of one hub may run on different threads' loops (ServerThread).
_lock = threading.Lock()


class MemoryBackplane(Backplane):
    """A node on an in-process hub (see the module)."""

    def __init__(self, url: str = "memory://", *, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.query or parts.fragment:
            raise ConfigError(
                f"a memory backplane URL is memory:// or memory://NAME, got {url!r}",
                option="backplane",
            )
        if type(max_queued) is not int or max_queued < 1:
            raise ConfigError(
                f"max_queued must be a positive integer, got {max_queued!r}", option="max_queued"
            )
        self.url = url
        #: The hub's name ("" for ``memory://``).
        self.name = (parts.netloc + parts.path).strip("/")
        self.stats = BackplaneStats()
        self.max_queued = max_queued
        self._channels: set[str] = set()
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._scheduled = False

    def __repr__(self) -> str:
        return f"<MemoryBackplane {self.url} channels={len(self._channels)}>"

    @property
    def connected(self) -> bool:
        """Always true: there is no broker to lose."""
        return True

    async def start(self, deliver: Deliver, on_state: StateChanged) -> None:
        """Join the hub; ``on_state`` is never called (the hub cannot go away)."""
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        with _lock:
            _hubs.setdefault(self.name, {})

    async def subscribe(self, channel: str) -> None:
        """Receive what other nodes of the hub publish on ``channel``."""
        with _lock:
            self._channels.add(channel)
            _hubs.setdefault(self.name, {}).setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""
        with _lock:
            self._remove(channel)

    def _remove(self, channel: str) -> None:
        self._channels.discard(channel)
        hub = _hubs.get(self.name)
        if hub is None:
            return
        subscribers = hub.get(channel)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del hub[channel]
        if not hub:
            del _hubs[self.name]

    def publish(self, channel: str, payload: bytes) -> bool:
        """Queue ``payload`` for every other node subscribed to ``channel``.

        ``False`` if some node's queue was full (that node misses it; counted).
        """
        with _lock:
            subscribers = [
                node for node in _hubs.get(self.name, {}).get(channel, ()) if node is not self
            ]
        self.stats.published += 1
        delivered = True
        for node in subscribers:
            if not node._enqueue(channel, payload):
                self.stats.dropped += 1
                delivered = False
        return delivered

    def _enqueue(self, channel: str, payload: bytes) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        with _lock:
            if len(self._queue) >= self.max_queued:
                return False
            self._queue.append((channel, payload))
            if self._scheduled:
                return True
            self._scheduled = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is loop:
                loop.call_soon(self._drain)
            else:
                loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            return False  # its loop closed meanwhile: the node is gone
        return True

    def _drain(self) -> None:
        with _lock:
            batch = list(self._queue)
            self._queue.clear()
            self._scheduled = False
        deliver = self._deliver
        if deliver is None:
            return
        for channel, payload in batch:
            if channel in self._channels:
                self.stats.received += 1
                try:
                    deliver(channel, payload)
                except Exception:
                    # The contract says deliver never raises; if it does, the
                    # next payloads must still arrive.
                    log.exception("%r: deliver raised", self)

    async def close(self) -> None:
        """Leave the hub; what was queued for this node is dropped with it."""
        with _lock:
            for channel in list(self._channels):
                self._remove(channel)
            self._queue.clear()
        self._deliver = None
