"""The message classes the message, pipeline and server targets decode into.

Between them they use every field type wirekit supports: flat scalars (the
generated fast path), nested attrs classes, optional and list fields, a
``dict[str, int]``, ``Enum`` and ``IntEnum``, ``bytes``, ``bool``, ``Any``,
and a user validator that can refuse a value.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from framework.core.messages import MessageRegistry, message

__all__ = ["CLASSES", "Blob", "Color", "Level", "Ping", "Point", "Position", "Route", "registry"]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@message("position")
@attrs.frozen
class Position:
    x: float
    y: float
    z: float
    count: int


@attrs.frozen
class Point:
    x: float
    y: float
    label: str | None = None


@message("route")
@attrs.frozen
class Route:
    name: str
    points: list[Point]
    tags: dict[str, int] = attrs.field(factory=dict)
    color: Color = Color.RED
    origin: Point | None = None


@message("blob")
@attrs.frozen
class Blob:
    data: bytes
    flag: bool
    level: Level
    extra: Any = None


@message("ping")
@attrs.frozen
class Ping:
    seq: int = attrs.field(validator=attrs.validators.ge(0))


CLASSES: tuple[type, ...] = (Position, Route, Blob, Ping)


def registry() -> MessageRegistry:
    """A fresh registry of :data:`CLASSES`."""
    return MessageRegistry(CLASSES)


def samples() -> list[Any]:
    """One valid instance of each class, with the optional parts filled in."""
    return [
        Position(1.5, -2.0, 0.0, 7),
        Route(
            "r1",
            [Point(0.0, 1.0), Point(2.5, 3.0, "b")],
            {"k": 1},
            Color.GREEN,
            Point(9.0, 9.0, "o"),
        ),
        Route("r2", []),
        Blob(b"\x00\xffdata", True, Level.HIGH, {"any": [1, "two", None]}),
        Ping(3),
    ]
