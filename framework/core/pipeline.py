"""Pipelines: a framing, a codec stack and (optionally) typed messages.

A :class:`Pipeline` is an immutable description; :meth:`Pipeline.decoder`
creates the per-connection state, so one pipeline serves any number of
connections. Decoding runs the codec stack front to back (the first codec is
nearest the wire), encoding back to front: that ordering lives here and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from typing import Any

import attrs

from framework.core._flat import MISS
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
    MsgpackStream,
    make_framing,
)
from framework.core.messages import TYPE_KEY, MessageRegistry

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


#: Built-in codecs whose encode always returns bytes (or raises EncodeError).
_BYTES_WRITERS = frozenset({BytesCodec, Utf8Codec, MsgpackCodec, JsonCodec})


def _is_builtin(codec: Codec) -> bool:
    # Built-in codecs only ever raise wirekit errors; skip the guard's cost for them.
    return type(codec).__module__.startswith("framework.")


def _fused_msgpack_messages(
    codec: MsgpackCodec, registry: MessageRegistry
) -> tuple[Callable[[Any], Any], Callable[[list[Any]], list[Any]]]:
    """msgpack → typed message in one function, the same values and errors as the two stages.

    A flat message (scalar fields only) is built straight from the unpacked
    map, skipping the nesting check: a map of scalars is one level deep.
    Anything else takes the two stages' own path. Returns the decoder of
    one frame and that of a read's frames.
    """
    unpack = codec.unpack
    codec_decode = codec.decode
    check_depth = codec.check_depth
    registry_decode = registry.decode
    fast_get = registry.fast_decoders().get
    # msgspec's whole-frame decoders, keyed by the envelope's first bytes:
    # only where the codec sets no size limit (msgspec would not apply it).
    wire = registry.wire_decoders()
    if codec.has_size_limits:
        wire = {}
    wire_get = wire.get
    # The type name's fixstr header (the byte after the type key) gives the
    # prefix's length; a frame of any other shape matches no prefix.
    name_at = 2 + len(TYPE_KEY)

    def decode(frame: Any) -> Any:
        if wire:
            try:
                whole = wire_get(frame[: name_at + 1 + (frame[name_at] & 0x1F)])
            except (IndexError, TypeError):  # too short; a bytearray's slice
                whole = None
            if whole is not None:
                try:
                    return whole(frame)
                except Exception:
                    pass  # refused: the msgpack path below decides, precisely
        try:
            value = unpack(frame)
        except Exception:
            # Rare: let the codec raise its precise DecodeError.
            return registry_decode(codec_decode(frame))
        if type(value) is dict:
            name = value.get(TYPE_KEY)
            fast = fast_get(name) if type(name) is str else None
            if fast is not None:
                message = fast(value)
                if message is not MISS:
                    return message
        check_depth(frame, value)
        return registry_decode(value)

    if not wire:
        return decode, _each(decode)
    starts = bytes.startswith

    def decode_many(frames: list[Any]) -> list[Any]:
        # A read's frames are most often all one message class: msgspec then
        # decodes them in one C loop, after a C loop has checked that each
        # starts with that class's prefix. A frame of another class, or one
        # msgspec refuses, sends the whole read through decode, which decides.
        # A read of one frame (request/response) saves nothing that way.
        if len(frames) > 1:
            first = frames[0]
            try:
                prefix = first[: name_at + 1 + (first[name_at] & 0x1F)]
                whole = wire_get(prefix)
                if whole is not None and all(map(starts, frames, repeat(prefix))):
                    return list(map(whole, frames))
            except Exception:
                pass  # too short, not bytes, or refused
        return [decode(frame) for frame in frames]

    return decode, decode_many


def _utf8_each(decode: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    """A text stack's decode over a read's frames: one C loop; ``decode`` per frame on errors."""
    text = bytes.decode  # strict UTF-8, as Utf8Codec decodes bytes

    def decode_many(frames: list[Any]) -> list[Any]:
        try:
            return list(map(text, frames))
        except (UnicodeDecodeError, TypeError):
            # The codec's own decode raises its precise error at the bad frame.
            return [decode(frame) for frame in frames]

    return decode_many


def _each(decode: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    """``decode`` over a read's frames, in one call."""

    def decode_many(frames: list[Any]) -> list[Any]:
        return [decode(frame) for frame in frames]

    return decode_many


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
    _decode: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)
    _decode_many: Callable[[list[Any]], list[Any]] = attrs.field(init=False, repr=False, eq=False)
    _encode: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)
    # Hot-path facts worked out once: the datagram framing in force, whether
    # the stack always writes bytes (no per-frame check), and whether decoding
    # is the identity (raw bytes: frames are the values).
    _datagram: Datagram = attrs.field(init=False, repr=False, eq=False)
    _writes_bytes: bool = attrs.field(init=False, repr=False, eq=False)
    _identity: bool = attrs.field(init=False, repr=False, eq=False)

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
        decode = _compose(decoders)
        decode_many = _each(decode)
        if [type(c) for c in stack] == [Utf8Codec]:
            decode_many = _utf8_each(decode)
        if (
            self.messages is not None
            and [type(c) for c in self.codecs] == [MsgpackCodec]
            and (self.codecs[0].max_depth or 1) >= 1  # type: ignore[attr-defined]
        ):
            decode, decode_many = _fused_msgpack_messages(self.codecs[0], self.messages)  # type: ignore[arg-type]
        object.__setattr__(self, "_decode", decode)
        object.__setattr__(self, "_decode_many", decode_many)
        object.__setattr__(self, "_encode", _compose(encoders))
        wire = type(stack[0]) if stack else None
        object.__setattr__(self, "_writes_bytes", wire in _BYTES_WRITERS)
        object.__setattr__(self, "_identity", [type(c) for c in stack] == [BytesCodec])

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
        if self._identity:
            return Decoder(self.framing.decoder(), None)
        return Decoder(self.framing.decoder(), self._decode, self._decode_many)

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
        frames = [encode(value) for value in values]
        framing = self.framing
        if type(framing) is MsgpackStream and type(self._wire_codec) is MsgpackCodec:
            return framing.encode_packed(frames)
        return framing.encode_many(frames)

    @property
    def _wire_codec(self) -> Codec | None:
        return self.codecs[0] if self.codecs else self.messages

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
        except WirekitError as exc:
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
        check_size = framing.check_size
        limit = framing.max_frame_size if framing.max_frame_size is not None else 1 << 64
        decode = self._decode
        if self._identity:

            def decode_raw(data: Buffer) -> list[Any]:
                if len(data) > limit:
                    check_size(len(data))
                return [data if type(data) is bytes else decode(data)]

            return decode_raw

        def decode_one(data: Buffer) -> list[Any]:
            if len(data) > limit:
                check_size(len(data))
            return [decode(data)]

        return decode_one

    def datagram_encoder(self) -> Callable[[Any], bytes]:
        """``encode_datagram`` of one value, specialised for this stack: what UDP replies use."""
        framing = self.datagram_framing
        if framing.packed:
            return self.encode_datagram
        check_size = framing.check_size
        limit = framing.max_frame_size if framing.max_frame_size is not None else 1 << 64
        encode = self._encode if self._writes_bytes else self.encode_frame
        identity = self._identity

        def encode_one(value: Any) -> bytes:
            # Raw bytes need no codec call.
            data: bytes = value if identity and type(value) is bytes else encode(value)
            if len(data) > limit:
                check_size(len(data))
            return data

        return encode_one

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
    )

    def __init__(
        self,
        frames: FrameDecoder,
        decode: Callable[[Any], Any] | None,
        decode_many: Callable[[list[Any]], list[Any]] | None = None,
    ) -> None:
        self._frames = frames
        # None: the stack is raw bytes, so the frames are the values.
        self._decode = decode
        # decode over a list of frames, as one call.
        self._decode_many = (
            decode_many if decode_many is not None or decode is None else _each(decode)
        )
        self._backlog: list[bytes] = []
        self._stream_error: FramingError | None = None
        self._reported = False
        self._resume = False  # the framer holds input it has not cut yet

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
        if decode is None:
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

    __slots__ = ("encode_many", "header", "header_limit")

    def __init__(self, pipeline: Pipeline) -> None:
        self.encode_many: Callable[[Iterable[Any]], bytes] = _build_encode_many(pipeline)
        #: For raw bytes under a length prefix with no adjustment: ``header(n)``
        #: is the header of an ``n``-byte frame, for any ``n`` up to
        #: ``header_limit``, so a ``bytes`` value's wire form is
        #: ``header(len(value)) + value``: a caller may frame such values as
        #: they are produced instead of collecting them for ``encode_many``.
        #: ``None`` for every other stack.
        self.header: Callable[[int], bytes] | None = None
        self.header_limit = -1
        framing = pipeline.framing
        if pipeline._identity and type(framing) is LengthPrefix and framing.length_adjustment == 0:
            self.header = framing._struct.pack
            self.header_limit = framing._encodable[1]


