"""Connections: where bytes from a transport meet a pipeline and a router.

A :class:`Connection` is what handlers and clients hold: ``send``,
``receive``, ``close``, ``abort``, ``peer``, per-connection ``state`` and
``stats``. :class:`StreamConnection` drives it from an asyncio stream
transport (TCP, TLS, Unix, memory): every complete frame of a received chunk
is decoded in one call, handled inline, and the replies produced while
handling that chunk go out in one write.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import attrs

from framework.core.errors import (
    DecodeError,
    FrameTimeout,
    FramingError,
    TransportError,
    UnknownMessageType,
    WirekitError,
)
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.ratelimit import TokenBucket
from framework.core.router import Router
from framework.runtime.dispatch import PLAIN_REPLIES, describe, loop_clock, needs_await

if TYPE_CHECKING:
    from framework.core.pipeline import Decoder

__all__ = ["Connection", "ConnectionClosed", "ConnectionStats", "StreamConnection"]

log = logging.getLogger("wirekit.connection")
_ids = itertools.count(1)


class ConnectionClosed(TransportError):
    """The connection is closed: ``receive`` has nothing more, ``send`` cannot send."""


@attrs.define
class ConnectionStats:
    """Counters of one connection."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    #: Times reading paused because the peer went over ``max_frames_per_second``.
    rate_limited: int = 0


