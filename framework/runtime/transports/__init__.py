"""Transports: thin adapters that move bytes. They know nothing of frames.

Each scheme (``tcp``, ``tls``, ``unix``, ``udp``, and the in-process
``memory`` and ``memory+udp``) opens a listening or connected asyncio
transport for a protocol factory and reports the address it actually bound.
Everything above bytes happens in :mod:`framework.runtime`.
"""

from __future__ import annotations

from framework.runtime.transports.base import (
    DatagramFactory,
    StreamFactory,
    StreamListener,
    open_datagram,
    open_stream,
    serve_datagrams,
    serve_stream,
)
from framework.runtime.transports.memory import (
    MemoryDatagramTransport,
    MemoryTransport,
    memory_pair,
)

__all__ = [
    "DatagramFactory",
    "MemoryDatagramTransport",
    "MemoryTransport",
    "StreamFactory",
    "StreamListener",
    "memory_pair",
    "open_datagram",
    "open_stream",
    "serve_datagrams",
    "serve_stream",
]
