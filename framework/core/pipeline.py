"""Pipelines: a framing, a codec stack and (optionally) typed messages.

A :class:`Pipeline` is an immutable description; :meth:`Pipeline.decoder`
creates the per-connection state, so one pipeline serves any number of
connections. Decoding runs the codec stack front to back (the first codec is
nearest the wire), encoding back to front: that ordering lives here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from framework.core._fast import (
    DecodePath,
    Parts,
    choose_decode,
    choose_encode_many,
    plain_header,
    text_join,
)
from framework.core._fast.raw import datagram_decoder, datagram_encoder
from framework.core.codecs import BytesCodec, Codec, JsonCodec, MsgpackCodec, Utf8Codec, make_codec
from framework.core.errors import (
    CodecError,
    ConfigError,
    DecodeError,
    EncodeError,
    FramingError,
    WirekitError,
)
from framework.core.framing import (
    Buffer,
    Datagram,
    FrameDecoder,
    Framing,
    LengthPrefix,
    make_framing,
)
from framework.core.messages import MessageRegistry

__all__ = ["Decoder", "Encoder", "Pipeline"]


def _to_framing(value: Framing | str) -> Framing:
    return make_framing(value) if isinstance(value, str) else value


def _to_codecs(value: Codec | str | Iterable[Codec | str]) -> tuple[Codec, ...]:
    items = [value] if isinstance(value, Codec | str) else list(value)
    return tuple(make_codec(item) if isinstance(item, str) else item for item in items)


def _to_messages(value: MessageRegistry | Iterable[type] | None) -> MessageRegistry | None:
    if value is None or isinstance(value, MessageRegistry):
        return value
    return MessageRegistry(value)


def _check_framing(_instance: Any, _attribute: Any, value: Any) -> None:
    if not isinstance(value, Framing):
        raise ConfigError(f"framing must be a Framing or a name, got {value!r}", option="framing")


def _check_codecs(_instance: Any, _attribute: Any, value: tuple[Any, ...]) -> None:
    for codec in value:
        if not isinstance(codec, Codec):
            raise ConfigError(f"codecs must be Codecs or names, got {codec!r}", option="codecs")


def _check_datagram(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Datagram):
        raise ConfigError(
            f"datagram must be a Datagram framing or None, got {value!r}", option="datagram"
        )


def _guarded(
    codec: Codec, method: Callable[[Any], Any], error: type[CodecError]
) -> Callable[[Any], Any]:
    """Wrap a codec method so a bug that raises a non-wirekit error is still a wirekit error."""

    def call(value: Any) -> Any:
        try:
            return method(value)
        except WirekitError:
            raise
        except Exception as exc:
            raise error(
                f"codec {codec.name!r} raised {type(exc).__name__}: {exc}", codec=codec.name
            ) from exc

    return call


def _compose(stages: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    if not stages:
        return lambda value: value
    if len(stages) == 1:
        return stages[0]
    if len(stages) == 2:
        first, second = stages
        return lambda value: second(first(value))

    def run(value: Any) -> Any:
        for stage in stages:
            value = stage(value)
        return value

    return run


# The encode methods that always return bytes (or raise EncodeError): a stack
# whose codec nearest the wire has one needs no check per frame.
_BYTES_WRITERS = frozenset(
    {BytesCodec.encode, Utf8Codec.encode, MsgpackCodec.encode, JsonCodec.encode}
)


def _is_builtin(codec: Codec) -> bool:
    # Built-in codecs only ever raise wirekit errors; skip the guard's cost for them.
    return type(codec).__module__.startswith("framework.")


@attrs.frozen(kw_only=True)
class Pipeline:
    """Framing + codec stack (+ message registry): bytes in, values out, and back.

    ``framing`` and each codec may be given by name (``"newline"``,
    ``"msgpack"``); ``messages`` may be a list of :func:`~framework.message`
    classes. ``datagram`` is how the pipeline meets datagrams: by default one
    datagram is one frame and the stream ``framing`` is not applied, so one
    pipeline serves TCP and UDP alike; ``Datagram(packed=True)`` cuts each
    datagram with the stream framing.
    """

    framing: Framing = attrs.field(
        factory=LengthPrefix, converter=_to_framing, validator=_check_framing
    )
    codecs: tuple[Codec, ...] = attrs.field(
        factory=lambda: (BytesCodec(),), converter=_to_codecs, validator=_check_codecs
    )
    messages: MessageRegistry | None = attrs.field(default=None, converter=_to_messages)
    datagram: Datagram | None = attrs.field(default=None, validator=_check_datagram)
    # The reference path and the speed-ups chosen for it (framework.core._fast).
    _parts: Parts = attrs.field(init=False, repr=False, eq=False)
    _path: DecodePath = attrs.field(init=False, repr=False, eq=False)
    _decode: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)
    _encode: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)
    # Hot-path facts worked out once: the datagram framing in force, and
    # whether the stack always writes bytes (no per-frame check).
    _datagram: Datagram = attrs.field(init=False, repr=False, eq=False)
    _writes_bytes: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.datagram is not None:
            datagram = self.datagram
        elif isinstance(self.framing, Datagram):
            datagram = self.framing
        else:
            datagram = Datagram()
        object.__setattr__(self, "_datagram", datagram)
        if self.datagram_framing.packed and not self.framing.streaming:
            raise ConfigError(
                "a packed datagram is cut by the stream framing, but framing "
                f"{self.framing.name!r} cannot cut a stream; choose length-prefix, newline "
                "or msgpack-stream",
                option="datagram",
                value=self.datagram_framing,
            )
        stack: list[Codec] = list(self.codecs)
        if self.messages is not None:
            stack.append(self.messages)
        decoders = [
            c.decode if _is_builtin(c) else _guarded(c, c.decode, DecodeError) for c in stack
        ]
        encoders = [
            c.encode if _is_builtin(c) else _guarded(c, c.encode, EncodeError)
            for c in reversed(stack)
        ]
        encode = _compose(encoders)
        object.__setattr__(self, "_encode", encode)
        wire = type(stack[0]).encode if stack else None
        object.__setattr__(self, "_writes_bytes", wire in _BYTES_WRITERS)
        parts = Parts(
            self.framing,
            self.codecs,
            self.messages,
            _compose(decoders),
            encode,
            self.encode_frame,
            self.encode_many,
        )
        object.__setattr__(self, "_parts", parts)
        path = choose_decode(parts)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_decode", path.decode)

    @property
    def passthrough(self) -> bool:
        """Whether a value is its frame's bytes: raw ``bytes`` codecs and no messages."""
        return self._parts.raw

    @property
    def writes_text(self) -> bool:
        """Whether every frame this stack encodes is UTF-8 text (its wire-side codec's ``text``).

        A WebSocket sends such frames as text messages, any other as binary.
        """
        return bool(self.codecs) and self.codecs[0].text

    @property
    def datagram_framing(self) -> Datagram:
        """How datagrams are cut: ``datagram`` if set, else the framing if it is
        a ``Datagram``, else one datagram per frame."""
        return self._datagram

    def decoder(self) -> Decoder:
        """Fresh per-connection decoding state for a byte stream."""
        if not self.framing.streaming:
            raise ConfigError(
                f"framing {self.framing.name!r} cannot cut a byte stream; use it with a "
                "datagram transport, or choose length-prefix, newline or msgpack-stream",
                option="framing",
                value=self.framing.name,
            )
        path = self._path
        return Decoder(
            self.framing.decoder(), path.decode, path.decode_many, path.name, path.value_class
        )

    def encoder(self) -> Encoder:
        """Fresh per-connection encoding state: reusable buffers for one owner.

        Encodes exactly as :meth:`encode_many`, faster; not for sharing
        between threads (connections each make their own).
        """
        return Encoder(self)

    def decode_frame(self, frame: Buffer) -> Any:
        """Decode one frame's payload through the codec stack (and messages)."""
        return self._decode(frame)

    def encode_frame(self, value: Any) -> bytes:
        """Encode a value into one frame's payload, without framing."""
        frame = self._encode(value)
        if type(frame) is not bytes:
            raise EncodeError(
                f"the codec stack produced {type(frame).__name__}, not bytes; end the stack "
                "with a codec that writes bytes (msgpack, json, utf-8, bytes)",
                codec=self.codecs[0].name if self.codecs else "none",
            )
        return frame

    def encode(self, value: Any) -> bytes:
        """Encode a value into wire bytes for a stream: payload plus framing."""
        return self.framing.encode(self.encode_frame(value))

    def encode_many(self, values: Iterable[Any]) -> bytes:
        """Encode several values into one buffer: one write for a batch of replies."""
        encode = self._encode if self._writes_bytes else self.encode_frame
        return self.framing.encode_many([encode(value) for value in values])

    def decode_datagram(self, data: Buffer) -> list[Any]:
        """Decode one datagram into its values (one, unless the datagram is packed).

        Raises ``FrameTooLarge`` for an oversize datagram, a ``DecodeError``
        for a bad payload, and, when packed, ``IncompleteFrame`` for a frame
        the datagram cuts short.
        """
        framing = self.datagram_framing
        framing.check_size(len(data))
        if not framing.packed:
            return [self._decode(data)]
        decoder = self.decoder()
        values = decoder.feed(data)
        try:
            values += decoder.end()
        except (FramingError, DecodeError) as exc:
            exc.decoded = values + exc.decoded
            raise
        return values

    def datagram_decoder(self) -> Callable[[Buffer], list[Any]]:
        """``decode_datagram``, specialised for this stack: what UDP servers call per datagram.

        Same values and errors; a stack of raw bytes returns the datagram
        itself, without a copy.
        """
        framing = self.datagram_framing
        if framing.packed:
            return self.decode_datagram
        return datagram_decoder(framing, self._decode, self._parts.raw)

    def datagram_encoder(self) -> Callable[[Any], bytes]:
        """``encode_datagram`` of one value, specialised for this stack: what UDP replies use."""
        framing = self.datagram_framing
        if framing.packed:
            return self.encode_datagram
        encode = self._encode if self._writes_bytes else self.encode_frame
        return datagram_encoder(framing, encode, self._parts.raw)

    def encode_datagram(self, *values: Any) -> bytes:
        """Encode one value (or, when packed, several) as one datagram."""
        framing = self.datagram_framing
        if framing.packed:
            data = self.encode_many(values)
        elif len(values) == 1:
            data = self.encode_frame(values[0])
        else:
            raise EncodeError(
                f"{len(values)} values cannot share one datagram unless it is packed "
                "(Datagram(packed=True))",
                codec=framing.name,
            )
        framing.check_size(len(data))
        return data


