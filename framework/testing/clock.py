"""A virtual clock for asyncio: timers fire at once, and ``loop.time()`` says they waited.

:class:`VirtualClockLoop` is an ordinary selector event loop whose ``time()``
is a number it keeps itself. When nothing is ready to run, instead of
sleeping until the next timer it polls for I/O without waiting and, if there
is none, moves its clock forward to that timer. ``asyncio.sleep(3600)``,
``asyncio.wait_for(..., 10)``, ``asyncio.timeout()`` and a server's idle
timer then complete in microseconds of real time while every piece of code
reading ``loop.time()`` sees the full virtual duration go by. A test that
deadlocks fails at once instead of hanging: at its timeout's virtual
deadline, or with ``RuntimeError`` when nothing is left that could ever wake
the loop (no timer, no callback, no socket, no thread).

The clock stands still while there is work: callbacks, ready I/O, or a job
in a thread (``run_in_executor``, ``asyncio.to_thread``, name resolution).
While such a job runs, the loop waits for it in real time and counts that
time, so a thread's work is never outrun by a jump. Real sockets work too,
but only the readiness a zero-timeout poll sees is waited for: traffic
between two ends in this process over loopback is (the kernel delivers it
before ``send`` returns); for a peer in another process or thread, give
``io_wait``. The in-memory transports (``memory://``, ``memory+udp://``) are
what it is made for.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import selectors
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple, Unpack

__all__ = ["VirtualClockLoop", "VirtualClockPolicy", "run_virtual"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _VirtualSelector(selectors.BaseSelector):
    """A real selector whose waits the loop's clock may skip instead of sleeping."""

    def __init__(self, clock: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        # File descriptors the loop registers for itself (its wake-up pipe):
        # they say nothing about real I/O a jump could outrun.
        self.internal: frozenset[int] = frozenset()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def _watches_real_io(self) -> bool:
        return any(key.fd not in self.internal for key in self._real.get_map().values())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._real.select(0)
        clock = self._clock
        if timeout is None and not clock._threads and not self._watches_real_io():
            # No timer, no callback, no socket, no thread: nothing can ever
            # wake this loop up. A real loop would hang here; say so instead.
            raise RuntimeError(
                "deadlock: the virtual-clock loop waits with no timer scheduled, "
                "no callback ready, no socket open and no thread running"
            )
        if clock._threads or timeout is None:
            # A thread is working for us, or a socket with no timer set: wait
            # in real time, and let the clock follow.
            started = time.monotonic()
            events = self._real.select(timeout)
            clock._now += time.monotonic() - started
            return events
        events = self._real.select(0)
        if not events and clock.io_wait and self._watches_real_io():
            events = self._real.select(min(clock.io_wait, timeout))
        if events:
            return events
        # Nothing to do until the next timer: go there now.
        clock._now += timeout
        clock.skipped += timeout
        return []


class _OrderedTimerHandle(asyncio.TimerHandle):
    """A timer that, due at the same time as another, fires in the order scheduled.

    asyncio's timers compare by deadline alone, and its heap does not keep
    equal deadlines in order. On a real clock two ``call_later(1, ...)``
    differ by the time between the calls; on a virtual one they are equal,
    so the order they were scheduled in has to be kept explicitly.
    """

    __slots__ = ("_sequence",)

    def __init__(self, sequence: int, when: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(when, *args, **kwargs)
        self._sequence = sequence

    def _key(self) -> tuple[float, int]:
        return self.when(), self._sequence

    def __lt__(self, other: asyncio.TimerHandle) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() < other._key()
        return super().__lt__(other)

    def __le__(self, other: asyncio.TimerHandle) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() <= other._key()
        return super().__le__(other)

    def __gt__(self, other: asyncio.TimerHandle) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() > other._key()
        return super().__gt__(other)

    def __ge__(self, other: asyncio.TimerHandle) -> bool:
        if isinstance(other, _OrderedTimerHandle):
            return self._key() >= other._key()
        return super().__ge__(other)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever it would sleep.

    ``start`` is the clock's first reading. ``io_wait`` is how many real
    seconds to wait for I/O on real sockets before jumping (default 0: only
    what is ready at once). ``skipped`` is the total of virtual seconds the
    clock jumped over instead of sleeping.
    """

    def __init__(self, *, start: float = 0.0, io_wait: float = 0.0) -> None:
        self._now = float(start)
        self._threads = 0
        self._sequence = itertools.count()
        self.io_wait = io_wait
        self.skipped = 0.0
        selector = _VirtualSelector(self)
        super().__init__(selector)
        selector.internal = frozenset(key.fd for key in selector.get_map().values())

    def time(self) -> float:
        """The virtual time: it moves when the loop jumps to a timer or waits for a thread."""
        return self._now

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Schedule ``callback`` at virtual time ``when``; equal times run in scheduling order."""
        # BaseEventLoop.call_at, with a timer that keeps ties in order.
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]
        if self.get_debug():
            self._check_thread()  # type: ignore[attr-defined]
            self._check_callback(callback, "call_at")  # type: ignore[attr-defined]
        timer = _OrderedTimerHandle(next(self._sequence), when, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """Run ``func`` in a thread, and keep the clock from jumping while it runs."""
        future = super().run_in_executor(executor, func, *args)
        self._threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._threads -= 1

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        # The executor's threads are joined by a thread of its own: real work.
        self._threads += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._threads -= 1


class VirtualClockPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose new loops are :class:`VirtualClockLoop`.

    For tools that take a policy, such as pytest-asyncio's
    ``event_loop_policy`` fixture.
    """

    def __init__(self, *, start: float = 0.0, io_wait: float = 0.0) -> None:
        super().__init__()
        self._options = {"start": start, "io_wait": io_wait}

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A fresh :class:`VirtualClockLoop`."""
        return VirtualClockLoop(**self._options)


def run_virtual(
    main: Coroutine[Any, Any, T],
    *,
    start: float = 0.0,
    io_wait: float = 0.0,
    debug: bool | None = None,
) -> T:
    """Like ``asyncio.run(main)``, on a :class:`VirtualClockLoop`."""
    with asyncio.Runner(
        debug=debug, loop_factory=lambda: VirtualClockLoop(start=start, io_wait=io_wait)
    ) as runner:
        return runner.run(main)
