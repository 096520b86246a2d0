"""msgpack-RPC: our server and client, the command line, and Neovim as an independent peer."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from framework.runtime import Connection
from protocols.rpc import NOTIFICATION, RemoteError, RpcClient, RpcServer

ROOT = Path(__file__).resolve().parents[2]
NVIM = shutil.which("nvim")
needs_nvim = pytest.mark.skipif(
    NVIM is None, reason="Neovim (an independent msgpack-RPC peer) is not installed"
)


def make_server() -> RpcServer:
    server = RpcServer()

    @server.method()
    def add(a: int, b: int) -> int:
        return a + b

    @server.method("sleep_then")
    async def sleep_then(seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value

    @server.method()
    def fail() -> None:
        raise ValueError("nope")

    server.notes = []  # type: ignore[attr-defined]

    @server.method()
    def note(text: str) -> None:
        server.notes.append(text)  # type: ignore[attr-defined]

    return server


def run(scenario: Callable[[str], Awaitable[None]], url: str = "tcp://127.0.0.1:0") -> None:
    async def main() -> None:
        server = make_server()
        running = await server.app.start(url)
        try:
            await scenario(running.url)
        finally:
            await running.close()

    asyncio.run(main())


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_call_returns_the_result(scheme: str, tmp_path: Path) -> None:
    url = "tcp://127.0.0.1:0" if scheme == "tcp" else f"unix://{tmp_path}/rpc.sock"

    async def scenario(url: str) -> None:
        async with await RpcClient.open(url) as client:
            assert await client.call("add", 2, 3) == 5

    run(scenario, url)


def test_many_calls_in_flight_are_answered_as_they_finish() -> None:
    async def scenario(url: str) -> None:
        async with await RpcClient.open(url) as client:
            finished: list[int] = []

            async def call(index: int) -> Any:
                # The first call is slow, the 19 after it answer at once. The
                # gap is wide so that a loaded machine cannot reorder it.
                result = await client.call("sleep_then", 1.0 if index == 0 else 0.0, index)
                finished.append(result)
                return result

            results = await asyncio.gather(*(call(i) for i in range(20)))
            assert results == list(range(20))  # each caller got its own answer
            assert sorted(finished[:-1]) == list(range(1, 20))
            assert finished[-1] == 0, "the slow call held up the fast ones"

    run(scenario)


def test_errors_are_responses_and_the_connection_goes_on() -> None:
    async def scenario(url: str) -> None:
        async with await RpcClient.open(url) as client:
            with pytest.raises(RemoteError, match="unknown method") as unknown:
                await client.call("missing")
            assert unknown.value.method == "missing"
            with pytest.raises(RemoteError, match="wrong arguments"):
                await client.call("add", 1)
            with pytest.raises(RemoteError, match="ValueError: nope"):
                await client.call("fail")
            assert await client.call("add", 1, 1) == 2

    run(scenario)


def test_call_times_out() -> None:
    async def scenario(url: str) -> None:
        async with await RpcClient.open(url) as client:
            with pytest.raises(TimeoutError):
                await client.call("sleep_then", 1.0, None, timeout=0.05)
            assert await client.call("add", 0, 0) == 0

    run(scenario)


def test_notifications_travel_both_ways() -> None:
    async def main() -> None:
        server = make_server()

        @server.app.on_connect
        def greet(conn: Connection) -> None:
            conn.send_nowait([NOTIFICATION, "hello", ["from the server"]])

        running = await server.app.start("tcp://127.0.0.1:0")
        heard: asyncio.Queue[str] = asyncio.Queue()
        try:
            async with await RpcClient.open(running.url) as client:

                @client.method()
                def hello(text: str) -> None:
                    heard.put_nowait(text)

                assert await asyncio.wait_for(heard.get(), 2) == "from the server"
                await client.notify("note", "from the client")
                await client.call("add", 0, 0)  # a round trip: the notification arrived first
                assert server.notes == ["from the client"]  # type: ignore[attr-defined]
        finally:
            await running.close()

    asyncio.run(main())


def test_malformed_messages_are_ignored_not_fatal() -> None:
    async def scenario(url: str) -> None:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        for junk in ({"a": 1}, [9, 9], [0, "not-an-id", "add", [1, 2]], [2, "note"]):
            writer.write(msgpack.packb(junk))
        writer.write(msgpack.packb([0, 7, "add", [1, 2]]))
        await writer.drain()
        unpacker = msgpack.Unpacker()
        while True:
            unpacker.feed(await asyncio.wait_for(reader.read(1024), 2))
            for message in unpacker:
                assert message == [1, 7, None, 3]
                writer.close()
                return

    run(scenario)


def wirekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        check=False,
    )


def test_command_line_prints_the_result_as_json_and_errors_as_one_line() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "framework", "serve", "protocols.rpc", "--url", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            ok = wirekit("rpc", url, "add", "[1]", "[2, 3]")
            assert ok.returncode == 0, ok.stderr
            assert json.loads(ok.stdout) == [1, 2, 3]
            assert json.loads(wirekit("rpc", url, "ping").stdout) == "pong"
            bad = wirekit("rpc", url, "nope")
            assert bad.returncode == 1
            assert bad.stderr.strip().splitlines() == [
                "wirekit: error: remote error from nope: unknown method: 'nope'"
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_nvim
def test_our_client_calls_neovim() -> None:
    assert NVIM is not None
    port = free_port()
    with subprocess.Popen(
        [NVIM, "--headless", "--clean", "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as nvim:
        try:

            async def scenario() -> None:
                for _ in range(100):  # Neovim needs a moment to listen
                    try:
                        client = await RpcClient.open(f"tcp://127.0.0.1:{port}")
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
                else:
                    pytest.fail("Neovim did not start listening")
                async with client:
                    assert await client.call("nvim_eval", "6 * 7") == 42
                    results = await asyncio.gather(
                        *(client.call("nvim_eval", f"{i} + 1") for i in range(50))
                    )
                    assert results == [i + 1 for i in range(50)]
                    with pytest.raises(RemoteError, match="E121"):
                        await client.call("nvim_eval", "no_such_variable")

            asyncio.run(scenario())
        finally:
            nvim.terminate()
            nvim.wait(timeout=10)


@needs_nvim
def test_neovim_calls_our_server(tmp_path: Path) -> None:
    assert NVIM is not None
    out = tmp_path / "result.json"

    async def scenario(url: str) -> None:
        address = url.removeprefix("tcp://")
        script = (
            f"let ch = sockconnect('tcp', '{address}', {{'rpc': v:true}})\n"
            "let r = [rpcrequest(ch, 'add', 40, 2), rpcrequest(ch, 'sleep_then', 0, 'x')]\n"
            "try\n  call rpcrequest(ch, 'missing')\ncatch\n  call add(r, 'error')\nendtry\n"
            f"call writefile([json_encode(r)], '{out}')\n"
            "qa!\n"
        )
        (tmp_path / "script.vim").write_text(script)
        proc = await asyncio.create_subprocess_exec(
            NVIM,
            "--headless",
            "--clean",
            "-S",
            str(tmp_path / "script.vim"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.wait_for(proc.wait(), 15)

    started = time.monotonic()
    run(scenario)
    assert time.monotonic() - started < 20
    assert json.loads(out.read_text()) == [42, "x", "error"]