def _frame_encoder(pipeline: Pipeline) -> Callable[[Any], bytes] | None:
    """A value → frame function specialised for ``pipeline``'s stack, or ``None``."""
    codecs = pipeline.codecs
    if [type(c) for c in codecs] != [MsgpackCodec]:
        return None
    codec = codecs[0]
    assert isinstance(codec, MsgpackCodec)
    pack = codec.encoder()
    registry = pipeline.messages
    if registry is None:
        return pack
    fast_get = registry.fast_encoders().get
    wire_get = registry.wire_encoders().get
    envelope = registry.encode

    def encode(value: Any) -> bytes:
        wire = wire_get(type(value))
        if wire is not None:
            frame = wire(value)
            if frame is not None:
                return frame
        fast = fast_get(type(value))
        return pack(fast(value) if fast is not None else envelope(value))

    return encode


def _wire_batch(
    registry: MessageRegistry | None,
) -> Callable[[list[Any]], list[bytes] | None] | None:
    """A read's replies → their frames by msgspec, when all are of one flat class; else ``None``.

    ``None`` in place of the function where the registry has no msgspec
    encoders (no msgspec, or no flat class).
    """
    encoders = registry.wire_batch_encoders() if registry is not None else {}
    if not encoders:
        return None
    get = encoders.get

    def frames_of(values: list[Any]) -> list[bytes] | None:
        kinds = set(map(type, values))
        if len(kinds) != 1:
            return None
        encode_all = get(kinds.pop())
        return encode_all(values) if encode_all is not None else None

    return frames_of


