"""Typed messages: attrs classes registered under a type name.

On the wire a message is a map (msgpack or JSON) whose ``"type"`` key holds
the registered name and whose other keys are the fields::

    {"type": "position", "x": 1.5, "y": 0.0, "z": -2.0, "count": 7}

Decoding checks every field's name and type and raises
:class:`~framework.core.errors.InvalidMessage` naming the field; an unregistered
type name raises :class:`~framework.core.errors.UnknownMessageType`.

Field types understood: ``int``, ``float`` (an int is accepted and widened),
``str``, ``bytes`` (msgpack only: JSON has no binary type), ``bool``, ``Enum``
subclasses (by value), ``None`` and ``X | None``, ``list[X]``,
``dict[str, X]``, other attrs classes (nested maps, no ``"type"`` key) and
``typing.Any`` (passed through unchecked).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from framework.core._flat import (
    MISS,
    FlatPaths,
    flat_decoder,
    flat_encoder,
    wire_decoder,
    wire_encoder,
)
from framework.core.codecs._base import Codec
from framework.core.errors import (
    ConfigError,
    EncodeError,
    InvalidMessage,
    MessageError,
    UnknownMessageType,
)

__all__ = ["TYPE_KEY", "MessageRegistry", "message", "message_type_name"]

T = TypeVar("T")

#: The envelope key that names a message's type.
TYPE_KEY = "type"
_NAME_ATTR = "__wirekit_message__"


def message(type_name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: declare an attrs class as the message ``type_name``.

    ::

        @message("position")
        @attrs.frozen
        class Position:
            x: float
            y: float
            z: float
            count: int
    """
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"a message type name must be a non-empty string, got {type_name!r}")

    def mark(cls: type[T]) -> type[T]:
        _check_message_class(cls, type_name)
        setattr(cls, _NAME_ATTR, type_name)
        return cls

    return mark


def message_type_name(cls: type) -> str:
    """The type name ``cls`` was declared with by :func:`message`."""
    name = cls.__dict__.get(_NAME_ATTR)
    if name is None:
        raise ConfigError(
            f"{cls.__qualname__} is not a message class: decorate it with @message(name)"
        )
    return str(name)


def _check_message_class(cls: type, type_name: str) -> None:
    if not attrs.has(cls):
        raise ConfigError(
            f"@message({type_name!r}) needs an attrs class; decorate {cls.__qualname__} "
            "with @attrs.define or @attrs.frozen first (below @message)"
        )
    if any(field.name == TYPE_KEY for field in attrs.fields(cls)):
        raise ConfigError(
            f"{cls.__qualname__} has a field named {TYPE_KEY!r}, which the envelope uses "
            "for the message type name"
        )


