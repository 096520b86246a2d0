"""asyncio Streams echo: ``readexactly`` the header and payload, ``write`` + ``drain`` per frame."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct

HEADER = struct.Struct(">I")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo frames one at a time until the peer closes."""
    unpack = HEADER.unpack
    try:
        while True:
            header = await reader.readexactly(4)
            payload = await reader.readexactly(unpack(header)[0])
            writer.write(header + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def main(port: int) -> None:
    """Listen, announce the port, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    asyncio.run(main(parser.parse_args().port))