class Connection:
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
        # Decoded values not yet dispatched because max_inflight_handlers
        # async handlers are running; reading is paused meanwhile.
        self._held: collections.deque[Any] = collections.deque()
        # The replies produced during the current read, written together
        # when it ends (None outside a read). With a raw-bytes stack under a
        # plain length prefix (see Encoder.header) they are held already
        # framed, two chunks per reply (header and payload), so the dispatch
        # loop frames a reply as it is produced and the read ends with a join.
        self._replies: list[Any] | None = None
        self._header: Callable[[int], bytes] | None = None  # None: values, not chunks
        self._header_limit = -1
        # Replies of async handlers that finished as tasks, written together
        # at the end of the loop iteration they finished in (see _finish).
        self._late: list[Any] = []
        # Set once the application may have closed the connection (close,
        # abort, a send that can fail), or from the start for a transport
        # that can close on its own mid-read: until then the dispatch loop
        # skips asking the transport whether it is closing after every handler.
        self._watch_close = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} peer={self.peer!r}>"

    # -- the application's side ------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed.done()

    @property
    def can_send(self) -> bool:
        """Whether a send now would be written without backing up.

        ``False`` once the connection is closing, or while the data queued for
        the peer is over ``Limits.write_high_water`` (it is not reading fast
        enough). Broadcasters use it to drop or disconnect a slow peer instead
        of buffering for it without bound.
        """
        return not self.closed and not self._closing() and not self._backed_up()

    def _backed_up(self) -> bool:
        return False

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
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        if self._late:
            self._flush_late()
        # Replies returned earlier in this chunk go first: the peer sees
        # everything in the order the handlers produced it.
        self._flush_gathered()
        self._write_values([value], strict=True)

    async def receive(self) -> Any:
        """The next value from the peer (clients, and servers without handlers).

        Raises :class:`ConnectionClosed` once the connection has ended and every
        value received before that has been returned.
        """
        while not self._inbox:
            if self.closed:
                raise ConnectionClosed(
                    f"connection #{self.id} closed", peer=self.peer
                ) from self._close_error
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

    def close(self) -> None:
        """Close gracefully: data already queued is sent first."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close at once, dropping unsent data."""
        raise NotImplementedError

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    # -- what subclasses provide ---------------------------------------------------

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        """Encode and send ``values``.

        ``strict`` (the application's own ``send``): an encoding error
        propagates. Otherwise (handler replies) a value that cannot be
        encoded is logged and counted, and the others still go out.
        """
        raise NotImplementedError

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
        header = self._header
        if header is None:
            replies.append(value)
        elif type(value) is bytes and len(value) <= self._header_limit:
            replies += (header(len(value)), value)
        else:
            # Held framed: encode it now; a value that cannot be encoded is
            # logged and dropped, as the batch's encoder would. Its wire form
            # holds its header: an empty chunk before it keeps two chunks per
            # reply, which frames_out counts on.
            for wire in self._encode_each([value], self.pipeline.encode):
                replies += (b"", wire)

    def _encode_each(self, values: list[Any], encode: Callable[[Any], bytes]) -> list[bytes]:
        """Encode replies one by one, logging and skipping those that fail."""
        encoded: list[bytes] = []
        for value in values:
            try:
                encoded.append(encode(value))
            except WirekitError as exc:
                # Our own value failed to encode: a local bug, not the peer's.
                self.stats.errors += 1
                log.error("%r: cannot encode reply %s: %s", self, type(value).__qualname__, exc)
        return encoded

    async def _drain(self) -> None:
        return None

    def _closing(self) -> bool:
        return False

    def _pause_inbox(self) -> None:
        return None

    def _resume_inbox(self) -> None:
        return None

    def _stop_reading(self) -> None:
        """Read nothing more from the peer (graceful shutdown): no new work starts."""

    def _pause_reading(self, reason: int) -> None:
        return None

    def _resume_reading(self, reason: int) -> None:
        return None

    # -- dispatch, shared by every transport ----------------------------------------

    def _deliver(self, values: list[Any]) -> None:
        """Hand decoded values to the router, or queue them for ``receive``."""
        self.stats.frames_in += len(values)
        router = self._router
        if router is not None and router._handlers and not self._held:
            self._dispatch(router, values)  # the usual case, first
            return
        # router.dispatches, without a property call per read.
        if router is None or not (router._handlers or router.fallback_handler is not None):
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

    def _dispatch(self, router: Router, values: list[Any]) -> None:
        # The hot loop: one iteration per received value, kept to what a
        # plain reply needs. The handler lookup is skipped while values keep
        # the same class; a plain reply is appended to the chunk's batch; the
        # in-flight limit is checked only where a task was started, and
        # whether the connection is closing only once the application may
        # have closed it (see _watch_close).
        limit = self._limits.max_inflight_handlers
        tasks = self._tasks
        rest = iter(values)
        if tasks and len(tasks) >= limit:
            self._hold(rest)
            return
        resolved = router._resolved
        replies = self._replies
        # Framed as produced (see _replies): a bytes reply within the header's
        # range is framed here, in the loop; any other goes through _add_reply.
        header = self._header
        most = self._header_limit
        if replies is None:
            header = None
            reply: Callable[[Any], None] = self._write_one
        elif header is not None:
            reply = self._add_reply
            chunk = replies.append
        else:
            reply = replies.append
        plain = PLAIN_REPLIES
        last_kind: type | None = None
        handler: Callable[[Any, Any], Any] | None = None
        for value in rest:
            if type(value) is not last_kind:
                last_kind = type(value)
                handler = resolved.get(last_kind) or router.handler_for(last_kind)
            if handler is None:
                self._unhandled(value)  # an async fallback starts a task
                if self._closing():
                    return
                if len(tasks) >= limit:
                    self._hold(rest)
                    return
                continue
            try:
                result = handler(value, self)
            except Exception:
                self._handler_failed(value)
                if self._closing():
                    return
                continue
            if result is not None:
                if header is not None and type(result) is bytes and (size := len(result)) <= most:
                    chunk(header(size))
                    chunk(result)
                elif type(result) in plain or not needs_await(result):
                    reply(result)
                else:
                    self._run_async(result, value)
                    if len(tasks) >= limit:
                        # Too much work running: hold the rest (at most one
                        # read's worth, since reading pauses) until handlers finish.
                        self._hold(rest)
                        return
            if self._watch_close and self._closing():
                return

    def _write_one(self, reply: Any) -> None:
        self._watch_close = True  # a failed write closes
        self._write_values([reply])

    def _unhandled(self, value: Any) -> None:
        kind = type(value).__qualname__
        error = UnknownMessageType(f"no handler for {kind}", type_name=kind, value=value)
        self._bad_input(error, fatal=False)

    def _hold(self, rest: Iterator[Any]) -> None:
        self._held.extend(rest)
        self._pause_reading(8)

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
        else:
            self._write_values([result])

    def _run_async(self, awaitable: Any, subject: Any) -> None:
        """Run an async handler's result as a task, started eagerly where asyncio can.

        On Python 3.12+ the task's first step runs now: a coroutine that
        finishes without suspending (the common echo or lookup handler)
        costs no event-loop round trip, and its reply joins the chunk's
        batch like a plain handler's. On 3.11 the task starts on the next
        turn of the loop.
        """
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
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:
            self._handler_failed(subject)
            return
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
        log.exception("%r: handler for %s raised", self, describe(subject))
        if self._handler_errors == "close":
            self.close()

    def _bad_input(self, error: WirekitError, *, fatal: bool) -> None:
        """Bad bytes from the peer: the fallback decides, or the connection ends."""
        self.stats.errors += 1
        router = self._router
        fallback = router.fallback_handler if router is not None else None
        if fallback is not None:
            log.info("%r: %s: %s", self, type(error).__name__, error)
            self._call(fallback, error, error)
        else:
            log.warning("%r: closing: %s: %s", self, type(error).__name__, error)
        if fatal or fallback is None:
            self._close_error = error
            self.close()

    def _run_hooks(self, hooks: list[Callable[[Any], Any]]) -> None:
        for hook in hooks:
            try:
                result = hook(self)
            except Exception:
                log.exception("%r: hook %s raised", self, getattr(hook, "__name__", hook))
                continue
            if inspect.isawaitable(result):
                self._spawn(_guard_hook(result, self, hook))

    def _spawn(self, coro: Any) -> None:
        """Run an async handler or hook; past ``max_inflight_handlers``, stop reading."""
        self._adopt(self._loop.create_task(coro))

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        if task.done():
            return  # an eager task that finished in its first step
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if len(self._tasks) >= self._limits.max_inflight_handlers:
            self._pause_reading(8)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) > self._limits.max_inflight_handlers // 2 or self._closing():
            return
        if self._held and self._router is not None:
            held = list(self._held)
            self._held.clear()
            replies: list[Any] = []
            self._replies = replies
            try:
                self._dispatch(self._router, held)
            finally:
                self._replies = None
                if replies and not self._closing():
                    self._flush_replies(replies)
        if not self._held:
            self._resume_reading(8)
            if not self._tasks:
                self._all_done()

    def _all_done(self) -> None:
        """Every handler has finished and nothing is held (see ``eof_received``)."""

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

    async def _wait_handlers(self, timeout: float) -> None:
        """Let in-flight async handlers finish (graceful shutdown), then cancel the rest.

        Values held back by ``max_inflight_handlers`` were received before the
        shutdown: they are dispatched as handlers finish, within the same
        deadline.
        """
        loop = self._loop
        deadline = loop.time() + timeout
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        if self._tasks:
            log.warning(
                "%r: cancelling %d handler(s) still running after %s s",
                self,
                len(self._tasks),
                timeout,
            )
            self._held.clear()
            for task in list(self._tasks):
                task.cancel()


