"""Thread per connection, blocking sockets: read header and payload, ``sendall`` per frame."""

from __future__ import annotations

import argparse
import socket
import struct
import threading

HEADER = struct.Struct(">I")


def handle(conn: socket.socket) -> None:
    """Echo frames one at a time until the peer closes."""
    unpack = HEADER.unpack
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rfile = conn.makefile("rb")
    try:
        while True:
            header = rfile.read(4)
            if len(header) < 4:
                return
            payload = rfile.read(unpack(header)[0])
            conn.sendall(header + payload)
    except OSError:
        pass
    finally:
        rfile.close()
        conn.close()


def main(port: int) -> None:
    """Listen, announce the port, start a thread per accepted connection."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    print("ready", listener.getsockname()[1], flush=True)
    while True:
        conn, _addr = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    main(parser.parse_args().port)
