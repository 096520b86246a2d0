"""Event loop selection: uvloop when importable, unless turned off; required when asked for."""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import pytest

from framework.core.errors import ConfigError
from framework.runtime import loop as loops


class FakeUvloopLoop(asyncio.SelectorEventLoop):
    """Stands in for uvloop.Loop: a working loop whose class lives in a "uvloop" module."""


FakeUvloopLoop.__module__ = "uvloop"


@pytest.fixture
def with_uvloop(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("uvloop")
    fake.new_event_loop = FakeUvloopLoop  # type: ignore[attr-defined]
    fake.__version__ = "9.9.9"  # type: ignore[attr-defined]
    monkeypatch.setattr(loops, "_import_uvloop", lambda: fake)
    monkeypatch.delenv(loops.ENV_VAR, raising=False)
    return fake


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops, "_import_uvloop", lambda: None)
    monkeypatch.delenv(loops.ENV_VAR, raising=False)


async def running_loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_used_when_installed(with_uvloop: types.ModuleType) -> None:
    assert loops.choose_loop() is with_uvloop.new_event_loop  # type: ignore[attr-defined]
    assert loops.run(running_loop_type()) is FakeUvloopLoop
    assert loops.describe_loop() == "uvloop 9.9.9"


def test_asyncio_is_used_when_uvloop_is_not_installed(without_uvloop: None) -> None:
    assert loops.choose_loop() is loops._asyncio_loop
    assert loops.run(running_loop_type()) is not FakeUvloopLoop
    assert loops.describe_loop() == "asyncio"


@pytest.mark.parametrize("value", ["0", "false", "NO", " off "])
def test_the_environment_turns_uvloop_off(
    with_uvloop: types.ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(loops.ENV_VAR, value)
    assert loops.choose_loop() is loops._asyncio_loop
    assert loops.run(running_loop_type()) is not FakeUvloopLoop


def test_the_argument_turns_uvloop_off_and_wins_over_the_environment(
    with_uvloop: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loops.choose_loop(False) is loops._asyncio_loop
    monkeypatch.setenv(loops.ENV_VAR, "1")
    assert loops.choose_loop(False) is loops._asyncio_loop
    monkeypatch.setenv(loops.ENV_VAR, "0")
    assert loops.choose_loop(True) is with_uvloop.new_event_loop  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_asking_for_uvloop_when_it_is_missing_is_a_config_error(
    without_uvloop: None, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    options: dict[str, Any] = {}
    if how == "argument":
        options["uvloop"] = True
    else:
        monkeypatch.setenv(loops.ENV_VAR, "yes")

    async def never() -> None:
        raise AssertionError("ran without the loop that was asked for")

    with pytest.raises(ConfigError, match="uvloop"):
        loops.run(never(), **options)


def test_a_bad_environment_value_is_a_config_error_naming_the_variable(
    with_uvloop: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(loops.ENV_VAR, "maybe")
    with pytest.raises(ConfigError, match="WIREKIT_UVLOOP") as info:
        loops.choose_loop()
    assert info.value.option == loops.ENV_VAR


def test_the_loop_in_use_is_logged(
    with_uvloop: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wirekit.loop")
    loops.run(running_loop_type())
    assert "event loop: uvloop 9.9.9" in caplog.messages


def test_off_means_asyncio_even_under_an_installed_uvloop_policy(
    with_uvloop: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OtherPolicy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return FakeUvloopLoop()

    monkeypatch.setattr(asyncio, "get_event_loop_policy", OtherPolicy)
    assert loops.run(running_loop_type(), uvloop=False) is not FakeUvloopLoop


def test_the_real_loops_are_named() -> None:
    async def name() -> str:
        return loops.loop_name(asyncio.get_running_loop())

    assert loops.run(name(), uvloop=False) == "asyncio"
    real = loops._import_uvloop()
    if real is not None:
        assert loops.run(name(), uvloop=True) == f"uvloop {real.__version__}"
