"""Node's ``ws`` package as an independent WebSocket peer (tests/peers/node/peer.mjs).

``.ci/run`` installs Node and ``npm install``s the peer; locally the tests
skip with the reason when either is missing, and fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers_runtime import run

from framework import Pipeline
from framework.core.websocket import WebSocketOptions
from framework.runtime.app import App

PEER = Path(__file__).resolve().parents[1] / "peers" / "node"
NODE = shutil.which("node")
_missing = (
    "node is not installed"
    if NODE is None
    else "the ws package is not installed (npm install in tests/peers/node)"
    if not (PEER / "node_modules" / "ws").is_dir()
    else None
)
if _missing is not None and os.environ.get("CI"):  # pragma: no cover - CI installs both
    raise RuntimeError(f"CI must run the Node peer tests: {_missing}")
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


async def node_session(
    url: str, commands: list[dict[str, Any]], *args: str
) -> list[dict[str, Any]]:
    """Run the Node peer against ``url`` with ``commands``; the events it printed."""
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(PEER / "peer.mjs"),
        url,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=PEER,
    )
    script = "".join(json.dumps(command) + "\n" for command in commands)
    out, _ = await asyncio.wait_for(proc.communicate(script.encode()), 15)
    return [json.loads(line) for line in out.decode().splitlines()]


def _app(pipeline: Pipeline) -> App:
    app = App(pipeline)

    @app.on(object)
    def echo(value: Any, conn: Any) -> Any:
        if value == "bye":
            conn.close()
            return None
        return value

    return app


def test_text_messages_round_trip_with_node() -> None:
    async def main() -> list[dict[str, Any]]:
        server = await _app(Pipeline(codecs="json")).start("ws://127.0.0.1:0/")
        try:
            return await node_session(
                server.url,
                [
                    {"text": '{"hello": "node"}'},
                    {"binary": base64.b64encode(b"[1,2,3]").decode()},  # binary in, accepted
                    {"expect": 2},
                    {"text": '"bye"'},
                    {"expect": 0},
                ],
            )
        finally:
            await server.close()

    events = run(main(), timeout=20)
    assert events[0] == {"open": True, "protocol": ""}
    # json is a text codec: both replies come back as text frames.
    assert events[1] == {"message": '{"hello":"node"}', "binary": False}
    assert events[2] == {"message": "[1,2,3]", "binary": False}
    assert events[-1] == {"close": 1000, "reason": ""}


def test_binary_codec_replies_are_binary_frames_for_node() -> None:
    async def main() -> list[dict[str, Any]]:
        server = await _app(Pipeline(codecs="msgpack")).start("ws://127.0.0.1:0/")
        try:
            return await node_session(
                server.url,
                [
                    {"binary": base64.b64encode(b"\x92\x01\xa1x").decode()},
                    {"expect": 1},
                    {"close": 1000},
                ],
            )
        finally:
            await server.close()

    events = run(main(), timeout=20)
    assert events[1] == {"message": base64.b64encode(b"\x92\x01\xa1x").decode(), "binary": True}
    assert events[-1]["close"] == 1000


def test_node_sees_the_close_codes_and_the_origin_check() -> None:
    async def main() -> tuple[list[dict[str, Any]], ...]:
        options = WebSocketOptions(subprotocol="wirekit.test")
        server = await _app(Pipeline(codecs="msgpack")).start(
            "ws://127.0.0.1:0/", websocket=options
        )
        try:
            bad = await node_session(
                server.url,
                [{"binary": base64.b64encode(b"\xc1").decode()}, {"expect": 1}],
                "--protocol",
                "wirekit.test",
            )
            foreign = await node_session(
                server.url, [], "--protocol", "wirekit.test", "--origin", "https://evil.example"
            )
            same = await node_session(
                server.url,
                [{"close": 1000}],
                "--protocol",
                "wirekit.test",
                "--origin",
                f"http://127.0.0.1:{server.endpoint.port}",
            )
            return bad, foreign, same
        finally:
            await server.close()

    bad, foreign, same = run(main(), timeout=30)
    assert bad[0] == {"open": True, "protocol": "wirekit.test"}
    assert bad[-1] == {"close": 1007, "reason": "DecodeError"}
    assert foreign == [{"error": "unexpected response 403"}]
    assert same[0] == {"open": True, "protocol": "wirekit.test"}
