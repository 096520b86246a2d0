"""How many bytes a stream transport still holds for its peer, and from it, kernel included.

A graceful close has to wait only while the peer has something left to
receive. ``transport.get_write_buffer_size()`` counts what asyncio has not
handed to the kernel yet; bytes the kernel has taken but the peer has not
acknowledged count too (TCP; a Unix socket hands them straight to the
peer's receive queue). And closing a
socket with unread input resets the connection, which throws away what is
still on its way to the peer. Linux reports both counts (the ``SIOCOUTQ`` and
``SIOCINQ`` ioctls); elsewhere they are unknown, and callers assume the
worst: replies in flight.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable

__all__ = ["queued_for_peer", "unread_from_peer", "when_delivered"]

# when_delivered's polling: a peer that is keeping up is seen within a few
# milliseconds; one that reads slowly costs at most two checks a second.
_FIRST_CHECK = 0.01
_LAST_CHECK = 0.5

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    # SIOCOUTQ and SIOCINQ are TIOCOUTQ and FIONREAD under other names.
    _OUTQ: int | None = termios.TIOCOUTQ
    _INQ: int | None = termios.FIONREAD
else:  # pragma: no cover - only Linux runs the suite
    _OUTQ = _INQ = None


def _ask_kernel(transport: asyncio.BaseTransport, request: int | None) -> int | None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0  # an in-process transport: no kernel buffer in between
    if request is None:
        return None  # pragma: no cover - only Linux runs the suite
    try:
        answer = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    except (OSError, ValueError):
        return None  # closed meanwhile, or a socket kind the ioctl does not know
    count: int = struct.unpack("i", answer)[0]
    return count


def queued_for_peer(transport: asyncio.WriteTransport) -> int | None:
    """Bytes written to ``transport`` that the peer has not taken yet; ``None`` if unknown."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
        # A Unix socket puts what is sent straight into the peer's receive
        # queue (SIOCOUTQ counts it until the peer reads it): it has it.
        return transport.get_write_buffer_size()
    kernel = _ask_kernel(transport, _OUTQ)
    return None if kernel is None else transport.get_write_buffer_size() + kernel


def unread_from_peer(transport: asyncio.BaseTransport) -> int | None:
    """Bytes the peer sent that wait in the kernel for a read; ``None`` if unknown."""
    return _ask_kernel(transport, _INQ)


def when_delivered(
    transport: asyncio.WriteTransport, callback: Callable[[], None], *, quiet: Callable[[], bool]
) -> None:
    """Call ``callback()`` once the peer has taken every byte written to ``transport``.

    The kernel tells no one when the peer acknowledges the last byte, so this
    asks it now, then after 10 ms, doubling up to half a second. It gives
    up when the transport closes, when a count is unknown, or as soon as the
    peer speaks (``quiet()`` is false, or input waits for a read): a peer
    that still sends is alive and will close its side itself, and closing
    ours first would answer its next bytes with a reset that can cost it
    replies it has received but not read yet.
    """
    loop = asyncio.get_running_loop()
    delay = _FIRST_CHECK

    def check() -> None:
        nonlocal delay
        # Input waiting for a read is the peer speaking too.
        if transport.is_closing() or not quiet() or unread_from_peer(transport) != 0:
            return
        queued = queued_for_peer(transport)
        if queued is None:
            return
        if queued == 0:
            callback()
            return
        loop.call_later(delay, check)
        delay = min(delay * 2, _LAST_CHECK)

    check()
