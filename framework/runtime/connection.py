"""Connections: what handlers and clients hold, and the dispatch every transport shares.

A :class:`Connection` is ``send``, ``receive``, ``close``, ``abort``, ``peer``,
``state`` and ``stats``, the same over every transport. Its dispatch hands a
read's values to the handlers in one loop (sync inline, async as tasks up to
``max_inflight_handlers``) and gathers the read's replies for one write. The
adapters subclass it and implement its transport side, the protocol
:class:`~framework.runtime.adapter.TransportSide`:
:class:`~framework.runtime.stream.StreamConnection`,
:class:`~framework.runtime.websocket.WebSocketConnection`, the UDP peers
of :mod:`framework.runtime.datagram` and the UDP client of
:mod:`framework.runtime.datagram_client`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from framework.core.connection import BadInput, ConnectionStats, HandlerSlots, ReadPause
from framework.core.errors import ConnectionClosed, UnknownMessageType, WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.router import Router
from framework.runtime.adapter import Encoding, TransportSide, unframed
from framework.runtime.dispatch import PLAIN_REPLIES, describe, guard_hook, needs_await
from framework.runtime.dispatch_loop import DispatchLoop
from framework.runtime.logs import LogLimiter
from framework.runtime.metrics import HandlerTimes, ListenerMetrics

__all__ = ["Connection", "ConnectionClosed", "ConnectionStats", "Encoding", "unframed"]

log = logging.getLogger("wirekit.connection")
_ids = itertools.count(1)


class Connection(DispatchLoop, TransportSide):
    """One peer, seen the same way over every transport.

    Servers hand it to handlers; clients get it from
    :func:`framework.connect`. ``state`` is a dict for the application's own
    per-connection data.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        router: Router | None,
        limits: Limits,
        handler_errors: str = "close",
    ) -> None:
        self.id = next(_ids)
        self.pipeline = pipeline
        self.state: dict[str, Any] = {}
        self.stats = ConnectionStats()
        self.peer: Any = None
        #: The URL of the server listener that accepted this connection (None on a client).
        self.listener: str | None = None
        # The server's limiter for lines a peer can cause (None on a client).
        self._peer_log: LogLimiter | None = None
        # The listener's counters and handler timing (None on a client, or metrics
        # off); the values of a timed read that were no plain handler call.
        self._metrics: ListenerMetrics | None = None
        self._timing: HandlerTimes | None = None
        self._skipped = 0
        self._router = router
        self._limits = limits
        self._handler_errors = handler_errors
        self._loop = asyncio.get_running_loop()
        self._inbox: collections.deque[Any] = collections.deque()
        # One future per receive() call waiting (several tasks may receive).
        self._inbox_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._close_error: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # How many async handlers run, and the values held back meanwhile
        # (the decisions are the core's; the tasks are kept here).
        self._slots = HandlerSlots(limits.max_inflight_handlers)
        self._held = self._slots.held
        # The replies of the current read, written together when it ends (None
        # outside a read); raw bytes under a plain length prefix are held
        # framed, two chunks per reply (see ReplyBatch).
        self._replies: list[Any] | None = None
        # The reply batch's framing (see ReplyBatch and _replies above).
        self._header: Callable[[int], bytes] | None = None
        self._header_limit = -1
        # Replies of async handlers that finished as tasks, written together
        # at the end of the loop iteration they finished in (see _finish).
        self._late: list[Any] = []
        # Set once the application may have closed the connection (close, abort,
        # a failing send), or at once for a transport that can close mid-read:
        # until then dispatch skips asking whether it is closing after each handler.
        self._watch_close = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} peer={self.peer!r}>"

    # -- the application's side ------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed.done()

    @property
    def closing(self) -> bool:
        """Whether the connection has ended or is ending: nothing more can be sent."""
        return self.closed or self._closing()

    @property
    def can_send(self) -> bool:
        """Whether a send now would be written without backing up.

        ``False`` once the connection is closing, or while the data queued for
        the peer is over ``Limits.write_high_water`` (it is not reading fast
        enough). Broadcasters use it to drop or disconnect a slow peer instead
        of buffering for it without bound.
        """
        return not self._closed.done() and not self._closing() and not self._backed_up()

    async def send(self, value: Any) -> None:
        """Encode and send ``value``; waits while the peer is not keeping up."""
        self.send_nowait(value)
        await self._drain()

    def send_nowait(self, value: Any) -> None:
        """Encode and queue ``value`` for sending without waiting for the peer.

        Raises :class:`ConnectionClosed` once the connection is closing, and
        :class:`~framework.core.errors.EncodeError` (or a framing error) when the
        value cannot be encoded: nothing is sent then.
        """
        self._watch_close = True
        if self.closed or self._closing():
            raise self._ended(f"connection #{self.id} is closed")
        if self._late:
            self._flush_late()
        # Replies returned earlier in this chunk go first: the peer sees
        # everything in the order the handlers produced it.
        self._flush_gathered()
        self._write_values([value], strict=True)

    def send_encoded(self, data: bytes) -> None:
        """Queue one value already encoded for this connection, as ``send_nowait`` would.

        ``data`` is ``conn.encoding.frame(conn.pipeline.encode_frame(value))``:
        for a value sent to many connections, encode it once per pipeline
        and frame it once per :attr:`encoding` key, then hand the bytes to
        every connection with that key (groups do this). It is one value's
        wire form on this transport (a stream's frame, a WebSocket
        message's payload, a datagram before any sealing), nothing else.
        Raises :class:`ConnectionClosed` once the connection is closing;
        counted in ``stats`` like any send.
        """
        self._watch_close = True
        if self._closed.done() or self._closing():
            raise self._ended(f"connection #{self.id} is closed")
        if self._late:
            self._flush_late()
        if self._replies:
            self._flush_gathered()  # as in send_nowait: earlier replies go first
        self._write_encoded(data)

    async def receive(self) -> Any:
        """The next value from the peer (clients, and servers without handlers).

        Raises :class:`ConnectionClosed` once the connection has ended and every
        value received before that has been returned.
        """
        while not self._inbox:
            if self.closed:
                raise self._ended(f"connection #{self.id} closed") from self._close_error
            waiter = self._loop.create_future()
            self._inbox_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._inbox_waiters:
                    self._inbox_waiters.remove(waiter)
        value = self._inbox.popleft()
        if len(self._inbox) < self._limits.max_queued // 2:
            self._resume_inbox()
        return value

    async def wait_closed(self) -> None:
        """Wait until the connection has ended."""
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def _can_recover(self) -> bool:
        """Whether a bad frame may cost only itself: a fallback is there to see it."""
        router = self._router
        return router is not None and router.fallback_handler is not None

    def _ended(self, text: str) -> ConnectionClosed:
        """The error ``send`` and ``receive`` raise once the connection has ended."""
        return ConnectionClosed(text, peer=self.peer)

    # -- replies gathered during a read -------------------------------------------------

    def _start_batch(self) -> list[Any]:
        """An empty list to gather the replies of a dispatch in."""
        return []

    def _flush_replies(self, replies: list[Any]) -> None:
        """Send the replies gathered so far in a read (the transport is open)."""
        self._write_values(replies)

    def _flush_gathered(self) -> None:
        """Send the replies this read has gathered so far; the read's batch empties."""
        replies = self._replies
        if replies:
            pending = replies[:]
            replies.clear()
            self._flush_replies(pending)

    def _add_reply(self, value: Any) -> None:
        """Add a reply to the current read's batch (``_replies`` is a list)."""
        replies = self._replies
        assert replies is not None
        replies.append(value)

    def _encode_each(self, values: list[Any], encode: Callable[[Any], bytes]) -> list[bytes]:
        """Encode replies one by one, logging and skipping those that fail."""
        encoded: list[bytes] = []
        for value in values:
            try:
                encoded.append(encode(value))
            except WirekitError as exc:
                self._encode_failed(value, exc)
        return encoded

    def _encode_failed(self, value: Any, exc: WirekitError) -> None:
        # Our own value failed to encode: a local bug, not the peer's.
        self.stats.errors += 1
        log.error("%r: cannot encode reply %s: %s", self, type(value).__qualname__, exc)

    # -- dispatch, shared by every transport ----------------------------------------

    def _deliver(self, values: list[Any]) -> None:
        """Hand decoded values to the router, or queue them for ``receive``."""
        self.stats.frames_in += len(values)
        router = self._router
        if router is not None and router._handlers and not self._held:
            self._dispatch(router, values)  # the usual case, first
            return
        # Handlers or a fallback registered? Read without a property call per read.
        if router is None or not (router._handlers or router.fallback_handler is not None):
            if type(values[-1]) is BadInput:
                # With nothing to hand it to, bad input is fatal: it comes last.
                bad = values.pop()
                self.stats.frames_in -= 1
                self._inbox.extend(values)
                self._wake_receivers()
                self._bad_input(bad.error, fatal=True)
                return
            self._inbox.extend(values)
            self._wake_receivers()
            if len(self._inbox) >= self._limits.max_queued:
                self._pause_inbox()
            return
        if self._held:
            self._held.extend(values)  # keep the peer's order
            return
        self._dispatch(router, values)

    def _wake_receivers(self) -> None:
        waiters, self._inbox_waiters = self._inbox_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _write_one(self, reply: Any) -> None:
        self._watch_close = True  # a failed write closes
        self._write_values([reply])

    def _unhandled(self, value: Any) -> None:
        self._skipped += 1  # no handler's call (see _timed_dispatch)
        if type(value) is BadInput:
            # Counted with the read's values, but it was not one.
            self.stats.frames_in -= 1
            self._bad_input(value.error, fatal=value.fatal)
            return
        kind = type(value).__qualname__
        error = UnknownMessageType(f"no handler for {kind}", type_name=kind, value=value)
        self._bad_input(error, fatal=False)

    def _hold(self, rest: Iterator[Any]) -> None:
        held = len(self._held)
        self._held.extend(rest)
        self._skipped += len(self._held) - held  # timed when dispatched
        self._pause_reading(ReadPause.HANDLERS_BUSY)

    def _call(self, handler: Callable[[Any, Any], Any], value: Any, subject: Any) -> None:
        try:
            result = handler(value, self)
        except Exception:
            self._handler_failed(subject)
            return
        if result is None:
            return
        kind = type(result)
        if kind not in PLAIN_REPLIES and needs_await(result):
            self._run_async(result, subject)
        elif self._replies is not None:
            self._add_reply(result)
        elif not self._closed.done():
            # A handler that closed its (UDP) peer sends nothing after that.
            self._write_values([result])

    def _run_async(self, awaitable: Any, subject: Any) -> None:
        """Run an async handler's result as a task, started eagerly where asyncio can.

        On Python 3.12+ the task's first step runs now: a coroutine that
        finishes without suspending costs no event-loop round trip, and its
        reply joins the chunk's batch like a plain handler's.
        """
        self._skipped += 1  # timed by _finish, not with the read
        if type(awaitable) is not types.CoroutineType:
            self._spawn(self._finish(awaitable, subject))
            return
        if _EAGER_TASKS:
            self._adopt(
                asyncio.Task(self._finish(awaitable, subject), loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            )
            return
        # 3.11: a task from the start. Stepping the coroutine by hand would
        # save the task, but its first step would then run outside any task
        # (asyncio.timeout() raises there) and in the connection's context.
        self._spawn(self._finish(awaitable, subject))

    async def _finish(self, awaitable: Any, subject: Any) -> None:
        timing = self._timing
        start = time.perf_counter() if timing is not None else 0.0
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:
            self._handler_failed(subject)
            return
        finally:
            if timing is not None:
                timing.observe(time.perf_counter() - start)
        if result is None or self.closed or self._closing():
            return
        if self._replies is not None:
            # Finished during a read's dispatch (an eager task that did not
            # suspend): the reply joins that read's batch.
            self._add_reply(result)
            return
        # Handlers finishing in the same loop iteration share one write.
        if not self._late:
            self._loop.call_soon(self._flush_late)
        self._late.append(result)
        if self._backed_up():
            await self._drain()

    def _flush_late(self) -> None:
        late = self._late
        if not late:
            return
        self._late = []
        if self.closed or self._closing():
            log.info("%r: %d repl(ies) lost: connection closed", self, len(late))
            return
        self._write_values(late)

    def _handler_failed(self, subject: Any) -> None:
        self.stats.errors += 1
        if self._metrics is not None:
            self._metrics.handler_failed(subject)
        log.exception("%r: handler for %s raised", self, describe(subject))
        if self._handler_errors == "close":
            self.close()

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        """Bad bytes from the peer: the fallback decides, or the connection ends."""
        self.stats.errors += 1
        if self._metrics is not None:
            self._metrics.decode_errors += 1
        router = self._router
        fallback = router.fallback_handler if router is not None else None
        if fallback is not None:
            log.info("%r: %s: %s", self, type(error).__name__, error)
            self._call(fallback, error, error)
        else:
            kind = type(error).__name__
            summary = f"closed connections ({kind})"
            self._peer_warning(kind, summary, "%r: closing: %s: %s", self, kind, error)
        if fatal or fallback is None:
            self._close_error = error
            self.close()

    def _peer_warning(self, kind: str, summary: str, message: str, *args: Any) -> None:
        """A WARNING the peer caused: on a server, once per kind per interval, then a count."""
        if self._peer_log is None:
            log.warning(message, *args)
            return
        # A flood of bad connections must not become a flood of lines.
        now = self._loop.time()
        self._peer_log.log(now, kind, summary, logging.WARNING, message, *args, logger=log)

    def _served(self, peer_log: LogLimiter, metrics: ListenerMetrics) -> None:
        """A server accepted this connection; its lines go through ``peer_log``."""
        self.listener = metrics.listener
        self._peer_log = peer_log
        self._metrics = metrics
        # The server made a timed class (see _timed_dispatch) when this is set.
        self._timing = metrics.times

    def _run_hooks(self, hooks: list[Callable[[Any], Any]]) -> None:
        for hook in hooks:
            try:
                result = hook(self)
            except Exception:
                log.exception("%r: hook %s raised", self, getattr(hook, "__name__", hook))
                continue
            if inspect.isawaitable(result):
                self._spawn(guard_hook(result, self, hook))

    def _spawn(self, coro: Any) -> None:
        """Run an async handler or hook; past ``max_inflight_handlers``, stop reading."""
        self._adopt(self._loop.create_task(coro))

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        if task.done():
            return  # an eager task that finished in its first step
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if self._slots.started():
            self._pause_reading(ReadPause.HANDLERS_BUSY)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not self._slots.finished() or self._closing():
            return
        if self._held and self._router is not None:
            held = list(self._held)
            self._held.clear()
            replies = self._start_batch()
            self._replies = replies
            try:
                self._dispatch(self._router, held)
            finally:
                self._replies = None
                if replies and not self._closing():
                    self._flush_replies(replies)
        if not self._held:
            self._resume_reading(ReadPause.HANDLERS_BUSY)
            if not self._tasks:
                self._all_done()

    def _mark_closed(self, error: BaseException | None) -> None:
        self._watch_close = True
        if self._closed.done():
            return
        if error is not None and self._close_error is None:
            self._close_error = error
        self._closed.set_result(None)
        self._held.clear()
        self._wake_receivers()
        if self._router is not None:
            self._run_hooks(self._router.disconnect_hooks)


# Python 3.12+ runs a task's first step eagerly on request, current_task()
# and all; 3.11 has no such option (see Connection._run_async).
_EAGER_TASKS = sys.version_info >= (3, 12)
