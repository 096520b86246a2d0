"""Specialised decode and encode for flat message classes: the hot path.

A message whose fields are all ``int``, ``float``, ``str``, ``bytes`` or
``bool`` (the game's ``position``) is the common case on a busy socket. For
such a class this module generates, once, a function that checks the
envelope with inline exact-type tests and calls the class, and one that
builds the envelope from attributes. Anything unusual (a missing or extra
key, a wrong type, a validator that refuses) makes the fast decoder answer
:data:`MISS`, and the caller takes the general cattrs path, which produces
the detailed error. The checks are the same as the general path's, so a
value is accepted by both or by neither.

With msgspec installed (``wirekit[msgspec]``), a flat frozen class also
gets a *wire* decoder: msgspec parses a whole msgpack envelope straight
into the class, in C, about twice as fast as unpacking a map and building
the instance from it. It is only offered where msgspec accepts exactly what
the general path accepts (see :func:`wire_decoder`); whatever it refuses
goes to the general path, which decides. A flat class's *wire* encoder
writes, through msgspec, the very bytes msgpack writes for its envelope,
or answers ``None`` and leaves the value to msgpack (see
:func:`wire_encoder`).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs

try:
    import msgspec as _msgspec
except ImportError:  # optional: wirekit[msgspec]
    _msgspec = None  # type: ignore[assignment]

#: The msgspec module, or ``None``: wire decoders are made only with it.
msgspec: Any = _msgspec

__all__ = [
    "MISS",
    "FlatPaths",
    "attrs_init_sets_only",
    "flat_decoder",
    "flat_encoder",
    "wire_decoder",
    "wire_encoder",
]

#: Returned by a fast decoder that cannot decide: use the general path.
MISS: Any = object()

_OBJECT_NEW: Any = object.__new__


class FlatPaths(NamedTuple):
    """A registry's generated paths: what its fused pipeline stages call."""

    #: Type name → envelope map decoder; answers ``MISS`` when unsure.
    decoders: dict[str, Callable[[dict[str, Any]], Any]]
    #: Class → envelope map builder.
    encoders: dict[type, Callable[[Any], dict[str, Any]]]
    #: Envelope prefix → msgspec decoder of a whole frame (raises when it refuses).
    wire_decoders: dict[bytes, Callable[[bytes], Any]]
    #: Class → msgspec writer of a whole frame (``None``: use msgpack).
    wire_encoders: dict[type, Callable[[Any], bytes | None]]
    #: Class → msgspec writer of a list of its instances (``None``: use msgpack).
    wire_batch_encoders: dict[type, Callable[[list[Any]], list[bytes] | None]]