class _Mismatch(TypeError):
    """A value of the wrong type: the hooks raise it, the registry reports it."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {_describe(value)}")
        self.expected = expected
        self.actual = type(value).__name__


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _exact(kind: type, expected: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _type: Any) -> Any:
        if type(value) is kind:
            return value
        raise _Mismatch(expected, value)

    return structure


def _structure_float(value: Any, _type: Any) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        # Many encoders write 1.0 as 1; widen rather than reject.
        return float(value)
    raise _Mismatch("float", value)


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_list(tp: Any) -> bool:
    return tp is list or get_origin(tp) is list


def _is_dict(tp: Any) -> bool:
    return tp is dict or get_origin(tp) is dict


_SCALARS: tuple[Any, ...] = (int, float, str, bytes, bool, type(None), None, Any)


def _unsupported(tp: Any, seen: set[Any]) -> Any:
    """The first type within ``tp`` that a message field cannot have, or ``None``.

    cattrs can structure more types than the wire can carry (sets, tuples,
    ``dict[int, X]``, unions of scalars): refuse them at registration, not at
    the first message that uses them.
    """
    if any(tp is scalar for scalar in _SCALARS) or _is_enum(tp) or tp is list or tp is dict:
        return None
    if attrs.has(tp):
        if tp not in seen:
            seen.add(tp)
            attrs.resolve_types(tp)
            for field in attrs.fields(tp):
                bad = _unsupported(field.type, seen)
                if bad is not None:
                    return bad
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return _unsupported(args[0], seen)
    if origin is dict:
        return tp if args[0] is not str else _unsupported(args[1], seen)
    if origin is typing.Union or origin is types.UnionType:
        others = [arg for arg in args if arg is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _unsupported(others[0], seen)
    return tp


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def enum_factory(tp: type[enum.Enum]) -> Callable[[Any, Any], Any]:
        # Keyed by (type, value) so True does not pass for 1, nor 1.0 for 1.
        members = {(type(m.value), m.value): m for m in tp}
        expected = f"{tp.__name__} (one of {', '.join(repr(m.value) for m in tp)})"

        def structure(value: Any, _type: Any) -> Any:
            try:
                return members[(type(value), value)]
            except (KeyError, TypeError):
                raise _Mismatch(expected, value) from None

        return structure

    enum_hooks: dict[Any, Callable[[Any, Any], Any]] = {}

    def scalar(kind: type, hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def structure(value: Any, tp: Any) -> Any:
            if tp is kind:
                return hook(value, tp)
            # Hooks registered by class also receive its subclasses: an IntEnum
            # or a str-mixin Enum field must still become one of its members.
            if tp not in enum_hooks:
                enum_hooks[tp] = enum_factory(tp)
            return enum_hooks[tp](value, tp)

        return structure

    converter.register_structure_hook(int, scalar(int, _exact(int, "int")))
    converter.register_structure_hook(str, scalar(str, _exact(str, "str")))
    converter.register_structure_hook(bytes, scalar(bytes, _exact(bytes, "bytes")))
    converter.register_structure_hook(bool, scalar(bool, _exact(bool, "bool")))
    converter.register_structure_hook(float, scalar(float, _structure_float))

    def list_factory(tp: Any) -> Callable[[Any, Any], Any]:
        target: Any = tp if get_args(tp) else list[Any]
        inner = list_structure_factory(target, converter)

        def structure(value: Any, _type: Any) -> Any:
            if type(value) is not list:
                raise _Mismatch("array", value)
            return inner(value, tp)

        return structure

    def dict_factory(tp: Any) -> Callable[[Any, Any], Any]:
        target: Any = tp if get_args(tp) else dict[str, Any]
        inner = mapping_structure_factory(target, converter)

        def structure(value: Any, _type: Any) -> Any:
            if type(value) is not dict:
                raise _Mismatch("map", value)
            return inner(value, tp)

        return structure

    def attrs_factory(cls: Any) -> Callable[[Any, Any], Any]:
        inner = make_dict_structure_fn(cls, converter)

        def structure(value: Any, _type: Any) -> Any:
            if type(value) is not dict:
                raise _Mismatch(f"map ({cls.__name__})", value)
            return inner(value, cls)

        return structure

    converter.register_structure_hook_factory(_is_enum, enum_factory)
    converter.register_structure_hook_factory(_is_list, list_factory)
    converter.register_structure_hook_factory(_is_dict, dict_factory)
    converter.register_structure_hook_factory(attrs.has, attrs_factory)
    return converter


def _locate(exc: BaseException, path: str) -> tuple[str, BaseException]:
    """Follow cattrs' exception tree to the first leaf; return its field path."""
    while True:
        if isinstance(exc, ForbiddenExtraKeysError):
            return path, exc
        if isinstance(exc, ClassValidationError):
            with_notes, without = exc.group_exceptions()
            if with_notes:
                sub, note = with_notes[0]
                exc, path = sub, f"{path}.{note.name}" if path else note.name
                continue
            exc = without[0]
            continue
        if isinstance(exc, IterableValidationError):
            items, rest = exc.group_exceptions()
            if items:
                sub, inote = items[0]
                index = inote.index
                step = f"[{index}]" if isinstance(index, int) else f"[{index!r}]"
                exc, path = sub, path + step
                continue
            exc = rest[0]
            continue
        return path, exc


