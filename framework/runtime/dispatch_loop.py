"""The dispatch loop: a read's values to their handlers, and their replies to the read's batch.

:class:`DispatchLoop` is the part of :class:`~framework.runtime.connection.Connection`
that runs once per received value, kept apart so that its hot loop can be
read (and measured) on its own. The connection provides the rest: what
happens to a value with no handler, to a handler that raises, to an async
handler's awaitable, and to values held back while handlers are busy.
"""

from __future__ import annotations

import abc
import bisect
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from framework.core.connection import BadInput, HandlerSlots
from framework.core.router import Router
from framework.runtime.dispatch import PLAIN_REPLIES, needs_await
from framework.runtime.metrics import BUCKETS, HandlerTimes

__all__ = ["DispatchLoop"]


class DispatchLoop(abc.ABC):
    """Hands a read's values to the router's handlers (a mixin of ``Connection``)."""

    # Provided by the connection (see its __init__).
    _slots: HandlerSlots
    _replies: list[Any] | None
    _header: Callable[[int], bytes] | None
    _header_limit: int
    #: Whether the read's batch takes exact ``str`` replies as they come (a
    #: text ``ReplyBatch``); the stream adapter sets it from its batch.
    _text_replies = False
    _watch_close: bool
    _skipped: int
    _timing: HandlerTimes | None

    @abc.abstractmethod
    def _closing(self) -> bool:
        """Whether the transport is closing or closed: nothing more can be sent."""

    @abc.abstractmethod
    def _hold(self, rest: Iterator[Any]) -> None:
        """Every handler slot is taken: keep ``rest`` until handlers finish."""

    @abc.abstractmethod
    def _unhandled(self, value: Any) -> None:
        """A value no handler takes (or bad input)."""

    @abc.abstractmethod
    def _handler_failed(self, subject: Any) -> None:
        """A handler raised while handling ``subject``."""

    @abc.abstractmethod
    def _run_async(self, awaitable: Any, subject: Any) -> None:
        """Run an async handler's result as a task."""

    @abc.abstractmethod
    def _add_reply(self, value: Any) -> None:
        """Add a reply to the current read's batch."""

    @abc.abstractmethod
    def _write_one(self, reply: Any) -> None:
        """Send one reply outside a read."""

    def _dispatch(self, router: Router, values: list[Any], uniform: bool = False) -> None:
        # The hot loop: one iteration per received value, kept to what a
        # plain reply needs. A plain reply is appended to the read's batch;
        # the in-flight limit is checked only where a task was started, and
        # whether the connection is closing only once the application may
        # have closed it (see Connection._watch_close).
        #
        # uniform: the caller knows every value is exactly of the first one's
        # class, none bad input (the decoder's word: StreamState.uniform), so
        # the loop for the usual read need not ask each value its class.
        slots = self._slots
        rest: Iterator[Any] = iter(values)
        if slots.running and slots.full:
            self._hold(rest)
            return
        resolved = router._resolved
        replies = self._replies
        # Framed as produced (see ReplyBatch): a bytes reply within the header's
        # range is framed here, in the loop; any other goes through _add_reply.
        # A text batch takes an exact str reply here too; any other reply
        # goes through _add_reply, which tells the batch (see ReplyBatch).
        header = self._header
        most = self._header_limit
        text = self._text_replies
        if replies is None:
            header = None
            text = False
            reply: Callable[[Any], None] = self._write_one
        elif header is not None or text:
            reply = self._add_reply
            chunk = replies.append
        else:
            reply = replies.append
        plain = PLAIN_REPLIES
        # The usual read first: values of one class, for a handler already
        # resolved. This loop leaves out the lookup (and its checks) per value;
        # at the first value of another class, the general loop below goes on.
        kind = type(values[0]) if values else BadInput
        handler = resolved.get(kind) if kind is not BadInput else None
        if handler is not None:
            for value in rest:
                if not uniform and type(value) is not kind:
                    rest = itertools.chain((value,), rest)
                    break
                try:
                    result = handler(value, self)
                except Exception:
                    self._handler_failed(value)
                    if self._closing():
                        return
                    continue
                if header is not None and type(result) is bytes and (size := len(result)) <= most:
                    chunk(header(size))
                    chunk(result)
                elif text and type(result) is str:
                    chunk(result)
                elif type(result) in plain:
                    reply(result)
                elif result is not None:
                    if not needs_await(result):
                        reply(result)
                    else:
                        self._run_async(result, value)
                        if slots.running and slots.full:
                            # Too much work running: hold the rest (at most one
                            # read's worth, since reading pauses) until handlers finish.
                            self._hold(rest)
                            return
                if self._watch_close and self._closing():
                    return
            else:
                return
        last_kind: type | None = None
        handler = None
        for value in rest:
            if type(value) is not last_kind:
                last_kind = type(value)
                # Bad input is never a handler's, even a catch-all's.
                handler = (
                    None
                    if last_kind is BadInput
                    else resolved.get(last_kind) or router.handler_for(last_kind)
                )
            if handler is None:
                self._unhandled(value)  # an async fallback starts a task
                if self._closing():
                    return
                if slots.running and slots.full:
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
                elif text and type(result) is str:
                    chunk(result)
                elif type(result) in plain or not needs_await(result):
                    reply(result)
                else:
                    self._run_async(result, value)
                    if slots.running and slots.full:
                        self._hold(rest)
                        return
            if self._watch_close and self._closing():
                return

    def _timed_dispatch(self, router: Router, values: list[Any], uniform: bool = False) -> None:
        # _dispatch of the classes a server makes with metrics on: a read's plain
        # handler calls timed together (async ones alone, in _finish); held, bad
        # and async values are counted in _skipped where met, off the value loop.
        self._skipped = 0
        start = _perf()
        _plain_dispatch(self, router, values, uniform)
        elapsed = _perf() - start
        calls = len(values) - self._skipped
        if calls > 0:  # HandlerTimes.observe, inline: one Python call fewer per read
            times = self._timing
            assert times is not None
            times.counts[_bucket(BUCKETS, elapsed / calls)] += calls
            times.total += elapsed


_perf = time.perf_counter
_bucket = bisect.bisect_left
_plain_dispatch = DispatchLoop._dispatch
