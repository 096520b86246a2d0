"""Raw WebSocket and HTTP peers for the WebSocket suites: bytes on a socket, nothing hidden.

The ``websockets`` client checks what a well-behaved peer sees; these send
exactly the bytes a test chooses (unmasked frames, bad UTF-8, half a
request) and read the server's frames one by one.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import attrs
from websockets.frames import Frame, Opcode

from framework.core.endpoints import parse_url

__all__ = [
    "RawWebSocket",
    "ServerFrame",
    "counted_echoes",
    "http_request",
    "open_raw_websocket",
    "server_frame_size",
    "upgrade_request",
]


def upgrade_request(host: str, port: int, path: str = "/", *, extra: str = "") -> bytes:
    """A WebSocket upgrade request, as a browser or a library sends it."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


@attrs.frozen
class ServerFrame:
    """A frame the server sent: its opcode and payload (servers never mask)."""

    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        """The close code of a close frame."""
        assert self.opcode == Opcode.CLOSE
        return int(struct.unpack("!H", self.payload[:2])[0])


@attrs.define
class RawWebSocket:
    """One TCP connection that has done (or tries) a WebSocket handshake by hand."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    response: bytes = b""

    def send_frame(
        self, opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True
    ) -> None:
        """Write one frame (masked, as a client must, unless ``mask=False``)."""
        frame = Frame(Opcode(opcode), payload, fin=fin)
        self.writer.write(frame.serialize(mask=mask))

    async def read_frame(self) -> ServerFrame:
        """The server's next frame."""
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return ServerFrame(head[0] & 0x0F, await self.reader.readexactly(length))

    async def read_until_close(self) -> ServerFrame:
        """Skip the server's frames up to its close frame; return that."""
        while True:
            frame = await self.read_frame()
            if frame.opcode == Opcode.CLOSE:
                return frame

    async def closed_by_server(self) -> bool:
        """Whether the server closes the TCP connection (read to its end)."""
        while await self.reader.read(65536):
            pass
        return True

    def close(self) -> None:
        self.writer.close()


async def open_raw_websocket(url: str, *, extra: str = "", path: str | None = None) -> RawWebSocket:
    """Connect to a ``ws://`` URL and do the handshake by hand (asserting it succeeded)."""
    endpoint = parse_url(url)
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    writer.write(
        upgrade_request(endpoint.host, endpoint.port, path or endpoint.path or "/", extra=extra)
    )
    response = await reader.readuntil(b"\r\n\r\n")
    raw = RawWebSocket(reader, writer, response)
    assert response.startswith(b"HTTP/1.1 101 "), response
    return raw


async def http_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request; the status, headers (lower-case names) and body."""
    endpoint = parse_url(url)
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(request)
        data = await reader.read(-1)  # the server closes after one answer
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def server_frame_size(payload: int) -> int:
    """The bytes of an unmasked (server) frame with a ``payload``-byte payload."""
    return 2 + (0 if payload < 126 else 2 if payload < 1 << 16 else 8) + payload


async def counted_echoes(url: str, payloads: list[bytes]) -> tuple[int, int]:
    """A whole WebSocket by hand, against an echo: the bytes written and the bytes read.

    The handshake, each payload as a binary message and its echo read back,
    a 1000 close, then the server's close and the end of the stream: every
    byte either way, for counters that must match exactly.
    """
    endpoint = parse_url(url)
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        request = upgrade_request(endpoint.host, endpoint.port, endpoint.path or "/")
        writer.write(request)
        written = len(request)
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101 "), response
        read = len(response)
        raw = RawWebSocket(reader, writer, response)
        for payload in payloads:
            frame = Frame(Opcode.BINARY, payload).serialize(mask=True)
            writer.write(frame)
            written += len(frame)
            echo = await raw.read_frame()
            assert (echo.opcode, echo.payload) == (Opcode.BINARY, payload)
            read += server_frame_size(len(payload))
        close = Frame(Opcode.CLOSE, struct.pack("!H", 1000)).serialize(mask=True)
        writer.write(close)
        written += len(close)
        read += len(await reader.read(-1))  # the server's close frame, then the end
    finally:
        writer.close()
    return written, read
