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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["MISS", "flat_decoder", "flat_encoder"]

#: Returned by a fast decoder that cannot decide: use the general path.
MISS: Any = object()

_SCALARS = {int: "int", float: "float", str: "str", bytes: "bytes", bool: "bool"}


def _flat_fields(cls: type) -> list[attrs.Attribute[Any]] | None:
    target: Any = cls
    fields = list(attrs.fields(target))
    if not fields or any(not f.init or f.type not in _SCALARS for f in fields):
        return None
    if any(not f.alias.isidentifier() or not f.name.isidentifier() for f in fields):
        return None
    return fields


def flat_decoder(cls: type, type_key: str) -> Callable[[dict[str, Any]], Any] | None:
    """A fast decoder for envelopes of ``cls``, or ``None`` if ``cls`` is not flat.

    The caller has already found ``type_key`` in the map (it picked this
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
    # Positional arguments where attrs allows them: cheaper than keywords.
    args = [f"v{index}" for index, field in enumerate(fields) if not field.kw_only]
    args += [f"{field.alias}=v{index}" for index, field in enumerate(fields) if field.kw_only]
    lines.append("    try:")
    lines.append(f"        return cls({', '.join(args)})")
    lines.append("    except Exception:")
    lines.append("        return MISS")
    namespace: dict[str, Any] = {"MISS": MISS, "cls": cls}
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
