"""Which event loop runs wirekit: uvloop when it is installed, unless turned off.

uvloop is an optional extra (``pip install wirekit[uvloop]``). The choice is
made once per process, in this order:

1. an explicit argument (``App.run(uvloop=False)``, ``wirekit serve --no-uvloop``);
2. the environment variable ``WIREKIT_UVLOOP`` (``0``/``false``/``no``/``off``
   turns it off, ``1``/``true``/``yes``/``on`` requires it);
3. otherwise uvloop if it can be imported, else asyncio's default loop.

Asking for uvloop explicitly (argument ``True`` or ``WIREKIT_UVLOOP=1``)
when it is not installed is a :class:`~framework.core.errors.ConfigError`: a
deployment that expects it should not silently run without it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

from framework.core.errors import ConfigError

__all__ = ["ENV_VAR", "choose_loop", "describe_loop", "loop_name", "run"]

log = logging.getLogger("wirekit.loop")

T = TypeVar("T")

#: The environment variable that turns uvloop off (``0``) or requires it (``1``).
ENV_VAR = "WIREKIT_UVLOOP"

_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}


def _import_uvloop() -> ModuleType | None:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def _wanted(uvloop: bool | None) -> bool | None:
    """True: required; False: off; None: use it if installed."""
    if uvloop is not None:
        return uvloop
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ConfigError(
        f"{ENV_VAR} must be one of {', '.join(sorted(_OFF | _ON))}, got {value!r}",
        option=ENV_VAR,
        value=value,
    )


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    """asyncio's own loop, even where an installed policy (uvloop's) would pick another."""
    return asyncio.DefaultEventLoopPolicy().new_event_loop()


def choose_loop(uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the event loop to run: uvloop's or asyncio's default.

    ``uvloop``: ``None`` (the default) follows ``WIREKIT_UVLOOP``, then uses
    uvloop if it is installed; ``False`` never uses it; ``True`` requires it.
    """
    wanted = _wanted(uvloop)
    if wanted is False:
        return _asyncio_loop
    module = _import_uvloop()
    if module is None:
        if wanted:
            raise ConfigError(
                "uvloop was asked for but is not installed: pip install 'wirekit[uvloop]'",
                option="uvloop",
                value=True,
            )
        return _asyncio_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """A short name for the running loop: ``"uvloop 0.19.0"`` or ``"asyncio"``."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        uvloop = _import_uvloop()
        version = getattr(uvloop, "__version__", "") if uvloop is not None else ""
        return f"uvloop {version}".strip()
    if module.startswith("asyncio"):
        return "asyncio"
    return f"{module}.{type(loop).__qualname__}"


def describe_loop(uvloop: bool | None = None) -> str:
    """What :func:`choose_loop` would pick, named like :func:`loop_name`, without making a loop."""
    if choose_loop(uvloop) is _asyncio_loop:
        return "asyncio"
    module = _import_uvloop()
    return f"uvloop {getattr(module, '__version__', '')}".strip()


def run(main: Coroutine[Any, Any, T], *, uvloop: bool | None = None, debug: bool = False) -> T:
    """``asyncio.run(main)`` on the loop :func:`choose_loop` picks; the choice is logged."""
    try:
        factory = choose_loop(uvloop)
    except BaseException:
        main.close()  # never awaited: do not leave a "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        log.info("event loop: %s", loop_name(runner.get_loop()))
        return runner.run(main)
