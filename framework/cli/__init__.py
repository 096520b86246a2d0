"""The ``wirekit`` command line and TOML config files: the layer above the runtime."""

from __future__ import annotations

from framework.cli.commands import main

__all__ = ["main"]
