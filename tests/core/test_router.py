"""The router: a dispatch table from value class to handler, with no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from framework.core.errors import ConfigError
from framework.core.router import Router
from framework.runtime.app import App


class Base:
    pass


class Child(Base):
    pass


class GrandChild(Child):
    pass


class Unrelated:
    pass


def handler_a(value: Any, conn: Any) -> Any:
    return "a"


def handler_b(value: Any, conn: Any) -> Any:
    return "b"


def test_lookup_by_exact_class() -> None:
    router = Router()
    router.on(Base)(handler_a)
    router.on(Child)(handler_b)
    assert router.handler_for(Base) is handler_a
    assert router.handler_for(Child) is handler_b


def test_lookup_falls_back_to_nearest_base_class() -> None:
    router = Router()
    router.on(Base)(handler_a)
    assert router.handler_for(GrandChild) is handler_a
    router.on(Child)(handler_b)
    # A registration made after a lookup is seen: the resolution cache is reset.
    assert router.handler_for(GrandChild) is handler_b
    assert router.handler_for(Base) is handler_a


def test_on_object_catches_everything() -> None:
    router = Router()
    router.on(object)(handler_a)
    router.on(int)(handler_b)
    for cls in (str, bytes, dict, Base, GrandChild, Unrelated, type(None)):
        assert router.handler_for(cls) is handler_a
    assert router.handler_for(int) is handler_b
    assert router.handler_for(bool) is handler_b  # bool subclasses int


def test_no_handler_is_none() -> None:
    router = Router()
    router.on(Base)(handler_a)
    assert router.handler_for(Unrelated) is None
    assert router.handler_for(object) is None


def test_duplicate_registration_is_a_config_error() -> None:
    router = Router()
    router.on(Base)(handler_a)
    with pytest.raises(ConfigError, match="Base is already registered"):
        router.on(Base)(handler_b)
    assert router.handler_for(Base) is handler_a


def test_on_needs_a_class() -> None:
    router = Router()
    with pytest.raises(ConfigError, match="takes a class"):
        router.on("Base")  # type: ignore[arg-type]


def test_decorators_return_the_function() -> None:
    router = Router()
    assert router.on(Base)(handler_a) is handler_a
    assert router.on_connect(handler_a) is handler_a
    assert router.on_disconnect(handler_b) is handler_b
    assert router.fallback(handler_b) is handler_b


def test_table_is_inspectable_and_read_only() -> None:
    router = Router()
    router.on(Base)(handler_a)
    router.on(Unrelated)(handler_b)
    assert dict(router.handlers) == {Base: handler_a, Unrelated: handler_b}
    with pytest.raises(TypeError):
        router.handlers[Child] = handler_a  # type: ignore[index]


def test_hooks_and_fallback_are_recorded() -> None:
    router = Router()
    assert router.fallback_handler is None

    @router.on_connect
    def first(conn: Any) -> None: ...

    @router.on_connect
    async def second(conn: Any) -> None: ...

    @router.on_disconnect
    def gone(conn: Any) -> None: ...

    @router.fallback
    def fallback(error: Any, conn: Any) -> None: ...

    assert router.connect_hooks == [first, second]
    assert router.disconnect_hooks == [gone]
    assert router.fallback_handler is fallback


def test_app_is_a_router_and_copies_its_table() -> None:
    app = App()
    app.on(Base)(handler_a)
    app.fallback(handler_b)
    other = app.with_pipeline(app.pipeline)
    assert other.handlers == app.handlers
    assert other.fallback_handler is handler_b
    other.on(Child)(handler_b)
    assert Child not in app.handlers
    assert app.handler_for(Child) is handler_a


def test_app_refuses_an_unknown_error_policy() -> None:
    with pytest.raises(ConfigError, match="handler_errors"):
        App(handler_errors="ignore")
