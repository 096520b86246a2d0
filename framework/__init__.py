"""wirekit: build a network protocol from a transport, a framing and a codec stack.

The names below are the public API; everything in a module whose name starts
with an underscore is private. The core (framing, codecs, messages, pipeline,
errors) is sans-I/O: it turns bytes into values and back, and never touches a
socket or an event loop. The runtime names (``App``, ``connect``, ``Server``
and the rest that do I/O) load on first use, so ``import framework`` alone
never imports asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framework.core.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    Utf8Codec,
    codec_names,
    make_codec,
    register_codec,
)
from framework.core.datagrams import DatagramStats
from framework.core.endpoints import Endpoint, parse_url
from framework.core.errors import (
    AuthenticationError,
    CodecError,
    ConfigError,
    ConnectionClosed,
    DecodeError,
    EncodeError,
    FrameTimeout,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    InvalidMessage,
    MessageError,
    ReplayedDatagram,
    SendQueueFull,
    TransportError,
    UnknownMessageType,
    WirekitError,
    WorkerError,
)
from framework.core.framing import (
    Datagram,
    Delimited,
    FrameDecoder,
    Framing,
    LengthPrefix,
    MsgpackStream,
    framing_names,
    make_framing,
    register_framing,
)
from framework.core.groups import GroupMember, GroupStats
from framework.core.limits import Limits
from framework.core.messages import TYPE_KEY, MessageRegistry, message, message_type_name
from framework.core.pipeline import Decoder, Pipeline
from framework.core.ratelimit import TokenBucket
from framework.core.router import Router
from framework.core.security import AuthResponder, AuthSession, HmacAuth, ReplayWindow
from framework.core.websocket import WebSocketOptions

if TYPE_CHECKING:
    from framework.cli.config import Config, load_config, load_protocol
    from framework.runtime import (
        Backoff,
        Connection,
        ConnectionStats,
        ReconnectingClient,
        ReconnectStats,
        Server,
        connect,
    )
    from framework.runtime.app import App
    from framework.runtime.backplane import Backplane, BackplaneStats
    from framework.runtime.blocking import BlockingClient, ServerThread
    from framework.runtime.groups import Groups
    from framework.runtime.metrics_http import MetricsCollector, MetricsEndpoint, serve_metrics
    from framework.runtime.tls import TlsOptions

# Runtime names, imported on first access (PEP 562) to keep the core I/O-free.
_LAZY = {
    "App": "framework.runtime.app",
    "Backoff": "framework.runtime",
    "Backplane": "framework.runtime.backplane",
    "BackplaneStats": "framework.runtime.backplane",
    "BlockingClient": "framework.runtime.blocking",
    "Config": "framework.cli.config",
    "Connection": "framework.runtime",
    "MetricsCollector": "framework.runtime.metrics_http",
    "MetricsEndpoint": "framework.runtime.metrics_http",
    "ConnectionStats": "framework.runtime",
    "Groups": "framework.runtime.groups",
    "ReconnectStats": "framework.runtime",
    "ReconnectingClient": "framework.runtime",
    "Server": "framework.runtime",
    "ServerThread": "framework.runtime.blocking",
    "TlsOptions": "framework.runtime.tls",
    "connect": "framework.runtime",
    "load_config": "framework.cli.config",
    "load_protocol": "framework.cli.config",
    "serve_metrics": "framework.runtime.metrics_http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framework' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "TYPE_KEY",
    "App",
    "AuthResponder",
    "AuthSession",
    "AuthenticationError",
    "Backoff",
    "Backplane",
    "BackplaneStats",
    "BlockingClient",
    "BytesCodec",
    "Codec",
    "CodecError",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionStats",
    "Datagram",
    "DatagramStats",
    "DecodeError",
    "Decoder",
    "Delimited",
    "EncodeError",
    "Endpoint",
    "FrameDecoder",
    "FrameTimeout",
    "FrameTooLarge",
    "Framing",
    "FramingError",
    "GroupMember",
    "GroupStats",
    "Groups",
    "HmacAuth",
    "IncompleteFrame",
    "InvalidFrame",
    "InvalidMessage",
    "JsonCodec",
    "LengthPrefix",
    "Limits",
    "MessageError",
    "MessageRegistry",
    "MetricsCollector",
    "MetricsEndpoint",
    "MsgpackCodec",
    "MsgpackStream",
    "Pipeline",
    "ReconnectStats",
    "ReconnectingClient",
    "ReplayWindow",
    "ReplayedDatagram",
    "Router",
    "SendQueueFull",
    "Server",
    "ServerThread",
    "TlsOptions",
    "TokenBucket",
    "TransportError",
    "UnknownMessageType",
    "Utf8Codec",
    "WebSocketOptions",
    "WirekitError",
    "WorkerError",
    "codec_names",
    "connect",
    "framing_names",
    "load_config",
    "load_protocol",
    "make_codec",
    "make_framing",
    "message",
    "message_type_name",
    "parse_url",
    "register_codec",
    "register_framing",
    "serve_metrics",
]
