"""The router: which handler receives which value. A dispatch table, no I/O.

Handlers are looked up by the value's class, then its base classes, so
``@app.on(object)`` catches everything and ``@app.on(bytes)`` serves an
untyped byte pipeline. The table is inspectable (:attr:`Router.handlers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from framework.core.errors import ConfigError

__all__ = ["Handler", "Router"]

#: ``handler(value, conn)``; sync or async; a returned value (not ``None``) is the reply.
Handler = Callable[[Any, Any], Any]
F = TypeVar("F", bound=Callable[..., Any])


class Router:
    """Handlers per value class, connect/disconnect hooks and a fallback."""

    def __init__(self) -> None:
        self._handlers: dict[type, Handler] = {}
        self._resolved: dict[type, Handler | None] = {}
        self.connect_hooks: list[Callable[[Any], Any]] = []
        self.disconnect_hooks: list[Callable[[Any], Any]] = []
        self.fallback_handler: Callable[[Any, Any], Any] | None = None

    @property
    def handlers(self) -> Mapping[type, Handler]:
        """The dispatch table: value class → handler (read-only view)."""
        return MappingProxyType(self._handlers)

    def on(self, cls: type) -> Callable[[F], F]:
        """Decorator: handle values of ``cls`` (and its subclasses) with the function."""
        if not isinstance(cls, type):
            raise ConfigError(f"@on() takes a class, got {cls!r}")

        def register(handler: F) -> F:
            if cls in self._handlers:
                raise ConfigError(f"a handler for {cls.__qualname__} is already registered")
            self._handlers[cls] = handler
            self._resolved.clear()
            return handler

        return register

    def on_connect(self, hook: F) -> F:
        """Decorator: call ``hook(conn)`` when a connection (or UDP peer) appears."""
        self.connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: F) -> F:
        """Decorator: call ``hook(conn)`` when a connection ends (or a UDP peer expires)."""
        self.disconnect_hooks.append(hook)
        return hook

    def fallback(self, hook: F) -> F:
        """Decorator: call ``hook(error, conn)`` for undecodable frames and values nobody handles.

        ``error`` is a :class:`~framework.core.errors.DecodeError` (an
        :class:`~framework.core.errors.UnknownMessageType` when the value has no
        handler or names no registered type). A returned value is the reply.
        Without a fallback the connection is closed (the datagram dropped).
        """
        self.fallback_handler = hook
        return hook

    def handler_for(self, cls: type) -> Handler | None:
        """The handler for values of ``cls``: its own, else its nearest base class's."""
        try:
            return self._resolved[cls]
        except KeyError:
            pass
        found = None
        for base in cls.__mro__:
            found = self._handlers.get(base)
            if found is not None:
                break
        self._resolved[cls] = found
        return found
