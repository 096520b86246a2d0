"""Every error wirekit raises, under one root.

::

    WirekitError
    ├── ConfigError (also ValueError)      our caller's mistake: a bad option or name
    ├── FramingError                       the byte stream cannot be cut into frames
    │   ├── FrameTooLarge                  a frame over ``max_frame_size``
    │   ├── IncompleteFrame                the stream ended inside a frame
    │   ├── InvalidFrame                   a header or delimiter that makes no sense
    │   └── AuthenticationError            a datagram that fails its authentication tag
    │       └── ReplayedDatagram           an authentic datagram seen before, or too old
    ├── CodecError                         a frame cannot become a value, or back
    │   ├── DecodeError                    bad bytes from the peer
    │   └── EncodeError                    a value we were asked to send cannot be encoded
    ├── MessageError (also DecodeError)    a decoded value is not a valid typed message
    │   ├── UnknownMessageType             its ``"type"`` names no registered class
    │   └── InvalidMessage                 a field is missing, extra or of the wrong type
    ├── TransportError                     the bytes could not be moved
    │   ├── ConnectionClosed               send or receive on a connection that has ended
    │   ├── FrameTimeout                   a peer took too long to finish a frame
    │   └── SendQueueFull                  a reconnecting client's queue is full while it is down
    └── WorkerError                        a worker process could not start, or kept dying

The errors a peer's bytes cause while decoding, ``FramingError`` and
``DecodeError``, carry ``decoded``: the values (or frames) that were complete
before the error in the same ``feed`` call (no other error has it). Nothing a peer sent before
its bad bytes is lost; see :class:`framework.core.pipeline.Decoder`.

The split between ``DecodeError`` (the peer's fault) and ``EncodeError``
(ours) mirrors whose fault a failure is: a server closes or skips the offending
peer on the first, and reports a bug on the second.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "CodecError",
    "ConfigError",
    "ConnectionClosed",
    "DecodeError",
    "EncodeError",
    "FrameTimeout",
    "FrameTooLarge",
    "FramingError",
    "IncompleteFrame",
    "InvalidFrame",
    "InvalidMessage",
    "MessageError",
    "ReplayedDatagram",
    "SendQueueFull",
    "TransportError",
    "UnknownMessageType",
    "WirekitError",
    "WorkerError",
]


class WirekitError(Exception):
    """Root of every error wirekit raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(WirekitError, ValueError):
    """A configuration value is wrong: names the option and the value."""

    def __init__(self, message: str, *, option: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.option = option
        self.value = value


class FramingError(WirekitError):
    """The byte stream cannot be split into frames.

    ``offset`` is the stream offset (bytes fed since the decoder was created)
    where the problem starts, when it is known. ``recoverable`` is true when
    the decoder has skipped the bad bytes and can go on (an over-long line
    with ``Delimited(on_oversize="skip")``); otherwise the stream is over.
    """

    #: Values or frames completed before this error in the same ``feed`` call.
    decoded: list[Any]

    def __init__(
        self, message: str, *, offset: int | None = None, recoverable: bool = False
    ) -> None:
        super().__init__(message)
        self.offset = offset
        self.recoverable = recoverable
        self.decoded = []


class FrameTooLarge(FramingError):
    """A frame is larger than the configured limit.

    On decode it is raised as soon as the size is known (from a length header,
    or while scanning for a delimiter), before the payload is buffered.
    ``size`` is the announced size, or a lower bound when scanning.
    """

    def __init__(self, message: str, *, size: int, limit: int, offset: int | None = None) -> None:
        super().__init__(message, offset=offset)
        self.size = size
        self.limit = limit


class IncompleteFrame(FramingError):
    """The stream (or datagram) ended in the middle of a frame."""

    def __init__(
        self, message: str, *, buffered: int, expected: int | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message, offset=offset)
        self.buffered = buffered
        self.expected = expected


class InvalidFrame(FramingError):
    """A frame is malformed: an impossible length, a delimiter inside a payload."""


class AuthenticationError(FramingError):
    """A datagram is not authentic: a bad tag, an unknown key id, or too short.

    Raised before any of its payload is decoded. ``key_id`` names the key the
    datagram claimed, when it got that far.
    """

    def __init__(
        self, message: str, *, key_id: int | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message, offset=offset)
        self.key_id = key_id


class ReplayedDatagram(AuthenticationError):
    """An authentic datagram whose sequence number was seen before or is too old.

    ``sequence`` is its number; the anti-replay window could not accept it.
    """

    def __init__(self, message: str, *, key_id: int, sequence: int) -> None:
        super().__init__(message, key_id=key_id)
        self.sequence = sequence


class CodecError(WirekitError):
    """A codec failed; ``codec`` names it."""

    def __init__(self, message: str, *, codec: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.codec = codec
        self.offset = offset


class DecodeError(CodecError):
    """A frame from the peer cannot be decoded. ``offset`` is within the frame."""

    #: Values completed before this error in the same ``feed`` call.
    decoded: list[Any]

    def __init__(self, message: str, *, codec: str, offset: int | None = None) -> None:
        super().__init__(message, codec=codec, offset=offset)
        self.decoded = []


class EncodeError(CodecError):
    """A value cannot be encoded: a local error, not the peer's."""


class MessageError(DecodeError):
    """A decoded value is not a valid typed message.

    ``value`` is the decoded envelope (usually a dict), so a fallback handler
    can still look at what the peer sent.
    """

    def __init__(self, message: str, *, type_name: str | None = None, value: Any = None) -> None:
        super().__init__(message, codec="messages")
        self.type_name = type_name
        self.value = value


class UnknownMessageType(MessageError):
    """The envelope's ``"type"`` names no registered message class."""


class InvalidMessage(MessageError):
    """A message's fields do not match its class.

    ``field`` is a dotted path (``"waypoints[2].x"``); ``expected`` and
    ``actual`` name the types when the problem is a type mismatch.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str | None = None,
        value: Any = None,
        field: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message, type_name=type_name, value=value)
        self.field = field
        self.expected = expected
        self.actual = actual


class TransportError(WirekitError):
    """Bytes could not be moved: ``peer`` names the other end when known."""

    def __init__(self, message: str, *, peer: Any = None) -> None:
        super().__init__(message)
        self.peer = peer


class ConnectionClosed(TransportError):
    """The connection is closed: ``receive`` has nothing more, ``send`` cannot send.

    When an error ended the connection (bad input, a reset), it is the
    ``__cause__``. Over a WebSocket, ``code`` and ``reason`` are those of the
    close frame the peer sent (1006 and ``""`` when it sent none); elsewhere
    they are ``None`` and ``""``.
    """

    def __init__(
        self, message: str, *, peer: Any = None, code: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(message, peer=peer)
        self.code = code
        self.reason = reason


class FrameTimeout(TransportError):
    """A peer started a frame and did not finish it within ``Limits.frame_timeout``.

    ``buffered`` is how many bytes of the unfinished frame it had sent.
    """

    def __init__(self, message: str, *, buffered: int, peer: Any = None) -> None:
        super().__init__(message, peer=peer)
        self.buffered = buffered


class SendQueueFull(TransportError):
    """``send`` on a reconnecting client that is down, with ``max_pending`` values waiting."""


class WorkerError(WirekitError):
    """A worker process failed: it could not start, crashed in a loop, or would not stop."""