# Python 3.12+ runs a task's first step eagerly on request, current_task()
# and all; 3.11 has no such option (see Connection._run_async).
_EAGER_TASKS = sys.version_info >= (3, 12)


async def _guard_hook(awaitable: Any, conn: Connection, hook: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("%r: hook %s raised", conn, getattr(hook, "__name__", hook))


class StreamConnection(Connection, asyncio.Protocol):
    """A connection over a byte-stream transport (TCP, TLS, Unix, memory)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        router: Router | None,
        limits: Limits,
        handler_errors: str = "close",
        on_made: Callable[[StreamConnection], bool] | None = None,
        on_lost: Callable[[StreamConnection], None] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        super().__init__(pipeline, router=router, limits=limits, handler_errors=handler_errors)
        # Servers pass limits.idle_timeout; a client's connection stays open
        # however quiet the server is, until the client closes it.
        self._idle_timeout = idle_timeout
        self._close_when_done = False
        self._use_decoder(pipeline.decoder())
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        # Why reading is paused, one bit per reason: 1 writes backed up, 2 inbox
        # full, 4 shutting down, 8 too many handlers running, 16 over the
        # frame rate.
        self._reading_paused_for = 0
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._on_made = on_made
        self._on_lost = on_lost
        self._now = loop_clock(self._loop)
        self._last_activity = self._now()
        self._idle_handle: asyncio.TimerHandle | None = None
        encoder = pipeline.encoder()
        self._encode_many = encoder.encode_many
        self._header = encoder.header
        self._header_limit = encoder.header_limit
        # Limits on what a peer sends, for connections a server accepted
        # (those have on_made); a client trusts the server it chose.
        served = on_made is not None
        self._frame_timeout = limits.frame_timeout if served else None
        self._partial_since: float | None = None  # when the unfinished frame began
        self._frame_handle: asyncio.TimerHandle | None = None
        rate = limits.max_frames_per_second if served else None
        self._bucket = (
            TokenBucket(rate, limits.frame_burst, now=self._last_activity)
            if rate is not None
            else None
        )
        self._rate_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, though
        # they implement it: no isinstance check here.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        # A socket transport starts closing only when told to (close, abort,
        # a failed write), never in the middle of our read; an in-process
        # one (memory://, fault injection) can be reset or aborted by the
        # other end at any moment: watch it from the start.
        self._watch_close = transport.get_extra_info("socket") is None
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(
            high=self._limits.write_high_water, low=self._limits.write_low_water
        )
        if self._on_made is not None and not self._on_made(self):
            # Refused (max_connections, shutdown): the application never
            # saw it, so no disconnect hook runs for it either.
            self._router = None
            self._watch_close = True
            transport.abort()
            return
        log.debug("%r: connected", self)
        if self._idle_timeout is not None:
            self._idle_handle = self._loop.call_later(self._idle_timeout, self._check_idle)
        if self._router is not None:
            self._run_hooks(self._router.connect_hooks)

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        stats.bytes_in += len(data)
        self._last_activity = now = self._now()
        replies: list[Any] = []
        self._replies = replies
        completed = 0
        try:
            try:
                values = self._feed(data)
            except (DecodeError, FramingError) as exc:
                completed = stats.frames_in
                self._feed_failed(exc)
                completed = stats.frames_in - completed
            else:
                if values:
                    completed = len(values)
                    # _deliver's usual case, inline: one call fewer per read.
                    router = self._router
                    if router is not None and router._handlers and not self._held:
                        stats.frames_in += completed
                        self._dispatch(router, values)
                    else:
                        self._deliver(values)
        finally:
            self._replies = None
            if replies:
                transport = self._transport
                # A socket transport can have started closing during this read
                # only through a close, an abort or a send, which set
                # _watch_close (in-process transports have it set throughout).
                if transport is not None and not (self._watch_close and transport.is_closing()):
                    if self._header is not None:
                        # Framed already (_flush_replies, inline: once per read).
                        out = b"".join(replies)
                        transport.write(out)
                        stats.frames_out += len(replies) >> 1
                        stats.bytes_out += len(out)
                    else:
                        try:
                            out = self._encode_many(replies)
                        except WirekitError:
                            self._send_batch(transport, replies)  # drops only the bad replies
                        else:
                            if out:
                                transport.write(out)
                            stats.frames_out += len(replies)
                            stats.bytes_out += len(out)
            # Per read, not per frame, and cheap when off. While one frame
            # stays unfinished, reads that complete none change nothing.
            if (
                self._frame_timeout is not None
                and (self._partial_since is not None or self._framer.buffered)
                and (completed or self._partial_since is None)
            ):
                self._track_partial(now, completed)
            if completed and self._bucket is not None:
                self._charge(now, completed)

    def _use_decoder(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._framer = decoder.framer
        # A raw-bytes stack's frames are its values: a read calls the framer
        # itself. After an error the connection goes on with decoder.feed,
        # which asks the framer for what follows, as a direct call would.
        self._feed = decoder.framer.feed if decoder.passthrough else decoder.feed

    def _feed_failed(self, exc: DecodeError | FramingError) -> None:
        """Bad input in a read: keep the values before it, then recover or close."""
        while True:
            # One bad frame (or a skipped over-long line) costs only itself;
            # any other framing error ends the stream.
            fatal = isinstance(exc, FramingError) and not exc.recoverable
            self._deliver(exc.decoded)
            exc.decoded = []
            if fatal:
                self._bad_input(exc, fatal=True)
                return
            if self._closing():
                return
            self._bad_input(exc, fatal=False)
            if self._closing():
                return
            try:
                # The frames after the bad one, held by the decoder.
                values = self._decoder.feed(b"")
            except (DecodeError, FramingError) as again:
                exc = again
                continue
            if values:
                self._deliver(values)
            return

    # -- frame_timeout and max_frames_per_second ------------------------------------

    def _track_partial(self, now: float, completed: int) -> None:
        """Start, keep or stop the clock of the frame the peer has not finished."""
        if not self._framer.buffered:
            self._partial_since = None
        elif completed or self._partial_since is None:
            # A new frame began in this read: frames that complete reset the clock.
            self._partial_since = now
            if self._frame_handle is None and self._frame_timeout is not None:
                self._frame_handle = self._loop.call_later(self._frame_timeout, self._check_frame)

    def _check_frame(self) -> None:
        self._frame_handle = None
        timeout = self._frame_timeout
        since = self._partial_since
        if timeout is None or since is None or self.closed or self._closing():
            return
        now = self._loop.time()
        if not self._decoder.buffered:
            # A bad frame completed (and was dropped) without counting as a frame.
            self._partial_since = None
            return
        if self._reading_paused_for:
            # We stopped reading, not the peer: its clock starts again.
            self._partial_since = since = now
        elif now - since >= timeout:
            buffered = self._decoder.buffered
            error = FrameTimeout(
                f"peer did not finish a frame within frame_timeout={timeout} s "
                f"({buffered} bytes of it received)",
                buffered=buffered,
                peer=self.peer,
            )
            self.stats.errors += 1
            log.info("%r: closing: FrameTimeout: %s", self, error)
            self._close_error = error
            self._partial_since = None
            # Free what the peer made us hold now, not when the close completes.
            self._use_decoder(self.pipeline.decoder())
            self.close()
            return
        remaining = timeout - (now - since)
        self._frame_handle = self._loop.call_later(remaining, self._check_frame)

    def _charge(self, now: float, frames: int) -> None:
        """Charge the frames of one read to the bucket; in debt, stop reading until paid."""
        bucket = self._bucket
        assert bucket is not None
        wait = bucket.charge(now, frames)
        if wait > 0 and self._rate_handle is None and not self._closing():
            self.stats.rate_limited += 1
            self._pause_reading(16)
            self._rate_handle = self._loop.call_later(wait, self._rate_paid)

    def _rate_paid(self) -> None:
        self._rate_handle = None
        bucket = self._bucket
        if bucket is None or self.closed:
            return
        debt = bucket.tokens(self._loop.time())
        if debt < 0:  # the timer fired a little early
            self._rate_handle = self._loop.call_later(-debt / bucket.rate, self._rate_paid)
            return
        self._resume_reading(16)

    def eof_received(self) -> bool | None:
        try:
            self._decoder.end()
        except FramingError as exc:
            self.stats.errors += 1
            log.warning("%r: peer closed mid-frame: %s", self, exc)
        transport = self._transport
        if (
            (self._tasks or self._held)
            and transport is not None
            and transport.get_extra_info("sslcontext") is None
        ):
            # The peer is done sending but may still read: let the handlers
            # already running reply, then close (see _all_done). TLS cannot
            # stay half-open: asyncio closes it whatever we return.
            self._close_when_done = True
            return True
        return None  # close our side too

    def _all_done(self) -> None:
        if self._close_when_done:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._idle_handle, self._frame_handle, self._rate_handle):
            if handle is not None:
                handle.cancel()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        buffered = self._decoder.buffered
        if exc is not None and buffered:
            self.stats.errors += 1
            log.warning(
                "%r: connection lost mid-frame, %d bytes of a frame discarded: %s",
                self,
                buffered,
                exc,
            )
        elif exc is not None:
            log.info("%r: connection lost: %s", self, exc)
        else:
            log.debug("%r: closed", self)
        self._mark_closed(exc)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        # The peer reads slower than we write: stop reading from it, so it
        # cannot make us buffer replies without bound.
        self._write_paused = True
        self._pause_reading(1)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_reading(1)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- Connection ----------------------------------------------------------------

    def close(self) -> None:
        self._watch_close = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._late:
            self._flush_late()
        self._flush_gathered()  # replies produced earlier in this chunk go out first
        # The idle timer now measures how long the flush takes: a peer that
        # reads nothing for another idle period is aborted (see _check_idle).
        self._last_activity = self._loop.time()
        transport.close()

    def abort(self) -> None:
        self._watch_close = True
        if self._transport is not None:
            self._transport.abort()

    def _closing(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def _flush_replies(self, replies: list[Any]) -> None:
        if self._header is None:
            self._write_values(replies)
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        data = b"".join(replies)
        transport.write(data)
        self.stats.frames_out += len(replies) >> 1
        self.stats.bytes_out += len(data)

    def _write_values(self, values: list[Any], *, strict: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"connection #{self.id} is closed", peer=self.peer)
        self._send_batch(transport, values, strict=strict)

    def _send_batch(
        self, transport: asyncio.Transport, values: list[Any], *, strict: bool = False
    ) -> None:
        """Encode ``values`` and write them in one call (the transport is open)."""
        count = len(values)
        try:
            data = self._encode_many(values)
        except WirekitError:
            if strict:
                raise
            # One bad reply must not cost the others of the batch.
            frames = self._encode_each(values, self.pipeline.encode)
            count = len(frames)
            data = b"".join(frames)
        if data:
            transport.write(data)
        self.stats.frames_out += count
        self.stats.bytes_out += len(data)

    def _backed_up(self) -> bool:
        return self._write_paused

    async def _drain(self) -> None:
        if self._write_paused and not self.closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self.closed:
            raise ConnectionClosed(f"connection #{self.id} closed", peer=self.peer)

    def _pause_inbox(self) -> None:
        self._pause_reading(2)

    def _stop_reading(self) -> None:
        self._pause_reading(4)

    def _resume_inbox(self) -> None:
        self._resume_reading(2)

    def _pause_reading(self, reason: int) -> None:
        was = self._reading_paused_for
        self._reading_paused_for |= reason
        if not was and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _resume_reading(self, reason: int) -> None:
        if not self._reading_paused_for & reason:
            return
        self._reading_paused_for &= ~reason
        transport = self._transport
        if not self._reading_paused_for and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _check_idle(self) -> None:
        timeout = self._idle_timeout
        transport = self._transport
        if timeout is None or transport is None or self.closed:
            return
        idle = self._loop.time() - self._last_activity
        if idle < timeout:
            self._idle_handle = self._loop.call_later(timeout - idle, self._check_idle)
            return
        if transport.is_closing():
            # Closed gracefully a whole idle period ago, and the peer still
            # has not read what we had to flush: it cannot hold us longer.
            log.info("%r: peer not reading for %.1f s while closing, aborting", self, idle)
            self.abort()
            return
        log.info("%r: idle for %.1f s, closing", self, idle)
        self.close()
        self._idle_handle = self._loop.call_later(timeout, self._check_idle)
