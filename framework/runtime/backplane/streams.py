"""The brokers' sockets: the one place wirekit reads redis-py's and nats-py's private attributes.

Both backplanes write a publish straight to the broker's socket while
nothing is waiting to go before it (``direct_limit``), so that a value
reaches the other nodes before this node serves its own members. Neither
library hands out its stream: redis-py keeps it in ``Connection._writer``,
nats-py in ``Client._transport._io_writer``. These two functions are the
only code that reads those attributes. When a library changes them they
return ``None`` and every publish goes through the backplane's queue
(correct, a little later); ``tests/runtime/test_backplane_streams.py``
fails then, with real brokers, so an upgrade cannot lose the fast path
unnoticed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # each backplane needs only its own library installed
    from nats.aio.client import Client
    from redis.asyncio.connection import Connection

__all__ = ["nats_stream", "redis_stream"]


def redis_stream(conn: Connection) -> asyncio.StreamWriter | None:
    """The stream of a connected redis-py ``Connection``, or ``None`` if it cannot be found."""
    writer = getattr(conn, "_writer", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None


def nats_stream(client: Client) -> asyncio.StreamWriter | None:
    """The stream of a connected nats-py ``Client`` (TCP), or ``None`` if it cannot be found."""
    writer = getattr(getattr(client, "_transport", None), "_io_writer", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None
