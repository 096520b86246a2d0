"""wirekit: build a network protocol from a transport, a framing and a codec stack.

The names below are the public API; everything in a module whose name starts
with an underscore is private. The core (framing, codecs, messages, pipeline,
errors) is sans-I/O: it turns bytes into values and back, and never touches a
socket or an event loop.
"""

from __future__ import annotations

from framework.codecs import (
    BytesCodec,
    Codec,
    JsonCodec,
    MsgpackCodec,
    Utf8Codec,
    codec_names,
    make_codec,
    register_codec,
)
from framework.errors import (
    CodecError,
    ConfigError,
    DecodeError,
    EncodeError,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    InvalidFrame,
    InvalidMessage,
    MessageError,
    TransportError,
    UnknownMessageType,
    WirekitError,
)
from framework.framing import (
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
from framework.messages import TYPE_KEY, MessageRegistry, message, message_type_name
from framework.pipeline import Decoder, Pipeline

__version__ = "0.1.0"

__all__ = [
    "TYPE_KEY",
    "BytesCodec",
    "Codec",
    "CodecError",
    "ConfigError",
    "Datagram",
    "DecodeError",
    "Decoder",
    "Delimited",
    "EncodeError",
    "FrameDecoder",
    "FrameTooLarge",
    "Framing",
    "FramingError",
    "IncompleteFrame",
    "InvalidFrame",
    "InvalidMessage",
    "JsonCodec",
    "LengthPrefix",
    "MessageError",
    "MessageRegistry",
    "MsgpackCodec",
    "MsgpackStream",
    "Pipeline",
    "TransportError",
    "UnknownMessageType",
    "Utf8Codec",
    "WirekitError",
    "codec_names",
    "framing_names",
    "make_codec",
    "make_framing",
    "message",
    "message_type_name",
    "register_codec",
    "register_framing",
]
