"""Hand-written asyncio ``Protocol`` echo: 4-byte big-endian length prefix.

Every complete frame of a received chunk is cut in one pass and the replies
go out in one ``write``. ``--msgpack`` decodes and re-encodes each payload
(the hand-written counterpart of a typed echo).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct

import msgpack
from _loops import run_on_loop

HEADER = struct.Struct(">I")


class Echo(asyncio.Protocol):
    """Cut frames, reply with each payload (or its msgpack round trip)."""

    recode = False

    def connection_made(self, transport):
        self.transport = transport
        self.pending = bytearray()
        self.need = 4

    def data_received(self, data):
        pending = self.pending
        if pending:
            pending += data
            if len(pending) < self.need:
                return
            buf = bytes(pending)
            pending.clear()
        else:
            buf = data
        unpack = HEADER.unpack_from
        pack = HEADER.pack
        recode = self.recode
        out = []
        pos = 0
        end = len(buf)
        self.need = 4
        while end - pos >= 4:
            length = unpack(buf, pos)[0]
            stop = pos + 4 + length
            if stop > end:
                self.need = 4 + length
                break
            payload = buf[pos + 4 : stop]
            if recode:
                payload = msgpack.packb(msgpack.unpackb(payload))
            out.append(pack(len(payload)))
            out.append(payload)
            pos = stop
        if pos < end:
            pending += memoryview(buf)[pos:]
        if out:
            self.transport.write(b"".join(out))


class MsgpackEcho(Echo):
    """Decode and re-encode every payload with msgpack."""

    recode = True


async def main(port: int, recode: bool) -> None:
    """Listen, announce the port, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    # asyncio sets TCP_NODELAY on its TCP transports itself.
    server = await loop.create_server(MsgpackEcho if recode else Echo, "127.0.0.1", port)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--msgpack", action="store_true", help="decode and re-encode payloads")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    run_on_loop(main(args.port, args.msgpack), args.uvloop)
