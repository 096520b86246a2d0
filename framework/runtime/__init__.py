"""The asyncio runtime: connections, servers, clients. The I/O half of wirekit."""

from __future__ import annotations

from framework.core.datagrams import DatagramStats
from framework.runtime.client import connect
from framework.runtime.connection import Connection, ConnectionClosed, ConnectionStats
from framework.runtime.reconnect import Backoff, ReconnectingClient, ReconnectStats, SendQueueFull
from framework.runtime.server import Server, start_server
from framework.runtime.stream import StreamConnection
from framework.runtime.tls import TlsOptions

__all__ = [
    "Backoff",
    "Connection",
    "ConnectionClosed",
    "ConnectionStats",
    "DatagramStats",
    "ReconnectStats",
    "ReconnectingClient",
    "SendQueueFull",
    "Server",
    "StreamConnection",
    "TlsOptions",
    "connect",
    "start_server",
]
