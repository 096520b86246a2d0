"""What every transport's dispatch shares: plain replies told from awaitables, subjects named."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import types
from collections.abc import Callable
from typing import Any

from framework.core.errors import WirekitError

__all__ = ["PLAIN_REPLIES", "describe", "guard_hook", "loop_clock", "needs_await"]

log = logging.getLogger("wirekit.connection")


# Reply types seen not to be awaitable: inspect.isawaitable costs more than
# the rest of a reply's dispatch, so ask once per type, not once per reply.
PLAIN_REPLIES: set[type] = set()


def needs_await(result: Any) -> bool:
    """Whether a handler's result must be awaited (remembers the plain types it sees)."""
    if inspect.isawaitable(result):
        return True
    # Generators can become awaitable (types.coroutine): never cache them.
    if not isinstance(result, types.GeneratorType):
        PLAIN_REPLIES.add(type(result))
    return False


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or what it calls when that is asyncio's own (one frame less per read)."""
    # The bound method, not the class's: a loop whose time() is replaced on
    # the instance (a test's clock) keeps its own.
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def describe(subject: Any) -> str:
    """How a log line names what a handler was given: a value's class, or the fallback's error."""
    if isinstance(subject, WirekitError):
        return f"fallback ({type(subject).__name__})"
    return type(subject).__qualname__


async def guard_hook(awaitable: Any, conn: Any, hook: Any) -> None:
    """Await an async connect or disconnect hook; log what it raises."""
    try:
        await awaitable
    except Exception:
        log.exception("%r: hook %s raised", conn, getattr(hook, "__name__", hook))