class MessageRegistry(Codec):
    """A table of message classes by type name, usable as the last codec of a stack.

    ``decode`` turns an envelope map into an instance, ``encode`` an instance
    into an envelope map; the codec below (msgpack, json) handles the bytes.
    Build it from classes decorated with :func:`message`, or pass explicit
    names with :meth:`register`.
    """

    name: ClassVar[str] = "messages"

    def __init__(self, classes: Iterable[type] = ()) -> None:
        self._converter = _make_converter()
        self._by_name: dict[str, tuple[type, Callable[[Any, Any], Any]]] = {}
        self._by_class: dict[type, tuple[str, Callable[[Any], Any]]] = {}
        # Generated fast paths for flat classes (see framework.core._flat).
        self._fast_decode: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._fast_encode: dict[type, Callable[[Any], dict[str, Any]]] = {}
        self._wire_decode: dict[bytes, Callable[[bytes], Any]] = {}
        self._wire_encode: dict[type, Callable[[Any], bytes | None]] = {}
        self._wire_encode_all: dict[type, Callable[[list[Any]], list[bytes] | None]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[T], type_name: str | None = None) -> type[T]:
        """Add ``cls`` under ``type_name`` (default: the name given to :func:`message`)."""
        name = type_name if type_name is not None else message_type_name(cls)
        _check_message_class(cls, name)
        if name in self._by_name and self._by_name[name][0] is not cls:
            other = self._by_name[name][0].__qualname__
            raise ConfigError(f"message type {name!r} is already registered to {other}")
        try:
            structure = self._converter.get_structure_hook(cls)
            unstructure = self._converter.get_unstructure_hook(cls)
        except Exception as exc:
            raise ConfigError(
                f"cannot build a decoder for {cls.__qualname__}: {exc}; see the field types "
                "wirekit supports in framework.core.messages"
            ) from exc
        for field in attrs.fields(cls):  # type: ignore[arg-type]
            bad = _unsupported(field.type, {cls})
            if bad is not None:
                raise ConfigError(
                    f"{cls.__qualname__}.{field.name}: a message field cannot hold {bad!r}; "
                    "see the field types wirekit supports in framework.core.messages"
                )
        self._by_name[name] = (cls, structure)
        self._by_class[cls] = (name, unstructure)
        fast_decode = flat_decoder(cls)
        fast_encode = flat_encoder(cls, TYPE_KEY, name)
        if fast_decode is not None and fast_encode is not None:
            self._fast_decode[name] = fast_decode
            self._fast_encode[cls] = fast_encode
        wire = wire_decoder(cls, TYPE_KEY, name)
        if wire is not None:
            self._wire_decode[wire[0]] = wire[1]
        wire_encode = wire_encoder(cls, TYPE_KEY, name)
        if wire_encode is not None:
            self._wire_encode[cls], self._wire_encode_all[cls] = wire_encode
        return cls

    def type_name(self, cls: type) -> str:
        """The registered name of ``cls``."""
        try:
            return self._by_class[cls][0]
        except KeyError:
            raise ConfigError(f"{cls.__qualname__} is not registered") from None

    def class_for(self, type_name: str) -> type:
        """The class registered as ``type_name``."""
        try:
            return self._by_name[type_name][0]
        except KeyError:
            raise UnknownMessageType(
                f"unknown message type {type_name!r}", type_name=type_name
            ) from None

    def __contains__(self, item: object) -> bool:
        return item in self._by_name or item in self._by_class

    def __iter__(self) -> Iterator[type]:
        return iter(cls for cls, _ in self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"MessageRegistry({sorted(self._by_name)!r})"

    def decode(self, data: Any) -> Any:
        """Turn an envelope map into an instance of its registered class."""
        if type(data) is dict:
            name = data.get(TYPE_KEY)
            # Only a str can name a type: an unhashable value must not reach the lookup.
            fast = self._fast_decode.get(name) if type(name) is str else None
            if fast is not None:
                value = fast(data)
                if value is not MISS:
                    return value
        return self._decode(data)

    def flat_paths(self) -> FlatPaths:
        """The generated paths of flat classes, for pipelines that fuse stages.

        Not part of the public API: :meth:`decode` and :meth:`encode` are
        the complete paths; see ``framework.core._flat``.
        """
        return FlatPaths(
            self._fast_decode,
            self._fast_encode,
            self._wire_decode,
            self._wire_encode,
            self._wire_encode_all,
        )

    def _decode(self, data: Any) -> Any:
        if type(data) is not dict:
            raise InvalidMessage(
                f"a message must be a map with a {TYPE_KEY!r} key, got {_describe(data)}",
                field=None,
                expected="map",
                actual=type(data).__name__,
                value=data,
            )
        type_name = data.get(TYPE_KEY)
        if type(type_name) is not str:
            if type_name is None:
                problem = "has no"
            else:
                problem = f"has a non-string ({_describe(type_name)})"
            raise InvalidMessage(
                f"message map {problem} {TYPE_KEY!r} key",
                field=TYPE_KEY,
                expected="str",
                actual=type(type_name).__name__,
                value=data,
            )
        entry = self._by_name.get(type_name)
        if entry is None:
            raise UnknownMessageType(
                f"unknown message type {type_name!r}", type_name=type_name, value=data
            )
        cls, structure = entry
        fields = dict(data)
        del fields[TYPE_KEY]
        try:
            return structure(fields, cls)
        except Exception as exc:
            raise self._invalid(type_name, data, exc) from exc

    def _invalid(self, type_name: str, data: Any, exc: Exception) -> MessageError:
        path, leaf = _locate(exc, "")
        where = f"{type_name}.{path}" if path else type_name
        if isinstance(leaf, ForbiddenExtraKeysError):
            extra = sorted(map(str, leaf.extra_fields))
            field = f"{path}.{extra[0]}" if path else extra[0]
            return InvalidMessage(
                f"{where}: unexpected field(s) {', '.join(map(repr, extra))}",
                type_name=type_name,
                value=data,
                field=field,
            )
        if isinstance(leaf, _Mismatch):
            return InvalidMessage(
                f"{where}: {leaf}",
                type_name=type_name,
                value=data,
                field=path or None,
                expected=leaf.expected,
                actual=leaf.actual,
            )
        if isinstance(leaf, KeyError):
            return InvalidMessage(
                f"{where}: required field is missing", type_name=type_name, value=data, field=path
            )
        # A validator on the user's class, or a converter of theirs, refused the value.
        return InvalidMessage(
            f"{where}: {type(leaf).__name__}: {leaf}",
            type_name=type_name,
            value=data,
            field=path or None,
        )

    def encode(self, value: Any) -> dict[str, Any]:
        """Turn a registered message instance into its envelope map."""
        fast = self._fast_encode.get(type(value))
        if fast is not None:
            return fast(value)
        entry = self._by_class.get(type(value))
        if entry is None:
            raise EncodeError(
                f"{type(value).__qualname__} is not a registered message class",
                codec=self.name,
            )
        type_name, unstructure = entry
        envelope = {TYPE_KEY: type_name}
        envelope.update(unstructure(value))
        return envelope
