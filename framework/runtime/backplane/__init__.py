"""Backplanes: the brokers that carry group publishes between nodes, chosen by URL.

``memory://`` (in-process, the default), ``redis://HOST:PORT[/DB]`` and
``nats://HOST:PORT``. See :mod:`framework.runtime.backplane.base` for the
contract each keeps.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from framework.core.errors import ConfigError
from framework.runtime.backplane.base import Backplane, BackplaneStats

__all__ = ["SCHEMES", "Backplane", "BackplaneStats", "backplane_from_url"]

#: URL scheme -> "module:class". The broker clients are optional extras,
#: imported only when their scheme is asked for.
SCHEMES = {
    "memory": "framework.runtime.backplane.memory:MemoryBackplane",
    "redis": "framework.runtime.backplane.redis:RedisBackplane",
    "nats": "framework.runtime.backplane.nats:NatsBackplane",
}


def backplane_from_url(url: str, **options: Any) -> Backplane:
    """The backplane ``url`` names, not started yet; ``options`` go to its constructor."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(
            f"unknown backplane {url!r}: the URL must start with one of {known}",
            option="backplane",
        )
    module_name, _, class_name = SCHEMES[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"backplane {url!r} needs {error.name!r}: pip install 'wirekit[{scheme}]'",
            option="backplane",
        ) from error
    backplane: Backplane = getattr(module, class_name)(url, **options)
    return backplane
