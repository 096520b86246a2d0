"""The web pages of the shipped protocols: static files served on a ``ws://`` listener.

Each directory holds one protocol's page (``index.html`` and what it loads),
set as that protocol's :attr:`App.pages`: a browser that opens the listener's
``http://`` URL gets the page, and the page opens a WebSocket back to the same
address. No build step and nothing from a CDN: the files are served as they
are shipped in the package.

- ``chat/``: the chat room, live, with one input line (:mod:`protocols.chat`).
- ``game/``: the game relay's live view, as a spectator
  (:mod:`protocols.game`); it decodes msgpack with the vendored
  ``@msgpack/msgpack`` browser bundle (``game/vendor/README.md``).
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["pages"]


def pages(name: str) -> Traversable:
    """The directory of the page called ``name`` (``"chat"``, ``"game"``), as installed."""
    directory = files(__name__) / name
    if not directory.joinpath("index.html").is_file():
        raise ValueError(f"no web page called {name!r} in {__name__}")
    return directory
