"""Hand-written asyncio newline echo: all lines of a chunk split in one pass, one ``write``.

``--utf8`` decodes every line to ``str`` and encodes it back, as a text
protocol's handler would see it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal


class Lines(asyncio.Protocol):
    """Echo each complete line."""

    utf8 = False

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        if self.pending:
            data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if not lines:
            return
        if self.utf8:
            texts = [line.decode("utf-8") for line in lines]
            self.transport.write(b"".join([text.encode("utf-8") + b"\n" for text in texts]))
        else:
            lines.append(b"")
            self.transport.write(b"\n".join(lines))


class TextLines(Lines):
    """Decode and re-encode every line as UTF-8."""

    utf8 = True


async def main(port: int, utf8: bool) -> None:
    """Listen, announce the port, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TextLines if utf8 else Lines, "127.0.0.1", port)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--utf8", action="store_true", help="decode and re-encode each line")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.utf8))
