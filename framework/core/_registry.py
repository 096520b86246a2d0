"""Name → factory tables, so config files and the command line can build parts by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from framework.core.errors import ConfigError

T = TypeVar("T")


class NameRegistry(Generic[T]):
    """A table of factories addressable by a short name (``"length-prefix"``)."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> None:
        """Make ``factory`` buildable as ``name``; a second registration replaces the first."""
        if not name or not isinstance(name, str):
            raise ConfigError(f"a {self._kind} name must be a non-empty string", value=name)
        self._factories[name] = factory

    def make(self, name: str, /, **options: Any) -> T:
        """Build the part registered as ``name`` with keyword ``options``."""
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise ConfigError(
                f"unknown {self._kind} {name!r}; known: {known}", option=self._kind, value=name
            ) from None
        try:
            return factory(**options)
        except TypeError as exc:
            # attrs raises TypeError for unexpected keyword arguments: say which.
            raise ConfigError(
                f"{self._kind} {name!r} does not accept these options: {exc}",
                option=self._kind,
                value=options,
            ) from exc

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))


def check_limit(option: str, value: int | None, *, allow_none: bool = True) -> None:
    """Validate a size limit eagerly, naming the option and the value."""
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{option} must be a positive integer, not None", option=option)
    if type(value) is not int or value <= 0:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ConfigError(
            f"{option} must be {expected}, got {value!r}",
            option=option,
            value=value,
        )


def limit_validator(_instance: object, attribute: Any, value: int | None) -> None:
    """An attrs validator wrapping :func:`check_limit`."""
    check_limit(attribute.name, value)
