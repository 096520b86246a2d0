"""The connection's rules, without I/O: bytes and ``now`` in, values and decisions out.

A :class:`StreamState` is everything a stream connection decides that does
not need a socket or an event loop:

- what a read's bytes become: the values to dispatch, in order, with a
  :class:`BadInput` in the place of each frame that failed (the error policy:
  a recoverable error costs one frame, anything else ends the stream);
- why reading is paused (:class:`ReadPause`, one bit per reason) and whether a
  change of reasons means the adapter must pause or resume the transport;
- the deadlines: the idle timeout, the frame timeout (a peer that starts a
  frame and never finishes it) and the end of a rate-limit pause, as one
  :attr:`StreamState.wakeup_at` the adapter calls :meth:`StreamState.on_timer`
  at;
- (:class:`HandlerSlots`) how many async handlers run against
  ``max_inflight_handlers``, and the values held back meanwhile.

:class:`ReplyBatch` alone knows the two forms a read's replies are held in
(values to encode together, or wire bytes framed as they were produced).

The adapter (:mod:`framework.runtime.connection`) moves bytes and timer calls
between asyncio and this object, in the shape of websockets' ``protocol.py``
and h11's ``_state.py``. The clock is whatever number the adapter passes as
``now``: tests drive it with bytes and a float.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Any

import attrs

from framework.core.errors import DecodeError, FrameTimeout, FramingError, WirekitError
from framework.core.limits import Limits
from framework.core.pipeline import Pipeline
from framework.core.ratelimit import TokenBucket

__all__ = [
    "BadInput",
    "ConnectionStats",
    "HandlerSlots",
    "ReadPause",
    "ReplyBatch",
    "Role",
    "StreamState",
    "TimerDecision",
]


class Role(enum.Enum):
    """Which end of the connection this is: limits on what a peer sends apply to servers."""

    SERVER = "server"
    CLIENT = "client"


class ReadPause(enum.IntFlag):
    """Why reading from a peer is paused. Reading resumes once no reason is left."""

    #: The peer reads our replies slower than we write them.
    WRITES_BACKED_UP = 1
    #: Nobody is taking values from ``receive()`` fast enough.
    INBOX_FULL = 2
    #: Graceful shutdown: no new work starts.
    SHUTTING_DOWN = 4
    #: ``max_inflight_handlers`` async handlers are running.
    HANDLERS_BUSY = 8
    #: The peer went over ``max_frames_per_second``.
    RATE_LIMITED = 16


class TimerDecision(enum.Enum):
    """What :meth:`StreamState.on_timer` asks the adapter to do."""

    #: Nothing: call again at ``wakeup_at``.
    NOTHING = "nothing"
    #: Close gracefully: the peer sent nothing for ``idle_timeout``.
    IDLE = "idle"
    #: Close gracefully: the peer left a frame unfinished for ``frame_timeout``
    #: (``close_error`` is the :class:`~framework.core.errors.FrameTimeout`).
    FRAME_TIMEOUT = "frame-timeout"
    #: Drop the connection at once: it was closed an idle period ago and the
    #: peer still reads nothing.
    ABORT = "abort"
    #: A rate-limit pause ended; resume reading if ``paused`` is now empty.
    RESUME = "resume"


@attrs.frozen
class BadInput:
    """Bad bytes from the peer, in the place of the frame they cost.

    ``fatal``: the stream cannot go on (a framing error that cannot be
    recovered from, or any error when nothing is there to handle it).
    """

    error: FramingError | DecodeError
    fatal: bool


#: What ``take`` returns as its failures when none failed (never appended to).
_NONE_FAILED: list[tuple[Any, WirekitError]] = []


class ReplyBatch:
    """The replies one read produces, written together when the read ends.

    Two forms, and this docstring is their whole contract:

    - values (``framed`` false): ``chunks`` holds the replies themselves, and
      :meth:`take` encodes them in one ``encode_many`` call;
    - framed (``framed`` true: raw bytes under a plain length prefix, whose
      encoder offers ``header``): ``chunks`` holds wire bytes, two chunks per
      reply (its header and its payload, or ``b""`` and its whole wire
      form), so ``b"".join(chunks)`` is the batch's wire form and
      ``len(chunks) >> 1`` its count.

    A values batch is ``text`` when its stack is UTF-8 under a newline (the
    encoder offers ``text_join``): then ``chunks`` holds ``str`` replies
    only, exactly ``str``, as long as ``mixed`` is false, and :meth:`take`
    joins them without asking each its class; a reply of any other class
    goes through :meth:`add`, which sets ``mixed`` until the batch is taken.

    :meth:`add` and :meth:`take` handle every form. The per-frame dispatch
    loop frames a ``bytes`` reply of at most ``limit`` bytes itself (append
    ``header(len(reply))`` and the reply), appends an exact ``str`` reply
    to a text batch itself, and a stream adapter joins a framed batch
    itself: a call per reply, or one more per read, is what the framed and
    text forms exist to save.
    """

    __slots__ = (
        "_encode",
        "_encode_many",
        "_join",
        "chunks",
        "framed",
        "header",
        "limit",
        "mixed",
        "text",
    )

    def __init__(self, pipeline: Pipeline) -> None:
        encoder = pipeline.encoder()
        self._encode_many = encoder.encode_many
        self._encode = pipeline.encode
        #: ``header(n)``: the wire header of an ``n``-byte frame up to ``limit``, or None.
        self.header: Callable[[int], bytes] | None = encoder.header
        self.limit: int = encoder.header_limit
        self.framed = self.header is not None
        self._join = encoder.text_join
        #: Whether the loop may append exact ``str`` replies to ``chunks`` itself.
        self.text = self._join is not None
        #: A text batch holds a reply that is not exactly a ``str`` (see the class).
        self.mixed = False
        #: Values, or (framed) header and payload chunks, two per reply.
        self.chunks: list[Any] = []

    def __len__(self) -> int:
        """Replies held."""
        return len(self.chunks) >> 1 if self.framed else len(self.chunks)

    def add(self, value: Any) -> list[WirekitError]:
        """Hold one reply; the encoding errors of a reply framed now (the caller logs them)."""
        header = self.header
        if header is None:
            if type(value) is not str:
                self.mixed = True
            self.chunks.append(value)
            return []
        if type(value) is bytes and len(value) <= self.limit:
            self.chunks += (header(len(value)), value)
            return []
        try:
            wire = self._encode(value)
        except WirekitError as exc:
            return [exc]
        # The wire form holds its header: an empty chunk keeps two per reply.
        self.chunks += (b"", wire)
        return []

    def take(self) -> tuple[bytes, int, list[tuple[Any, WirekitError]]]:
        """The held replies' wire bytes and count, and the ones that failed to encode.

        The batch is empty afterwards. One reply that cannot be encoded costs
        only itself: the others are still in the bytes.
        """
        chunks = self.chunks
        join = self._join
        if self.framed:
            taken = b"".join(chunks), len(chunks) >> 1, _NONE_FAILED
        elif not chunks:
            taken = b"", 0, _NONE_FAILED
        elif join is not None and not self.mixed and (data := join(chunks)) is not None:
            taken = data, len(chunks), _NONE_FAILED
        else:
            self.mixed = False
            try:
                taken = self._encode_many(chunks), len(chunks), _NONE_FAILED
            except WirekitError:
                taken = self.encode(chunks)
        # Emptied in place: a dispatch loop may still be appending to it.
        chunks.clear()
        return taken

    def encode(
        self, values: list[Any], *, strict: bool = False
    ) -> tuple[bytes, int, list[tuple[Any, WirekitError]]]:
        """Encode ``values`` together; on an error, each on its own, dropping the bad ones.

        ``strict`` (the application's own ``send``): the error propagates instead.
        """
        try:
            return self._encode_many(values), len(values), []
        except WirekitError:
            if strict:
                raise
        good: list[bytes] = []
        failed: list[tuple[Any, WirekitError]] = []
        for value in values:
            try:
                good.append(self._encode(value))
            except WirekitError as exc:
                failed.append((value, exc))
        return b"".join(good), len(good), failed


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


class HandlerSlots:
    """The async handlers running on one connection, against ``max_inflight_handlers``.

    Decisions only: the adapter keeps the tasks themselves, to wait for or
    cancel them. Values that arrive while every slot is taken wait in
    ``held``, in the peer's order, and reading pauses
    (:attr:`ReadPause.HANDLERS_BUSY`) until half the slots are free again.
    """

    __slots__ = ("held", "limit", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        #: Values decoded but not dispatched yet: every slot was taken.
        self.held: collections.deque[Any] = collections.deque()

    def __repr__(self) -> str:
        return f"<HandlerSlots {self.running}/{self.limit} held={len(self.held)}>"

    @property
    def full(self) -> bool:
        """Whether no more async handlers may start now."""
        return self.running >= self.limit

    def started(self) -> bool:
        """Count a handler that started; True if it took the last slot (pause reading)."""
        self.running += 1
        return self.running >= self.limit

    def finished(self) -> bool:
        """Uncount one that finished; True once half the slots are free (release ``held``)."""
        self.running -= 1
        return self.running <= self.limit // 2


class StreamState:
    """The rules of one stream connection, driven by bytes and a clock.

    ``recover``: whether a frame that fails to decode may cost only itself
    (a fallback handler is there to see the error); otherwise the first bad
    frame ends the stream. A callable is asked at each bad frame, so a
    fallback registered while the connection is open counts.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        role: Role,
        limits: Limits,
        recover: bool | Callable[[], bool],
        now: float,
    ) -> None:
        self.role = role
        self.limits = limits
        self.recover = recover
        self.pipeline = pipeline
        self._use_decoder()
        self.paused = ReadPause(0)
        self.stats = ConnectionStats()
        #: Why the stream ended, when the peer caused it (bad input, a timeout).
        self.close_error: WirekitError | None = None
        served = role is Role.SERVER
        # A client trusts the server it chose: it keeps the connection however
        # quiet the server is, and sets no limit on its frames.
        self.idle_timeout = limits.idle_timeout if served else None
        self.frame_timeout = limits.frame_timeout if served else None
        rate = limits.max_frames_per_second if served else None
        self.bucket = TokenBucket(rate, limits.frame_burst, now=now) if rate is not None else None
        self.last_activity = now
        self.partial_since: float | None = None  # when the unfinished frame began
        self._frame_due: float | None = None
        self._rate_due: float | None = None
        self.closing = False
        #: The peer's address, for the errors this object raises.
        self.peer: Any = None
        #: The earliest time the adapter must call :meth:`on_timer`, or None.
        self.wakeup_at: float | None = None
        self._idle_due = now + self.idle_timeout if self.idle_timeout is not None else None
        self._rearm()

    def __repr__(self) -> str:
        return f"<StreamState {self.role.value} paused={self.paused!r}>"

    def _use_decoder(self) -> None:
        decoder = self.pipeline.decoder()
        self.decoder = decoder
        self.framer = decoder.framer
        # A raw-bytes stack's frames are its values: a read calls the framer
        # itself. After an error, decoder.feed asks the framer for what follows.
        self.feed: Callable[[bytes], list[Any]] = (
            decoder.framer.feed if decoder.passthrough else decoder.feed
        )
        self._promised = decoder.value_class is not None and not decoder.passthrough
        #: Whether the values the last :meth:`receive_data` returned are all
        #: exactly of one class, as the decoder promises (``Decoder.value_class``):
        #: none is bad input. A dispatch loop then need not ask each its class.
        self.uniform = False

    # -- bytes in --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Any]:
        """The values ``data`` completes, in order; a :class:`BadInput` where a frame failed."""
        self.last_activity = now
        try:
            values = self.feed(data)
            self.uniform = self._promised
        except (DecodeError, FramingError) as exc:
            self.uniform = False
            values = self._recover(exc)
        # Per read, not per frame, and cheap when off.
        if self.frame_timeout is not None and (
            self.partial_since is not None or self.framer.buffered
        ):
            self._track_partial(now, len(values))
        if values and self.bucket is not None:
            self._charge(now, len(values))
        return values

    def _recover(self, exc: DecodeError | FramingError) -> list[Any]:
        """The values before a bad frame, the bad frame, and (if it can go on) what follows."""
        values: list[Any] = []
        recover = self.recover if isinstance(self.recover, bool) else self.recover()
        while True:
            fatal = not recover or (isinstance(exc, FramingError) and not exc.recoverable)
            values += exc.decoded
            exc.decoded = []
            values.append(BadInput(exc, fatal))
            if fatal:
                self.close_error = exc
                return values
            try:
                # The frames after the bad one, held by the decoder.
                values += self.decoder.feed(b"")
            except (DecodeError, FramingError) as again:
                exc = again
                continue
            return values

    def receive_eof(self) -> FramingError | None:
        """The peer finished sending: the error of a frame it left unfinished, if any."""
        try:
            self.decoder.end()
        except FramingError as exc:
            return exc
        return None

    @property
    def buffered(self) -> int:
        """Bytes of a frame the peer has started and not finished."""
        return self.decoder.buffered

    # -- reading paused, and why ----------------------------------------------------------

    def pause(self, reason: ReadPause) -> bool:
        """Add a reason to stop reading; True if the transport must pause now."""
        was = self.paused
        self.paused = was | reason
        return not was

    def resume(self, reason: ReadPause) -> bool:
        """Drop a reason; True if none is left and the transport must resume now."""
        if not self.paused & reason:
            return False
        self.paused &= ~reason
        return not self.paused

    # -- deadlines --------------------------------------------------------------------

    def start_closing(self, now: float) -> None:
        """We closed: from now the idle timeout measures how long the flush takes."""
        self.closing = True
        self.last_activity = now
        self.partial_since = None
        self._frame_due = None
        if self.idle_timeout is not None:
            self._idle_due = now + self.idle_timeout
        self._rearm()

    def _rearm(self) -> None:
        due = [t for t in (self._idle_due, self._frame_due, self._rate_due) if t is not None]
        self.wakeup_at = min(due) if due else None

    def _track_partial(self, now: float, completed: int) -> None:
        """Start, keep or stop the clock of the frame the peer has not finished."""
        if not self.buffered:
            self.partial_since = None
        elif completed or self.partial_since is None:
            # A new frame began in this read: frames that complete reset the clock.
            self.partial_since = now
            if self._frame_due is None and self.frame_timeout is not None:
                self._frame_due = now + self.frame_timeout
                self._rearm()

    def _charge(self, now: float, frames: int) -> None:
        bucket = self.bucket
        assert bucket is not None
        wait = bucket.charge(now, frames)
        if wait > 0 and self._rate_due is None and not self.closing:
            self.stats.rate_limited += 1
            self.pause(ReadPause.RATE_LIMITED)
            self._rate_due = now + wait
            self._rearm()

    def on_timer(self, now: float) -> TimerDecision:
        """Check the deadlines due by ``now``; what the adapter must do."""
        decision = TimerDecision.NOTHING
        if self._rate_due is not None and now >= self._rate_due:
            decision = self._rate_check(now)
        if self._frame_due is not None and now >= self._frame_due:
            decision = self._frame_check(now) or decision
        if self._idle_due is not None and now >= self._idle_due:
            decision = self._idle_check(now) or decision
        self._rearm()
        return decision

    def _rate_check(self, now: float) -> TimerDecision:
        bucket = self.bucket
        assert bucket is not None
        debt = bucket.tokens(now)
        if debt < 0:  # the timer fired a little early
            self._rate_due = now - debt / bucket.rate
            return TimerDecision.NOTHING
        self._rate_due = None
        self.paused &= ~ReadPause.RATE_LIMITED
        return TimerDecision.RESUME

    def _frame_check(self, now: float) -> TimerDecision | None:
        self._frame_due = None
        timeout = self.frame_timeout
        since = self.partial_since
        if timeout is None or since is None or self.closing:
            return None
        if not self.buffered:
            # A bad frame completed (and was dropped) without counting as a frame.
            self.partial_since = None
            return None
        if self.paused:
            # We stopped reading, not the peer: its clock starts again.
            self.partial_since = since = now
        elif now - since >= timeout:
            buffered = self.buffered
            self.close_error = FrameTimeout(
                f"peer did not finish a frame within frame_timeout={timeout} s "
                f"({buffered} bytes of it received)",
                buffered=buffered,
                peer=self.peer,
            )
            self.partial_since = None
            # Free what the peer made us hold now, not when the close completes.
            self._use_decoder()
            return TimerDecision.FRAME_TIMEOUT
        self._frame_due = since + timeout
        return None

    def _idle_check(self, now: float) -> TimerDecision | None:
        timeout = self.idle_timeout
        assert timeout is not None
        idle = now - self.last_activity
        if idle < timeout:
            self._idle_due = self.last_activity + timeout
            return None
        self._idle_due = now + timeout
        # Closed gracefully a whole idle period ago, and the peer still has
        # not read what we had to flush: it cannot hold us longer.
        return TimerDecision.ABORT if self.closing else TimerDecision.IDLE
