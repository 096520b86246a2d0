"""UDP echo: an asyncio ``DatagramProtocol`` (``--read-size`` sets the transport's
read size; asyncio's default is 256 KiB), or a blocking ``recvfrom`` loop (``--blocking``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from _loops import run_on_loop


class Echo(asyncio.DatagramProtocol):
    """Send every datagram back to where it came from."""

    def __init__(self, read_size: int | None) -> None:
        self.read_size = read_size

    def connection_made(self, transport):
        self.transport = transport
        if self.read_size is not None:
            transport.max_size = self.read_size  # asyncio's recvfrom() size

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve(port: int, read_size: int | None) -> None:
    """Bind, announce the port, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Echo(read_size), local_addr=("127.0.0.1", port)
    )
    print("ready", transport.get_extra_info("sockname")[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    transport.close()


def blocking(port: int) -> None:
    """A plain ``recvfrom``/``sendto`` loop (ends on SIGTERM's default action)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("ready", sock.getsockname()[1], flush=True)
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    while True:
        data, addr = recvfrom(65536)
        sendto(data, addr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--blocking", action="store_true", help="a blocking recvfrom loop")
    parser.add_argument("--read-size", type=int, help="bytes per recvfrom (asyncio)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.blocking:
        blocking(args.port)
    else:
        run_on_loop(serve(args.port, args.read_size), args.uvloop)