class Decoder:
    """Per-connection decoding state of a :class:`Pipeline`.

    ``feed(chunk)`` returns every value the chunk completes, in order, in one
    call. Errors raise, and never lose work:

    - the error's ``decoded`` holds the values completed before it in the
      same call;
    - a :class:`~framework.core.errors.DecodeError` (one bad frame) leaves the
      stream intact: the frames after it are kept, and the next ``feed``
      (``feed(b"")`` will do) returns them;
    - a :class:`~framework.core.errors.FramingError` means the stream itself is
      broken: the decoder refuses further input, unless the error is
      ``recoverable`` (a skipped over-long line): then, as after a
      ``DecodeError``, the next ``feed`` goes on after the bad bytes.
    """

    __slots__ = (
        "_backlog",
        "_decode",
        "_decode_many",
        "_frames",
        "_reported",
        "_resume",
        "_stream_error",
        "path",
        "value_class",
    )

    def __init__(
        self,
        frames: FrameDecoder,
        decode: Callable[[Any], Any],
        decode_many: Callable[[list[Any]], list[Any]] | None,
        path: str,
        value_class: type | None = None,
    ) -> None:
        self._frames = frames
        self._decode = decode
        # decode over a list of frames, as one call; None: the stack is raw
        # bytes, so the frames are the values.
        self._decode_many = decode_many
        #: The name of the decoding path the pipeline chose ("reference" or a speed-up).
        self.path = path
        #: When not None, every value :meth:`feed` and :meth:`end` return is
        #: exactly of this class (``str`` on a UTF-8 text stack's path), so a
        #: consumer need not ask each value its class. Bad input raises.
        self.value_class = value_class
        self._backlog: list[bytes] = []
        self._stream_error: FramingError | None = None
        self._reported = False
        self._resume = False  # the framer holds input it has not cut yet

    def __repr__(self) -> str:
        return f"<Decoder path={self.path}>"

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return self._frames.buffered

    @property
    def passthrough(self) -> bool:
        """Whether the values are the frames themselves (a raw-bytes stack).

        Then :meth:`feed` returns what ``framer.feed`` returns and raises what
        it raises, the first time; a hot loop may call the framer directly.
        """
        return self._decode_many is None

    @property
    def framer(self) -> FrameDecoder:
        """The framing layer's decoder: its ``buffered`` is this decoder's, one call cheaper."""
        return self._frames

    def feed(self, data: Buffer) -> list[Any]:
        """Add a chunk of the stream; return the values it completes."""
        if self._backlog or self._stream_error is not None or self._resume:
            return self._feed_slow(data)
        try:
            frames = self._frames.feed(data)
        except FramingError as exc:
            self._stream_error = exc
            self._backlog = exc.decoded
            exc.decoded = []
            return self._drain()
        decode_many = self._decode_many
        if decode_many is None:
            return frames
        try:
            return decode_many(frames)
        except DecodeError:
            # Rare: redo one frame at a time to find the bad one and keep the rest.
            self._backlog = frames
            return self._drain()

    def _feed_slow(self, data: Buffer) -> list[Any]:
        if self._stream_error is None and (data or self._resume):
            self._resume = False
            try:
                self._backlog += self._frames.feed(data)
            except FramingError as exc:
                self._stream_error = exc
                self._backlog += exc.decoded
                exc.decoded = []
        return self._drain()

    def _drain(self) -> list[Any]:
        values: list[Any] = []
        backlog = self._backlog
        decode = self._decode
        if self._decode_many is None:
            values = backlog
        else:
            for index, frame in enumerate(backlog):
                try:
                    values.append(decode(frame))
                except DecodeError as exc:
                    self._backlog = backlog[index + 1 :]
                    exc.decoded = values
                    raise
        self._backlog = []
        error = self._stream_error
        if error is not None and error.recoverable:
            # The framer skipped the bad bytes: report once, then go on.
            self._stream_error = None
            self._resume = True
            error.decoded = values
            raise error
        if error is not None:
            if not self._reported:
                self._reported = True
                error.decoded = values
                raise error
            # Already reported: any later call says the stream is broken.
            raise FramingError(f"stream already failed: {error}", offset=error.offset) from error
        return values

    def end(self) -> list[Any]:
        """Declare end of stream; return values still held after an earlier error.

        Raises ``IncompleteFrame`` if the stream ended inside a frame.
        """
        # A stream error not yet raised (a bad frame before it raised first) is raised here.
        unreported = self._stream_error is not None and not self._reported
        values = self._drain() if self._backlog or unreported else []
        try:
            self._frames.end()
        except FramingError as exc:
            exc.decoded = values
            raise
        return values