_SCALARS = {int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool"}


def _flat_fields(cls: type) -> list[attrs.Attribute[Any]] | None:
    target: Any = cls
    fields = list(attrs.fields(target))
    if not fields or any(not f.init or f.type not in _SCALARS for f in fields):
        return None
    if any(not f.alias.isidentifier() or not f.name.isidentifier() for f in fields):
        return None
    return fields


def _frozen_setters(
    cls: type, fields: list[attrs.Attribute[Any]]
) -> list[Callable[[Any, Any], None]] | None:
    """The slots' setters, if ``cls(...)`` does nothing but set them; else ``None``.

    A frozen slotted attrs class's generated ``__init__`` sets each field
    through ``object.__setattr__``: about a quarter of a message's decode
    cost. Creating the instance and setting its slots directly does the
    same, provided the ``__init__`` really is only that. That is checked on
    the compiled ``__init__`` itself: it must be attrs-generated and name
    nothing but the setter getter and the fields (a validator, a converter,
    a cached hash or a pre/post-init hook each add a name), ``__new__``
    must be object's and the metaclass's ``__call__`` type's. Anything else
    keeps calling the class.
    """
    if not attrs_init_sets_only(cls, {field.name for field in fields}):
        return None
    if getattr(cls, "__new__", None) is not _OBJECT_NEW or type(cls).__call__ is not type.__call__:
        return None  # object.__new__ and no metaclass of its own between: nothing skipped
    setters = []
    for field in fields:
        slot = inspect.getattr_static(cls, field.name, None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        setters.append(slot.__set__)
    return setters


def attrs_init_sets_only(cls: type, names: set[str]) -> bool:
    """Whether ``cls.__init__`` is attrs' own and does nothing but set ``names``.

    attrs has no public API that says what its generated ``__init__`` does,
    so this reads the compiled code: attrs compiles it from a file name that
    starts ``<attrs generated``, and a frozen slotted class's names only the
    setter getter and the fields (a validator, a converter, a cached hash or
    a pre/post-init hook each add a name). The only place wirekit relies on
    attrs' internals: tests/core/test_flat.py fails loudly if attrs changes them.
    """
    code = getattr(cls.__dict__.get("__init__"), "__code__", None)
    if code is None or not code.co_filename.startswith("<attrs generated"):
        return False
    return code.co_names == ("_cached_setattr_get",) and set(code.co_consts) - {None} == names


def flat_decoder(cls: type) -> Callable[[dict[str, Any]], Any] | None:
    """A fast decoder for envelopes of ``cls``, or ``None`` if ``cls`` is not flat.

    The caller has already found the type key in the map (it picked this
    decoder by its value), so the decoder checks that the map holds exactly
    the fields besides it.
    """
    fields = _flat_fields(cls)
    if fields is None:
        return None
    # Names the generated code uses are default arguments (fast locals), and
    # dict subscripts replace d.get(): this runs once per received message.
    lines = [
        "def decode(d, MISS=MISS, cls=cls, type=type, float=float, int=int, str=str,"
        " bytes=bytes, bool=bool, KeyError=KeyError, Exception=Exception):",
        f"    if len(d) != {len(fields) + 1}:",
        "        return MISS",
        "    try:",
    ]
    lines += [f"        v{index} = d[{field.name!r}]" for index, field in enumerate(fields)]
    lines += ["    except KeyError:", "        return MISS"]
    for index, field in enumerate(fields):
        var = f"v{index}"
        if field.type is float:
            # Many encoders write 1.0 as 1: widen an int, as the general path does.
            lines.append(f"    if type({var}) is not float:")
            lines.append(f"        if type({var}) is not int:")
            lines.append("            return MISS")
            lines.append(f"        {var} = float({var})")
        else:
            lines.append(f"    if type({var}) is not {_SCALARS[field.type]}:")  # type: ignore[index]
            lines.append("        return MISS")
    namespace: dict[str, Any] = {"MISS": MISS, "cls": cls}
    setters = _frozen_setters(cls, fields)
    lines.append("    try:")
    if setters is not None:
        # What attrs' generated __init__ does, without calling it (see _frozen_setters).
        namespace["new"] = object.__new__
        lines.append("        obj = new(cls)")
        for index, setter in enumerate(setters):
            namespace[f"set{index}"] = setter
            lines.append(f"        set{index}(obj, v{index})")
        lines.append("        return obj")
    else:
        # Positional arguments where attrs allows them: cheaper than keywords.
        args = [f"v{index}" for index, field in enumerate(fields) if not field.kw_only]
        args += [f"{field.alias}=v{index}" for index, field in enumerate(fields) if field.kw_only]
        lines.append(f"        return cls({', '.join(args)})")
    lines.append("    except Exception:")
    lines.append("        return MISS")
    exec("\n".join(lines), namespace)  # source built from attrs field names only
    decode: Callable[[dict[str, Any]], Any] = namespace["decode"]
    return decode


def flat_encoder(
    cls: type, type_key: str, type_name: str
) -> Callable[[Any], dict[str, Any]] | None:
    """A fast envelope builder for instances of ``cls``, or ``None`` if it is not flat."""
    fields = _flat_fields(cls)
    if fields is None:
        return None
    items = ", ".join(f"{field.name!r}: v.{field.name}" for field in fields)
    source = f"def encode(v):\n    return {{{type_key!r}: {type_name!r}, {items}}}"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # source built from attrs field names only
    encode: Callable[[Any], dict[str, Any]] = namespace["encode"]
    return encode


def _fixstr(text: str) -> bytes | None:
    data = text.encode()
    return bytes([0xA0 | len(data)]) + data if len(data) < 32 else None


def wire_decoder(
    cls: type, type_key: str, type_name: str
) -> tuple[bytes, Callable[[bytes], Any]] | None:
    """msgspec's decoder of whole envelopes of ``cls``, and the prefix it is for; or ``None``.

    The prefix is how every wirekit encoder starts an envelope of ``cls``: a
    map header counting the fields and the type key, then the type key and
    the type name. A frame that starts so holds nothing but the type key and
    one entry per field, in any order: with no defaults, a missing, repeated
    or unknown key leaves a field out and msgspec refuses the frame. msgspec
    then checks each field's type as the flat decoder does (exact types,
    and an ``int`` widened for a ``float``), and builds the instance without
    calling ``__init__``, so the class must be one whose ``__init__`` only
    sets its fields (see :func:`_frozen_setters`).
    """
    if msgspec is None:
        return None
    fields = _flat_fields(cls)
    if fields is None or _frozen_setters(cls, fields) is None or len(fields) >= 15:
        return None
    if any(f.default is not attrs.NOTHING or f.alias != f.name for f in fields):
        return None
    key, name = _fixstr(type_key), _fixstr(type_name)
    if key is None or name is None:
        return None
    try:
        decoder: Any = msgspec.msgpack.Decoder(cls)
    except (TypeError, ValueError):  # a type msgspec cannot resolve: keep the Python path
        return None
    return bytes([0x80 | (len(fields) + 1)]) + key + name, decoder.decode


#: Values both msgpack and msgspec write alike, byte for byte. msgspec also
#: writes types msgpack refuses (datetime, UUID, Enum...): those values
#: take the msgpack path, which raises the pipeline's error.
_SAME_BYTES = frozenset({int, float, str, bytes, bool, type(None)})


def wire_encoder(
    cls: type, type_key: str, type_name: str
) -> tuple[Callable[[Any], bytes | None], Callable[[list[Any]], list[bytes] | None]] | None:
    """msgspec writers of ``cls``'s envelopes, of one value and of a list.

    ``None`` without msgspec, or for a class that is not flat.

    Each writes what msgpack writes for the envelope (a map: the type key,
    then the fields in their order), through a msgspec ``Struct`` tagged
    with the type name. The first takes one instance and answers ``None``
    for an instance holding a value of another type than int, float, str,
    bytes, bool or None (attrs does not check field types), and for
    anything msgspec refuses (an int past 64 bits): the caller then takes
    the msgpack path, which decides. The second takes a list of instances
    of exactly ``cls`` and gives their frames, or ``None`` if any one of
    them would get ``None``: one call per read's replies, not per value.
    """
    if msgspec is None:
        return None
    fields = _flat_fields(cls)
    if fields is None or any(f.name.startswith("_") or f.name == type_key for f in fields):
        return None
    try:
        wire = msgspec.defstruct(
            f"{cls.__name__}Wire",
            [(field.name, Any) for field in fields],
            tag_field=type_key,
            tag=type_name,
        )
    except (TypeError, ValueError):
        return None
    names = [f"a{index}" for index in range(len(fields))]
    loads = [f"{name} = v.{field.name}" for name, field in zip(names, fields, strict=True)]
    # The declared types first (identity tests, the usual case), then any
    # type both write alike (an int in a float field, a None).
    declared = " and ".join(
        f"type({name}) is {_SCALARS[field.type]}"  # type: ignore[index]
        for name, field in zip(names, fields, strict=True)
    )
    alike = " and ".join(f"type({name}) in same" for name in names)
    build = f"wire({', '.join(names)})"
    lines = [
        "def encode(v, wire=wire, pack=pack, same=same, type=type, Exception=Exception,"
        " int=int, float=float, str=str, bytes=bytes, bool=bool):",
        *(f"    {line}" for line in loads),
        f"    if ({declared}) or ({alike}):",
        "        try:",
        f"            return pack({build})",
        "        except Exception:",
        "            pass",
        "    return None",
        "",
        "def encode_all(values, wire=wire, pack=pack, same=same, type=type, Exception=Exception,"
        " int=int, float=float, str=str, bytes=bytes, bool=bool):",
        "    frames = []",
        "    append = frames.append",
        "    try:",
        "        for v in values:",
        *(f"            {line}" for line in loads),
        f"            if not ({declared}) and not ({alike}):",
        "                return None",
        f"            append(pack({build}))",
        "    except Exception:",
        "        return None",
        "    return frames",
    ]
    namespace: dict[str, Any] = {
        "wire": wire,
        "pack": msgspec.msgpack.Encoder().encode,
        "same": _SAME_BYTES,
    }
    exec("\n".join(lines), namespace)  # source built from attrs field names only
    encode: Callable[[Any], bytes | None] = namespace["encode"]
    encode_all: Callable[[list[Any]], list[bytes] | None] = namespace["encode_all"]
    return encode, encode_all