def _packed_length_prefixed(
    pipeline: Pipeline, precise: Callable[[Iterable[Any]], bytes]
) -> Callable[[Iterable[Any]], bytes]:
    """msgpack (+ messages) under a length prefix, in one loop with one packer.

    The loop calls the packer, and a flat message's envelope builder,
    directly. On anything msgpack refuses it starts over with ``precise``
    (the stage-by-stage loop), which raises the same ``EncodeError`` the
    pipeline does: an error costs time, never a different answer.
    """
    codec = pipeline.codecs[0]
    assert isinstance(codec, MsgpackCodec)
    framing = pipeline.framing
    assert isinstance(framing, LengthPrefix)
    low, high = framing._encodable
    adjust = framing.length_adjustment
    pack_header = framing._struct.pack
    header = framing._header
    keep = codec.PACKER_KEEP
    new_packer = codec.packer
    registry = pipeline.messages
    fast_get = registry.fast_encoders().get if registry is not None else None
    wire_get = registry.wire_encoders().get if registry is not None else None
    batch = _wire_batch(registry)
    envelope = registry.encode if registry is not None else None
    packer: Any = None
    unadjust = (-adjust).__add__

    def packed_length_prefixed(values: Iterable[Any]) -> bytes:
        nonlocal packer
        if type(values) is not list:
            values = list(values)  # a retry must see them again
        if batch is not None and len(values) > 1:
            frames = batch(values)
            if frames is not None:
                # Every header in one C loop, where every size is in range.
                sizes = list(map(len, frames))
                if low <= min(sizes) and max(sizes) <= high:
                    headers = map(pack_header, map(unadjust, sizes) if adjust else sizes)
                    return b"".join(chain.from_iterable(zip(headers, frames, strict=True)))
        if packer is None:
            packer = new_packer()
        pack = packer.pack
        parts: list[bytes] = []
        append = parts.append
        try:
            if fast_get is None:
                for value in values:
                    frame = pack(value)
                    size = len(frame)
                    append(pack_header(size - adjust) if low <= size <= high else header(size))
                    append(frame)
                    if size > keep:
                        packer = None  # do not keep a big buffer alive
            else:
                assert envelope is not None
                assert wire_get is not None
                for value in values:
                    # msgspec's writer of a flat class, when installed: the
                    # same bytes; None sends the value on to msgpack.
                    wire = wire_get(type(value))
                    frame = wire(value) if wire is not None else None
                    if frame is None:
                        fast = fast_get(type(value))
                        frame = pack(fast(value) if fast is not None else envelope(value))
                    size = len(frame)
                    append(pack_header(size - adjust) if low <= size <= high else header(size))
                    append(frame)
                    if size > keep:
                        packer = None
        except (TypeError, ValueError, OverflowError):
            # msgpack refused a value (the packer has reset itself).
            return precise(values)
        return b"".join(parts)

    return packed_length_prefixed


