"""msgpack-RPC: requests, responses and notifications over a msgpack stream.

The wire format is the msgpack-RPC specification's, so wirekit talks to any
other implementation (Neovim's among them)::

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

Messages are msgpack arrays back to back, with no framing bytes
(``msgpack-stream``). Requests on one connection are answered as they finish,
so a slow method does not hold up a fast one. Serve the built-in methods
(``ping``, ``echo``, ``add``) with ``wirekit serve protocols.rpc``; call one
with ``wirekit rpc tcp://127.0.0.1:9200 add 1 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from framework import (
    App,
    Connection,
    ConnectionClosed,
    MsgpackCodec,
    MsgpackStream,
    Pipeline,
    WirekitError,
    connect,
)

__all__ = [
    "NOTIFICATION",
    "REQUEST",
    "RESPONSE",
    "RemoteError",
    "RpcClient",
    "RpcServer",
    "app",
    "pipeline",
    "register",
]

log = logging.getLogger("wirekit.rpc")

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
#: Where `wirekit serve protocols.rpc` listens by default.
DEFAULT_URL = "tcp://127.0.0.1:9200"
_MSGID_LIMIT = 2**32  # msgids are uint32 on the wire


def pipeline() -> Pipeline:
    """The msgpack-RPC pipeline: self-delimiting msgpack values."""
    return Pipeline(framing=MsgpackStream(), codecs=[MsgpackCodec()])


class RemoteError(Exception):
    """The peer answered a call with an error; ``error`` is what it sent."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"{method}: {error}")
        self.method = method
        self.error = error


