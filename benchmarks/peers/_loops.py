"""The event loop a peer script runs on: asyncio's default, or uvloop.

Shared by the scripts in this folder (each is run as a script, so this
folder is on ``sys.path``). Exit status 3 means uvloop is not installed: the
benchmark then skips that server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

EXIT_NOT_INSTALLED = 3


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when asked for (exit 3 if not installed), else ``None``."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        raise SystemExit(EXIT_NOT_INSTALLED) from None
    return uvloop.new_event_loop


def run_on_loop(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> None:
    """Run ``coro`` on asyncio's default loop or on uvloop."""
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        runner.run(coro)
