"""What crosses the backplane between nodes: envelopes, channel names, values.

No I/O: bytes in, bytes out. Every payload a node hands its backplane is one
envelope::

    0     2     3      4          8                  16     17          17+n
    +-----+-----+------+----------+------------------+------+-----------+--------
    | "wk"| ver | kind |  stream  |       seq        | nlen |   node    | body ...
    +-----+-----+------+----------+------------------+------+-----------+--------
                        uint32 BE  uint64 BE          uint8  ASCII       msgpack

- ``node`` names the sending node (a fresh random id each time a node
  starts), so a node drops its own echoes without decoding the body.
- ``stream`` and ``seq`` number what one node sends on one channel: ``seq``
  goes up by one per envelope, so a receiver checks per-publisher order and
  counts a gap as dropped. A sender that starts numbering a channel again
  (after it forgot it) takes a new ``stream``, and receivers start afresh.
- ``kind`` says what the body is: a published value (:attr:`Kind.VALUE`, a
  msgpack value; :attr:`Kind.MESSAGE`, a typed message's envelope map, made
  and read by the app's :class:`~framework.core.messages.MessageRegistry` so
  it arrives as the same class), or presence: a member joined (``[id,
  data]``) or left (``id``), a node's whole membership of the group
  (``[[id, data], ...]``), or a new node asking for everyone's (``nil``).

Values cross nodes in this neutral encoding, not in any member's wire
format: each member's own pipeline encodes the value for its own wire.
"""

from __future__ import annotations

import enum
import re
import struct
from typing import Any

import attrs
import msgpack

from framework.core.codecs.msgpack_codec import MsgpackCodec
from framework.core.errors import ConfigError, DecodeError, EncodeError
from framework.core.messages import MessageRegistry

__all__ = [
    "MAGIC",
    "VERSION",
    "Envelope",
    "Kind",
    "channel_name",
    "check_node",
    "decode_body",
    "decode_envelope",
    "decode_value",
    "encode_body",
    "encode_envelope",
    "encode_value",
    "peek_node",
]

MAGIC = b"wk"
VERSION = 1
_HEADER = struct.Struct(">2sBBIQB")
_NODE = re.compile(r"[!-~]{1,255}")
# The channel-safe characters kept as they are; every other byte of a group
# name's UTF-8 becomes "=XX". Redis takes any bytes, NATS subjects no
# spaces, dots or wildcards: this suits both and maps names one to one.
_SAFE = re.compile(r"[A-Za-z0-9_-]")
# Values from the broker are decoded with limits: another app's garbage on
# the channel must not cost more than its own size.
_BODY_CODEC = MsgpackCodec()


class Kind(enum.IntEnum):
    """What an envelope carries."""

    VALUE = 1  #: a published value, msgpack
    MESSAGE = 2  #: a published typed message, as its registry's envelope map
    JOIN = 3  #: ``[member id, data]``: a member joined, or changed its data
    LEAVE = 4  #: ``member id``: a member left
    SNAPSHOT = 5  #: ``[[member id, data], ...]``: all the sender's members of the group
    HELLO = 6  #: ``nil``: a node subscribed; the others answer with a SNAPSHOT


_KINDS = {kind.value: kind for kind in Kind}


@attrs.frozen
class Envelope:
    """One backplane payload, decoded (``body`` is still msgpack bytes)."""

    kind: Kind
    node: str
    stream: int
    seq: int
    body: bytes = b""


def channel_name(namespace: str, group: str) -> str:
    """The backplane channel of ``group``: ``wirekit.<namespace>.<group>``, escaped.

    Characters other than letters, digits, ``_`` and ``-`` become ``=XX``
    (their UTF-8 bytes in hex), so any group name is a valid Redis channel
    and NATS subject, and two names never share a channel.
    """
    return f"wirekit.{_escape(namespace)}.{_escape(group)}"