class _Methods:
    """A table of callable methods, sync or async, by name."""

    def __init__(self) -> None:
        self.table: dict[str, Callable[..., Any]] = {}

    def method(self, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: expose the function as ``name`` (default: its own name)."""

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.table[name or function.__name__] = function
            return function

        return register

    async def _invoke(self, name: Any, params: Any) -> Any:
        """Run a method; return the result or raise ``_CallFailed`` with the error to send."""
        function = self.table.get(name) if isinstance(name, str) else None
        if function is None:
            raise _CallFailed(f"unknown method: {name!r}")
        if not isinstance(params, list):
            raise _CallFailed(f"params must be an array, got {type(params).__name__}")
        try:
            inspect.signature(function).bind(*params)
        except TypeError as exc:
            raise _CallFailed(f"wrong arguments for {name}: {exc}") from None
        try:
            result = function(*params)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.info("method %s raised %s: %s", name, type(exc).__name__, exc)
            raise _CallFailed(f"{type(exc).__name__}: {exc}") from exc
        return result


class _CallFailed(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _answer(methods: _Methods, message: Any, conn: Connection) -> Any:
    """Handle a request or a notification; return the reply (or a coroutine of it)."""
    if not isinstance(message, list) or not message or message[0] not in (REQUEST, NOTIFICATION):
        log.info("%r: not a msgpack-RPC request or notification: %.80r", conn, message)
        return None
    if message[0] == NOTIFICATION:
        if len(message) != 3:
            log.info("%r: malformed notification: %.80r", conn, message)
            return None
        return _notified(methods, message[1], message[2])
    if len(message) != 4 or type(message[1]) is not int:
        log.info("%r: malformed request: %.80r", conn, message)
        return None
    return _respond(methods, message[1], message[2], message[3])


async def _respond(methods: _Methods, msgid: int, name: Any, params: Any) -> list[Any]:
    try:
        result = await methods._invoke(name, params)
    except _CallFailed as exc:
        return [RESPONSE, msgid, exc.error, None]
    return [RESPONSE, msgid, None, result]


async def _notified(methods: _Methods, name: Any, params: Any) -> None:
    with contextlib.suppress(_CallFailed):
        await methods._invoke(name, params)


class RpcServer(_Methods):
    """A msgpack-RPC server: register methods, then serve ``app`` on any stream URL."""

    def __init__(self) -> None:
        super().__init__()
        self.app = App(pipeline(), handler_errors="keep", default_url=DEFAULT_URL)
        self.app.on(list)(self._handle)
        self.app.on(object)(self._unexpected)

    def _handle(self, message: list[Any], conn: Connection) -> Any:
        return _answer(self, message, conn)

    def _unexpected(self, message: Any, conn: Connection) -> None:
        log.info("%r: ignoring a %s: msgpack-RPC messages are arrays", conn, type(message).__name__)


class RpcClient(_Methods):
    """A msgpack-RPC client: many calls in flight on one connection, matched by msgid.

    It answers requests and notifications from the server with its own
    methods (register them with :meth:`method`), so both sides can call.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str, **options: Any) -> RpcClient:
        """Connect to a msgpack-RPC server at ``url``."""
        return cls(await connect(url, pipeline(), **options))

    def _next_id(self) -> int:
        while True:
            msgid = next(self._ids) % _MSGID_LIMIT
            if msgid not in self._pending:
                return msgid

    async def call(self, method: str, *args: Any, timeout: float | None = 10.0) -> Any:
        """Call ``method`` and return its result; an error response raises ``RemoteError``."""
        msgid = self._next_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msgid] = (method, future)
        try:
            await self.conn.send([REQUEST, msgid, method, list(args)])
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._pending.pop(msgid, None)

    async def notify(self, method: str, *args: Any) -> None:
        """Send a notification: no response is expected."""
        await self.conn.send([NOTIFICATION, method, list(args)])

    async def _read(self) -> None:
        error: BaseException = ConnectionClosed("connection closed")
        try:
            while True:
                message = await self.conn.receive()
                if isinstance(message, list) and len(message) == 4 and message[0] == RESPONSE:
                    self._resolve(message[1], message[2], message[3])
                    continue
                reply = _answer(self, message, self.conn)
                if reply is not None:
                    self._spawn(reply)
        except ConnectionClosed as exc:
            error = exc
        finally:
            for _method, future in self._pending.values():
                if not future.done():
                    future.set_exception(error)

    def _spawn(self, reply: Any) -> None:
        async def send() -> None:
            answer = await reply
            if answer is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self.conn.send(answer)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resolve(self, msgid: Any, error: Any, result: Any) -> None:
        entry = self._pending.get(msgid)
        if entry is None:
            log.info("response to unknown msgid %r", msgid)
            return
        method, future = entry
        if future.done():
            return
        if error is not None:
            future.set_exception(RemoteError(method, error))
        else:
            future.set_result(result)

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionClosed``."""
        self.conn.close()
        await self.conn.wait_closed()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# -- the built-in server: `wirekit serve protocols.rpc` -------------------------------

_builtin = RpcServer()


@_builtin.method()
def ping() -> str:
    """Answer ``"pong"``."""
    return "pong"


@_builtin.method()
def echo(value: Any) -> Any:
    """Return the argument unchanged."""
    return value


@_builtin.method()
def add(a: Any, b: Any) -> Any:
    """Return ``a + b`` (numbers, strings or arrays)."""
    return a + b


#: The app served by ``wirekit serve protocols.rpc``.
app = _builtin.app


# -- `wirekit rpc URL METHOD [JSON_ARG ...]` ------------------------------------------


async def _call(url: str, method: str, args: list[Any], timeout: float) -> Any:
    async with await RpcClient.open(url, timeout=timeout) as client:
        return await client.call(method, *args, timeout=timeout)


def _run(args: argparse.Namespace) -> int:
    try:
        params = [json.loads(text) for text in args.args]
    except json.JSONDecodeError as exc:
        print(f"wirekit: error: an argument is not JSON: {exc.doc!r}", file=sys.stderr)
        return 1
    try:
        result = asyncio.run(_call(args.url, args.method, params, args.timeout))
    except RemoteError as exc:
        print(f"wirekit: error: remote error from {exc.method}: {exc.error}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"wirekit: error: no response within {args.timeout} s", file=sys.stderr)
        return 1
    except WirekitError as exc:
        print(f"wirekit: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=repr, ensure_ascii=False))
    return 0


def register(commands: Any) -> None:
    """Add ``wirekit rpc`` to the command line (a wirekit.commands entry point)."""
    parser = commands.add_parser("rpc", help="call a msgpack-RPC method and print the result")
    parser.add_argument("url", help="server endpoint (tcp://, unix://, tls://)")
    parser.add_argument("method", help="method name")
    parser.add_argument("args", nargs="*", help="arguments, each as JSON")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    parser.set_defaults(handler=_run)
