"""Plain HTTP on a WebSocket listener: ``App.pages`` answered, everything else short and clear."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import echo_app, run, within
from helpers_websocket import http_request
from websockets.asyncio.client import connect as ws_connect

from framework import Pipeline
from framework.runtime.app import App
from framework.runtime.pages import Pages


def _site(root: Path) -> Path:
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>room</title>", encoding="utf-8")
    (root / "app.js").write_text("new WebSocket(location.href.replace('http', 'ws'))")
    (root / "style.css").write_text("body{}")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<p>sub</p>")
    (root / ".secret").write_text("hidden")
    (root / "big.bin").write_bytes(b"x" * (5 * 1024 * 1024))
    (root.parent / "outside.txt").write_text("not served")
    return root


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def _serving(pages: Pages | None, url: str = "ws://127.0.0.1:0/") -> Any:
    app = echo_app(Pipeline(framing="newline", codecs="utf-8"), pages=pages)
    return await app.start(url)


@pytest.mark.parametrize(
    ("path", "kind", "body"),
    [
        ("/", "text/html; charset=utf-8", b"<!doctype html><title>room</title>"),
        ("/index.html", "text/html; charset=utf-8", b"<!doctype html><title>room</title>"),
        ("/app.js", "text/javascript; charset=utf-8", b"new WebSocket("),
        ("/style.css?v=2", "text/css; charset=utf-8", b"body{}"),
        ("/logo.png", "image/png", b"\x89PNG"),
        ("/sub/", "text/html; charset=utf-8", b"<p>sub</p>"),
    ],
)
def test_get_serves_files_with_their_content_type(
    tmp_path: Path, path: str, kind: str, body: bytes
) -> None:
    async def main() -> None:
        server = await _serving(_site(tmp_path / "site"))
        status, headers, got = await within(http_request(server.url, _get(path)))
        assert status == 200
        assert headers["content-type"] == kind
        assert got.startswith(body)
        assert int(headers["content-length"]) == len(got)
        await server.close()

    run(main())


def test_head_answers_headers_only(tmp_path: Path) -> None:
    async def main() -> None:
        server = await _serving(_site(tmp_path / "site"))
        status, headers, body = await within(http_request(server.url, _get("/", "HEAD")))
        assert (status, body) == (200, b"")
        assert headers["content-length"] == str(len("<!doctype html><title>room</title>"))
        await server.close()

    run(main())


@pytest.mark.parametrize(
    "path",
    [
        "/missing.html",
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub/../../outside.txt",
        "/.secret",
        "/sub",  # a directory without its slash: no listing, no redirect
        "/big.bin",  # over max_page_size
        "/..%5coutside.txt",
        "/%ff",
        "relative",
    ],
)
def test_no_escape_no_listing_no_hidden_files(tmp_path: Path, path: str) -> None:
    async def main() -> None:
        server = await _serving(_site(tmp_path / "site"))
        status, headers, body = await within(http_request(server.url, _get(path)))
        assert status == 404
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert body == b"Not found.\n"
        await server.close()

    run(main())


def test_pages_from_a_traversable_inside_a_zip(tmp_path: Path) -> None:
    # importlib.resources gives Traversables: zipfile.Path is one, as a zipped package's files are.
    archive = tmp_path / "pages.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("web/index.html", "<h1>zipped</h1>")

    async def main() -> None:
        server = await _serving(zipfile.Path(archive, "web/"))
        status, _, body = await within(http_request(server.url, _get("/")))
        assert (status, body) == (200, b"<h1>zipped</h1>")
        status, _, _ = await within(http_request(server.url, _get("/nothing")))
        assert status == 404
        await server.close()

    run(main())


def test_without_pages_the_websocket_path_says_upgrade_required() -> None:
    async def main() -> None:
        server = await _serving(None, "ws://127.0.0.1:0/chat")
        status, headers, body = await within(http_request(server.url, _get("/chat")))
        assert status == 426
        assert headers["upgrade"] == "websocket"
        assert b"WebSocket" in body
        status, _, _ = await within(http_request(server.url, _get("/other")))
        assert status == 404
        await server.close()

    run(main())


def test_other_methods_are_405(tmp_path: Path) -> None:
    async def main() -> None:
        server = await _serving(_site(tmp_path / "site"))
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        status, headers, _ = await within(http_request(server.url, request))
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        await server.close()

    run(main())


def test_the_websocket_still_opens_on_the_page_url(tmp_path: Path) -> None:
    async def main() -> None:
        server = await _serving(_site(tmp_path / "site"))
        status, _, _ = await within(http_request(server.url, _get("/")))
        assert status == 200
        async with ws_connect(server.url) as ws:
            await ws.send("after the page")
            assert await within(ws.recv()) == "after the page"
        await server.close()

    run(main())


def test_page_requests_run_no_connect_hooks(tmp_path: Path) -> None:
    async def main() -> None:
        app = App(Pipeline(framing="newline", codecs="utf-8"), pages=_site(tmp_path / "site"))
        events: list[str] = []
        app.on_connect(lambda conn: events.append("connect"))
        app.on_disconnect(lambda conn: events.append("disconnect"))
        server = await app.start("ws://127.0.0.1:0")
        for _ in range(3):
            await within(http_request(server.url, _get("/")))
        assert events == []
        await server.close()

    run(main())


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    ],
)
def test_requests_the_server_cannot_read_get_a_short_400(request_bytes: bytes) -> None:
    async def main() -> None:
        server = await _serving(None)
        status, headers, body = await within(http_request(server.url, request_bytes))
        assert status == 400
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert body == b"Not a valid HTTP request.\n"
        await server.close()

    run(main())
