"""The player's side of the join handshake."""

from __future__ import annotations

import asyncio

from framework import Connection, TransportError
from protocols.game.messages import NO_COOKIE, Challenge, Join, Welcome

__all__ = ["join"]


async def join(conn: Connection, *, timeout: float = 5.0, retry_after: float = 0.2) -> int:
    """Join the relay over ``conn``; return this player's number.

    Sends ``Join``, echoes the relay's ``Challenge`` cookie, and waits for
    ``Welcome``. Over UDP any of these may be lost, so an unanswered join
    is sent again after ``retry_after`` seconds, doubling up to a second.
    Raises :class:`~framework.TransportError` if no welcome comes within
    ``timeout`` seconds. Other values received meanwhile are dropped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cookie = NO_COOKIE
    wait = retry_after
    while (left := deadline - loop.time()) > 0:
        await conn.send(Join(cookie))
        reply = await _handshake_reply(conn, min(wait, left))
        if isinstance(reply, Welcome):
            return reply.player
        if isinstance(reply, Challenge):
            cookie = reply.cookie  # answer it at once
            wait = retry_after
        else:
            wait = min(wait * 2, 1.0)
    raise TransportError(
        f"no welcome from the relay at {conn.peer} within {timeout} s", peer=conn.peer
    )


async def _handshake_reply(conn: Connection, timeout: float) -> Challenge | Welcome | None:
    """The next challenge or welcome within ``timeout`` seconds, or ``None``."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while (left := until - loop.time()) > 0:
        try:
            reply = await asyncio.wait_for(conn.receive(), left)
        except TimeoutError:
            return None
        if isinstance(reply, Challenge | Welcome):
            return reply
    return None