def _utf8_encode_many(pipeline: Pipeline) -> Callable[[Iterable[Any]], bytes]:
    """A text stack's ``encode_many``: every value encoded in one C loop, then framed."""
    encode_frames = pipeline.framing.encode_many
    text = str.encode  # strict UTF-8, as Utf8Codec encodes a str

    def utf8_many(values: Iterable[Any]) -> bytes:
        if type(values) is not list:
            values = list(values)
        # Utf8Codec refuses str subclasses; str.encode would not.
        if set(map(type, values)) <= {str}:
            try:
                frames = list(map(text, values))
            except UnicodeEncodeError:
                pass  # a lone surrogate: the precise path says where
            else:
                return encode_frames(frames)
        return pipeline.encode_many(values)

    return utf8_many


def _build_encode_many(pipeline: Pipeline) -> Callable[[Iterable[Any]], bytes]:
    framing = pipeline.framing
    if [type(c) for c in pipeline.codecs] == [Utf8Codec] and pipeline.messages is None:
        return _utf8_encode_many(pipeline)
    encode = _frame_encoder(pipeline)
    if encode is None and not pipeline._identity:
        # A stack with no specialisation: the pipeline's own path.
        return pipeline.encode_many
    if type(framing) is LengthPrefix:
        low, high = framing._encodable
        adjust = framing.length_adjustment
        pack = framing._struct.pack
        header = framing._header
        if encode is None:
            to_bytes = BytesCodec().encode

            def raw_length_prefixed(values: Iterable[Any]) -> bytes:
                if type(values) is list and len(values) == 1:
                    # One reply per read (request/response): no list to join.
                    value = values[0]
                    if type(value) is bytes and low <= len(value) <= high:
                        return pack(len(value) - adjust) + value
                parts: list[bytes] = []
                append = parts.append
                for value in values:
                    if type(value) is not bytes:
                        value = to_bytes(value)  # bytearray, memoryview, or EncodeError
                    size = len(value)
                    append(pack(size - adjust) if low <= size <= high else header(size))
                    append(value)
                return b"".join(parts)

            def raw_plain_prefixed(values: Iterable[Any]) -> bytes:
                # The usual header (no adjustment): the length is the field.
                if type(values) is list and len(values) == 1:
                    value = values[0]
                    if type(value) is bytes and len(value) <= high:
                        return pack(len(value)) + value
                parts: list[bytes] = []
                append = parts.append
                for value in values:
                    if type(value) is not bytes:
                        value = to_bytes(value)
                    size = len(value)
                    append(pack(size) if size <= high else header(size))
                    append(value)
                return b"".join(parts)

            return raw_plain_prefixed if adjust == 0 else raw_length_prefixed
        encode_frame = encode

        def length_prefixed(values: Iterable[Any]) -> bytes:
            parts: list[bytes] = []
            append = parts.append
            for value in values:
                frame = encode_frame(value)
                size = len(frame)
                append(pack(size - adjust) if low <= size <= high else header(size))
                append(frame)
            return b"".join(parts)

        return _packed_length_prefixed(pipeline, length_prefixed)
    if encode is None:
        return pipeline.encode_many
    encode_frame = encode
    if type(framing) is MsgpackStream:
        packed = framing.encode_packed
        batch = _wire_batch(pipeline.messages)

        def msgpack_stream(values: Iterable[Any]) -> bytes:
            if batch is not None:
                if type(values) is not list:
                    values = list(values)
                frames = batch(values) if len(values) > 1 else None
                if frames is not None:
                    return packed(frames)
            return packed([encode_frame(value) for value in values])

        return msgpack_stream
    encode_frames = framing.encode_many

    def framed(values: Iterable[Any]) -> bytes:
        return encode_frames([encode_frame(value) for value in values])

    return framed
