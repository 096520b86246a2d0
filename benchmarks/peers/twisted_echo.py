"""Twisted echo: ``Int32StringReceiver`` (length prefix), or ``LineOnlyReceiver`` with ``--lines``.

Twisted is an optional benchmark dependency (``pip install twisted``); without
it this script exits with status 3 and says so.
"""

from __future__ import annotations

import argparse
import sys

try:
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import Int32StringReceiver, LineOnlyReceiver
except ImportError:
    print("twisted is not installed", file=sys.stderr)
    raise SystemExit(3) from None


class Echo(Int32StringReceiver):
    """Send every string straight back."""

    MAX_LENGTH = 16 * 1024 * 1024  # the default (99,999) is below the large-frame scenarios

    def connectionMade(self):  # noqa: N802 - Twisted names its callbacks
        self.transport.setTcpNoDelay(True)

    def stringReceived(self, string):  # noqa: N802
        self.sendString(string)


class Lines(LineOnlyReceiver):
    """Send every line straight back."""

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024

    def connectionMade(self):  # noqa: N802 - Twisted names its callbacks
        self.transport.setTcpNoDelay(True)

    def lineReceived(self, line):  # noqa: N802
        self.sendLine(line)


def main(port: int, lines: bool) -> None:
    """Listen, announce the port, run the reactor (it stops on SIGTERM/SIGINT)."""
    factory = protocol.Factory.forProtocol(Lines if lines else Echo)
    listening = reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    print("ready", listening.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--lines", action="store_true", help="newline framing")
    args = parser.parse_args()
    main(args.port, args.lines)
