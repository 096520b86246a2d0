"""Static pages on a WebSocket listener: plain HTTP GET and HEAD, answered from ``App.pages``.

``App.pages`` is ``None`` or a directory of static files: a
:class:`pathlib.Path` or an :mod:`importlib.resources` ``Traversable`` (files
shipped inside a package). On a ``ws://`` or ``wss://`` listener, a request
that is not a WebSocket upgrade is answered here:

- ``GET`` or ``HEAD`` of a file under the directory: the file, with a content
  type from its extension (``/`` and any path ending in ``/`` mean
  ``index.html``); a file over ``WebSocketOptions.max_page_size`` is 404;
- no directory listing, no way out of the directory (``..``, ``\\``, NUL
  and empty segments are 404), no hidden files (a segment starting with ``.``);
- no pages and the WebSocket path: ``426 Upgrade Required``, which says a
  WebSocket client is needed; any other miss: ``404 Not Found``; a method
  other than GET or HEAD: ``405``. Always a short plain-text body, never a
  traceback. One request per connection (``Connection: close``).

Files are read when asked for, on the event loop: pages are meant to be a
few small static files (a chat page, a game's live view).
"""

from __future__ import annotations

import email.utils
import mimetypes
from importlib.resources.abc import Traversable
from pathlib import Path
from urllib.parse import unquote

import attrs

__all__ = ["Page", "Pages", "answer"]

#: What ``App.pages`` may be.
Pages = Path | Traversable

# Types the standard table may not know, or knows differently per platform.
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
}


@attrs.frozen
class Page:
    """An HTTP answer: status, reason, content type and body (empty for HEAD)."""

    status: int
    reason: str
    content_type: str
    body: bytes
    #: The length announced (the file's, also for HEAD).
    length: int

    def headers(self) -> list[tuple[str, str]]:
        """The response's headers."""
        headers = [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", self.content_type),
            ("Content-Length", str(self.length)),
            ("Connection", "close"),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
        ]
        if self.status == 426:
            headers.append(("Upgrade", "websocket"))
        elif self.status == 405:
            headers.append(("Allow", "GET, HEAD"))
        return headers


def _text(status: int, reason: str, text: str, *, head: bool) -> Page:
    body = text.encode()
    return Page(status, reason, "text/plain; charset=utf-8", b"" if head else body, len(body))


def _content_type(name: str) -> str:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/json", "image/svg+xml"):
        kind += "; charset=utf-8"
    return kind


def _find(pages: Pages, path: str) -> Traversable | None:
    """The file ``path`` names under ``pages``, or None (missing, hidden, or outside)."""
    relative = path.removeprefix("/")
    if relative == "" or relative.endswith("/"):
        relative += "index.html"
    parts = relative.split("/")
    if any(
        not part or part.startswith(".") or "\\" in part or "\0" in part or ":" in part
        for part in parts
    ):
        return None
    node: Traversable = pages
    for part in parts:
        node = node.joinpath(part)
    try:
        return node if node.is_file() else None
    except OSError:
        return None


def _read(node: Traversable, limit: int) -> bytes | None:
    """The file's bytes, or None if it is over ``limit`` or cannot be read."""
    try:
        with node.open("rb") as file:
            data: bytes = file.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def answer(
    pages: Pages | None, method: str, target: str, *, websocket_path: str, max_page_size: int
) -> Page:
    """The answer to a plain HTTP request (not an upgrade) for ``target``."""
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _text(405, "Method Not Allowed", "Only GET and HEAD are served here.\n", head=False)
    try:
        path = unquote(target.partition("?")[0], errors="strict")
    except UnicodeDecodeError:
        path = ""
    if not path.startswith("/"):
        return _text(404, "Not Found", "Not found.\n", head=head)
    if pages is None:
        if path == websocket_path:
            return _text(
                426,
                "Upgrade Required",
                "This is a WebSocket endpoint: connect with a WebSocket client "
                "(new WebSocket(url) in a browser).\n",
                head=head,
            )
        return _text(404, "Not Found", "Not found.\n", head=head)
    node = _find(pages, path)
    data = _read(node, max_page_size) if node is not None else None
    if node is None or data is None:
        return _text(404, "Not Found", "Not found.\n", head=head)
    return Page(200, "OK", _content_type(node.name), b"" if head else data, len(data))
