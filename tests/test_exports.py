"""The public surface: ``__all__`` lists exactly the public names, each documented."""

from __future__ import annotations
import __future__

import inspect
import types
import typing
from typing import Any

import pytest

import framework
import framework.testing

PACKAGES = [framework, framework.testing]


def is_plumbing(value: Any) -> bool:
    """Names a package binds for its own use: submodules and import helpers."""
    return (
        isinstance(value, types.ModuleType | __future__._Feature)
        or value is typing.Any
        or value is typing.TYPE_CHECKING
    )


def public_names(package: types.ModuleType) -> set[str]:
    return {
        name
        for name in dir(package)
        if not name.startswith("_") and not is_plumbing(getattr(package, name))
    }


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.__name__)
def test_all_lists_exactly_the_public_names(package: types.ModuleType) -> None:
    assert len(package.__all__) == len(set(package.__all__)), "duplicates in __all__"
    assert set(package.__all__) == public_names(package)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.__name__)
def test_every_exported_name_is_importable(package: types.ModuleType) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(package.__all__) <= set(namespace)


@pytest.mark.parametrize(
    ("package", "name"),
    [(package, name) for package in PACKAGES for name in package.__all__],
    ids=lambda item: item if isinstance(item, str) else item.__name__,
)
def test_every_exported_class_and_function_has_a_docstring(
    package: types.ModuleType, name: str
) -> None:
    value = getattr(package, name)
    if not (inspect.isclass(value) or callable(value)):
        # Constants (TYPE_KEY, BUFFER_SLACK) are documented where they are
        # defined, with a #: comment; the str or int has no docstring of its own.
        assert isinstance(value, str | int)
        return
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    assert doc is not None, f"{package.__name__}.{name} has no docstring"
    assert doc.strip(), f"{package.__name__}.{name} has an empty docstring"


def test_the_core_exports_do_not_need_the_runtime() -> None:
    core = [
        "Pipeline",
        "Decoder",
        "LengthPrefix",
        "Delimited",
        "MsgpackStream",
        "Datagram",
        "MsgpackCodec",
        "JsonCodec",
        "MessageRegistry",
        "message",
        "WirekitError",
        "ConnectionClosed",
    ]
    assert set(core) <= set(framework.__all__)
    assert all(getattr(framework, name).__module__.startswith("framework.core.") for name in core)


def test_connection_closed_is_one_class_from_the_core_to_the_runtime() -> None:
    import framework.core.errors
    import framework.runtime

    closed = framework.core.errors.ConnectionClosed
    assert framework.ConnectionClosed is closed
    assert framework.runtime.ConnectionClosed is closed  # what the runtime raises
