"""Endpoint URLs: ``tcp://host:port``, ``udp://host:port``, ``unix:///path``,
``tls://host:port``, ``ws://host:port[/path]`` and ``wss://host:port[/path]``
(WebSocket, plain and over TLS), and the in-process ``memory://name`` (a
stream), ``memory+udp://name`` (datagrams) and ``memory+ws://name[/path]``
(a WebSocket over an in-process stream) that tests use.

A WebSocket URL's path is where the upgrade is accepted (``/`` when none is
given); every other endpoint is a bare address, with no path or query.

IPv6 literals go in brackets (``tcp://[::1]:9000``); port 0 asks the system
for a free port, and servers report the bound address back as a URL.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import unquote

import attrs

from framework.core.errors import ConfigError

__all__ = ["SCHEMES", "WEBSOCKET_SCHEMES", "Endpoint", "parse_url"]

Scheme = Literal["tcp", "udp", "unix", "tls", "memory", "memory+udp", "ws", "wss", "memory+ws"]
#: The schemes wirekit understands, with whether each carries a byte stream.
#: A WebSocket carries messages (one message is one frame), not a stream.
SCHEMES: dict[str, bool] = {
    "tcp": True,
    "tls": True,
    "unix": True,
    "memory": True,
    "udp": False,
    "memory+udp": False,
    "ws": False,
    "wss": False,
    "memory+ws": False,
}
#: The WebSocket schemes: messages over a TCP (``ws``) or TLS (``wss``)
#: connection, or (``memory+ws``, for tests and fault injection) over an
#: in-process stream named by the URL's host.
WEBSOCKET_SCHEMES = ("ws", "wss", "memory+ws")
# Schemes whose address is a name in this process, not a host and port.
_NAMED = ("memory", "memory+udp")
# Characters of URL syntax (userinfo, brackets) that a bare host never holds.
_NOT_IN_HOST = frozenset("@[]\\")


@attrs.frozen
class Endpoint:
    """A parsed endpoint URL."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_stream(self) -> bool:
        """Whether the transport carries a byte stream (all but UDP and WebSocket)."""
        return SCHEMES[self.scheme]

    @property
    def is_websocket(self) -> bool:
        """Whether this is a ``ws://`` or ``wss://`` endpoint: messages, one per frame."""
        return self.scheme in WEBSOCKET_SCHEMES

    @property
    def url(self) -> str:
        """The endpoint written back as a URL."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.scheme in _NAMED:
            return f"{self.scheme}://{self.path}"
        if self.scheme == "memory+ws":
            return f"memory+ws://{self.host}{self.path if self.path != '/' else ''}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        # A WebSocket's default path "/" is left out, as browsers write it.
        path = self.path if self.path not in ("", "/") else ""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __str__(self) -> str:
        return self.url


def _fail(url: str, part: str, problem: str) -> ConfigError:
    return ConfigError(f"bad endpoint URL {url!r}: {part} {problem}", option="url", value=url)


def parse_url(url: str) -> Endpoint:
    """Parse an endpoint URL; a malformed one raises ``ConfigError`` naming the bad part."""
    if not isinstance(url, str):
        raise ConfigError(f"an endpoint URL must be a string, got {url!r}", option="url")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _fail(url, "scheme", "is missing (expected e.g. tcp://127.0.0.1:9000)")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise _fail(url, f"scheme {scheme!r}", f"is unknown; use one of {', '.join(SCHEMES)}")
    if scheme == "unix":
        if not rest.startswith("/") and not rest.startswith("@"):
            raise _fail(url, "path", "must be absolute (unix:///run/app.sock)")
        return Endpoint("unix", path=unquote(rest))
    if scheme == "memory+ws":
        name, path = _split_path(url, rest)
        if not name:
            raise _fail(url, "name", "is empty (memory+ws://NAME[/PATH])")
        return Endpoint("memory+ws", host=name, path=path)
    if scheme in _NAMED:
        if not rest:
            raise _fail(url, "name", f"is empty ({scheme}://NAME)")
        return Endpoint(scheme, path=rest)  # type: ignore[arg-type]
    path = ""
    if scheme in WEBSOCKET_SCHEMES:
        rest, path = _split_path(url, rest)
    if "/" in rest or "?" in rest or "#" in rest:
        raise _fail(url, "address", "must be host:port with no path or query")
    host, port_text = _split_host_port(url, rest)
    if not port_text:
        raise _fail(url, "port", "is missing")
    # int() would also take " 80", "+80", "1_000" and non-ASCII digits.
    if not (port_text.isascii() and port_text.isdigit()):
        raise _fail(url, f"port {port_text!r}", "is not a number")
    port = int(port_text, 10)
    if not 0 <= port <= 65535:
        raise _fail(url, f"port {port}", "is out of range 0-65535")
    return Endpoint(scheme, host=host, port=port, path=path)  # type: ignore[arg-type]


def _split_path(url: str, rest: str) -> tuple[str, str]:
    """A WebSocket URL's address and path (``/`` when none is given)."""
    slash = rest.find("/")
    address, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if "?" in path or "#" in path:
        raise _fail(url, "path", "must have no query or fragment")
    if any(char.isspace() or not char.isprintable() or not char.isascii() for char in path):
        raise _fail(url, f"path {path!r}", "must be printable ASCII without spaces")
    return address, path


def _split_host_port(url: str, rest: str) -> tuple[str, str]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise _fail(url, "host", "has an unclosed '['")
        host = rest[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail(url, f"host [{host}]", "is not an IPv6 address") from None
        after = rest[end + 1 :]
        if not after.startswith(":"):
            raise _fail(url, "port", "is missing")
        return host, after[1:]
    host, sep, port = rest.rpartition(":")
    if not sep:
        raise _fail(url, "port", "is missing")
    if not host:
        raise _fail(url, "host", "is missing")
    if ":" in host:
        raise _fail(url, f"host {host!r}", "is an IPv6 address: write it in brackets")
    if any(char.isspace() or char in _NOT_IN_HOST for char in host):
        raise _fail(url, f"host {host!r}", "is not a host name or an IP address")
    return host, port
