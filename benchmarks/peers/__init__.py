"""Peer servers for the I/O benchmark (``python -m benchmarks io``).

Each module is a standalone script, run as ``python benchmarks/peers/NAME.py
[PORT] [options]``: it listens on 127.0.0.1 (port 0 lets the OS choose),
prints ``ready PORT`` once listening, and echoes until terminated. None of
them imports :mod:`benchmarks`; only ``wirekit_echo`` imports wirekit.

- ``asyncio_echo``: hand-written ``asyncio.Protocol``, length-prefix,
  every frame of a chunk parsed in one pass (``--msgpack``: each payload
  decoded and re-encoded);
- ``streams_echo``: asyncio Streams, ``readexactly`` + ``drain`` per frame;
- ``threads_echo``: a thread per connection, blocking sockets;
- ``twisted_echo``: Twisted ``Int32StringReceiver`` (``--lines``:
  ``LineOnlyReceiver``);
- ``newline_echo``: hand-written newline echo (``--utf8``: decode and
  re-encode each line);
- ``udp_echo``: asyncio ``DatagramProtocol`` (``--read-size``), or a
  blocking ``recvfrom`` loop (``--blocking``);
- ``wirekit_echo``: the wirekit apps, through ``framework.App``.
"""