def _escape(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a group or namespace name is a non-empty str, got {name!r}")
    return "".join(
        char if _SAFE.fullmatch(char) else "".join(f"={b:02X}" for b in char.encode("utf-8"))
        for char in name
    )


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope's bytes (see the module's diagram)."""
    node = envelope.node.encode("ascii")
    header = _HEADER.pack(MAGIC, VERSION, envelope.kind, envelope.stream, envelope.seq, len(node))
    return header + node + envelope.body


def check_node(node: str) -> None:
    """Raise :class:`ConfigError` unless ``node`` can name a node in an envelope."""
    if not _NODE.fullmatch(node):
        raise ConfigError(f"a node id is 1-255 printable ASCII characters, got {node!r}")


def peek_node(payload: bytes) -> str | None:
    """The sending node of an envelope, or ``None`` if it is not one (cheap: no body)."""
    if len(payload) < _HEADER.size or payload[:2] != MAGIC:
        return None
    size = payload[_HEADER.size - 1]
    node = payload[_HEADER.size : _HEADER.size + size]
    if len(node) != size:
        return None
    return node.decode("ascii", "replace")


def decode_envelope(payload: bytes) -> Envelope:
    """Parse an envelope; ``DecodeError`` says what is wrong with one that is not."""
    if len(payload) < _HEADER.size:
        raise DecodeError(
            f"a backplane envelope is at least {_HEADER.size} bytes, got {len(payload)}",
            codec="envelope",
        )
    magic, version, kind, stream, seq, size = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise DecodeError(f"not a wirekit envelope (starts {magic!r})", codec="envelope")
    if version != VERSION:
        raise DecodeError(
            f"envelope version {version}: this node reads version {VERSION}", codec="envelope"
        )
    if kind not in _KINDS:
        raise DecodeError(f"unknown envelope kind {kind}", codec="envelope", offset=3)
    end = _HEADER.size + size
    raw = payload[_HEADER.size : end]
    if len(raw) != size:
        raise DecodeError("envelope cut inside its node id", codec="envelope")
    try:
        node = raw.decode("ascii")
        check_node(node)
    except (UnicodeDecodeError, ConfigError):
        raise DecodeError(f"bad node id {raw!r}", codec="envelope", offset=16) from None
    return Envelope(_KINDS[kind], node, stream, seq, bytes(payload[end:]))


def encode_body(value: Any) -> bytes:
    """msgpack of a presence body or a plain value; ``EncodeError`` names what cannot cross."""
    try:
        return _BODY_CODEC.encode(value)
    except EncodeError as exc:
        raise EncodeError(
            f"{type(value).__qualname__} cannot cross to other nodes: values and member data "
            "travel as msgpack (str, bytes, numbers, bool, None, lists, dicts) "
            f"or as a message the app's pipeline registers ({exc})",
            codec="envelope",
        ) from exc


def decode_body(body: bytes) -> Any:
    """A body's msgpack value (``DecodeError`` if it is not one)."""
    try:
        # Map keys of any msgpack type that can key a dict: what a node
        # published ({1: "a"}) arrives as it left.
        value = msgpack.unpackb(body, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.StackError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DecodeError(f"invalid msgpack in an envelope: {reason}", codec="envelope") from None
    return value


def encode_value(value: Any, messages: MessageRegistry | None) -> tuple[Kind, bytes]:
    """The kind and body of a published value: a registered message stays typed."""
    if messages is not None and type(value) in messages:
        return Kind.MESSAGE, encode_body(messages.encode(value))
    return Kind.VALUE, encode_body(value)


def decode_value(kind: Kind, body: bytes, messages: MessageRegistry | None) -> Any:
    """The published value again; a message needs its class registered on this node too."""
    value = decode_body(body)
    if kind is Kind.VALUE:
        return value
    if messages is None:
        raise DecodeError(
            "a typed message arrived, but this node's pipeline registers no messages",
            codec="envelope",
        )
    return messages.decode(value)