class Encoder:
    """Per-connection encoding state of a :class:`Pipeline`.

    ``encode_many(values)`` returns the wire bytes of ``values`` exactly as
    :meth:`Pipeline.encode_many` does, errors included, with the common
    stacks specialised: raw bytes under a length prefix are framed in one
    loop; a ``msgpack`` codec packs with a ``msgpack.Packer`` kept for this
    encoder (``packb`` builds one per call), flat typed messages go straight
    from their fields to the packer, and ``msgpack-stream`` frames the
    packer wrote are not parsed again. One encoder belongs to one
    connection: it is not safe to share between threads.
    """

    __slots__ = ("encode_many", "header", "header_limit", "path", "text_join")

    def __init__(self, pipeline: Pipeline) -> None:
        parts = pipeline._parts
        #: The name of the encoding path chosen ("reference" or a speed-up).
        self.path, self.encode_many = choose_encode_many(parts)
        # For raw bytes under a length prefix with no adjustment: header(n)
        # is the header of an n-byte frame, for any n up to header_limit, so
        # a bytes value's wire form is header(len(value)) + value: the
        # runtime frames such values as they are produced instead of
        # collecting them for encode_many. None for every other stack.
        self.header: Callable[[int], bytes] | None = None
        self.header_limit = -1
        plain = plain_header(parts)
        if plain is not None:
            self.header, self.header_limit = plain
        # For a UTF-8 stack under a newline: text_join(values), for values
        # each exactly a str, is their wire form in one pass (or None: ask
        # encode_many), so a caller that knows its replies are all str can
        # skip the check encode_many makes of each. None for other stacks.
        self.text_join: Callable[[list[str]], bytes | None] | None = text_join(parts)

    def __repr__(self) -> str:
        return f"<Encoder path={self.path}>"
