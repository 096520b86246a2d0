"""The relay server: every position a player sends goes to every other player.

A player is a connection (TCP, Unix, TLS) or a peer address (UDP) that has
joined; all the players of one server share its session. The relay
forwards as it receives: ordering and loss over UDP are the receiver's
business (see :mod:`protocols.game.tracker`).

A spectator is a player that sends no positions: it joins as any player
does, gets a number, and receives every other player's positions. The game
page (``protocols/web/game``) watches the relay that way. A served
connection whose peer sends nothing for ``idle_timeout`` is closed, so a
spectator sends ``Join`` again now and then: a joined player's join is
answered with the same ``Welcome`` and changes nothing else.

Joining is a two-step handshake, as QUIC's Retry and DTLS's
HelloVerifyRequest are: the relay answers a ``Join`` without a valid cookie
with a ``Challenge`` holding a cookie (an HMAC of the peer's address and the
time, under a secret only the relay knows), and admits the peer when it
sends that cookie back. A peer that echoes the cookie receives what is sent
to its address, so the relay marks the address verified and may send it
far more than it sends (every other player's positions) without being a
reflection amplifier for a spoofed address. The relay keeps no state
between the two steps.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from framework import App, ConfigError, Connection, ConnectionClosed, Pipeline
from protocols.game.messages import COOKIE_SIZE, Challenge, Join, Position, Relayed, Welcome
from protocols.web import pages

__all__ = ["COOKIE_LIFETIME", "DEFAULT_URL", "JoinCookies", "create_app", "default_pipeline"]

#: Games default to UDP: a lost position is replaced by the next one anyway.
DEFAULT_URL = "udp://127.0.0.1:9100"
#: Seconds a join cookie stays valid: a round trip, with room for a slow start.
COOKIE_LIFETIME = 30.0

_TAG_SIZE = COOKIE_SIZE - 8


class JoinCookies:
    """Stateless join cookies: 8 bytes of issue time, then HMAC-SHA256(secret, address, time).

    ``secret`` defaults to 32 random bytes, so cookies die with the relay;
    share one secret between relays behind one address. ``clock`` is wall
    seconds.
    """

    __slots__ = ("_clock", "_secret", "lifetime")

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        lifetime: float = COOKIE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 16:
            raise ValueError("a cookie secret must be at least 16 bytes")
        self.lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:
        return f"JoinCookies(lifetime={self.lifetime})"

    def _tag(self, peer: Any, issued: bytes) -> bytes:
        return hmac.digest(self._secret, repr(peer).encode() + issued, "sha256")[:_TAG_SIZE]

    def issue(self, peer: Any) -> bytes:
        """A cookie for ``peer`` (its address), valid for ``lifetime`` seconds."""
        issued = int(self._clock()).to_bytes(8, "big")
        return issued + self._tag(peer, issued)

    def check(self, peer: Any, cookie: bytes) -> bool:
        """Whether ``cookie`` was issued to ``peer`` by this secret and has not expired."""
        if type(cookie) is not bytes or len(cookie) != COOKIE_SIZE:
            return False
        issued = cookie[:8]
        age = self._clock() - int.from_bytes(issued, "big")
        if not -1 <= age <= self.lifetime:  # a second of slack for rounding
            return False
        return hmac.compare_digest(cookie[8:], self._tag(peer, issued))


def default_pipeline() -> Pipeline:
    """Length-prefix + msgpack + the game messages (the framing only matters on streams)."""
    return Pipeline(
        framing="length-prefix",
        codecs="msgpack",
        messages=[Position, Relayed, Join, Challenge, Welcome],
    )


def _verify_address(conn: Connection) -> None:
    # A UDP peer's address is verified by the echoed cookie; a stream's by
    # the transport's own handshake (it has no verify_address to call).
    verify = getattr(conn, "verify_address", None)
    if verify is not None:
        verify()


def create_app(pipeline: Pipeline | None = None, *, cookies: JoinCookies | None = None) -> App:
    """A relay with its own session (its own set of players).

    ``pipeline`` must carry the five game messages (``default_pipeline()``
    does); ``cookies`` signs the join cookies (a fresh random secret by default).
    """
    pipeline = pipeline if pipeline is not None else default_pipeline()
    missing = [
        cls.__name__
        for cls in (Position, Relayed, Join, Challenge, Welcome)
        if pipeline.messages is None or cls not in pipeline.messages
    ]
    if missing:
        raise ConfigError(
            f"the relay's pipeline must carry every game message; missing: {', '.join(missing)}",
            option="messages",
        )
    # On a ws:// listener, the live view (protocols/web/game) watches as a spectator.
    app = App(pipeline, default_url=DEFAULT_URL, pages=pages("game"))
    jar = cookies if cookies is not None else JoinCookies()
    players: dict[Connection, int] = {}
    numbers = itertools.count(1)

    @app.on_disconnect
    def left(conn: Connection) -> None:
        players.pop(conn, None)

    @app.on(Join)
    def join(request: Join, conn: Connection) -> Challenge | Welcome:
        number = players.get(conn)
        if number is None:
            if not jar.check(conn.peer, request.cookie):
                # A first join is padded to about the challenge's size
                # (NO_COOKIE): answering a spoofed one amplifies nothing.
                return Challenge(jar.issue(conn.peer))
            _verify_address(conn)
            number = players[conn] = conn.state["player"] = next(numbers)
        # Joining again (the welcome was lost) gets the same number.
        return Welcome(number)

    @app.on(Position)
    def moved(position: Position, conn: Connection) -> Challenge | None:
        number = players.get(conn)
        if number is None:
            # Not a player, or forgotten after idle_timeout: tell it to join.
            return Challenge(jar.issue(conn.peer))
        update = Relayed(number, position)
        for other in list(players):
            if other is conn:
                continue
            if not other.can_send:
                # A player not reading its updates gets none until it catches
                # up: the next position supersedes this one anyway.
                other.state["dropped"] = other.state.get("dropped", 0) + 1
                continue
            try:
                other.send_nowait(update)
            except ConnectionClosed:
                players.pop(other, None)
        return None

    @app.on(object)
    def unexpected(value: Any, conn: Connection) -> None:
        # Clients send joins and positions only; anything else is ignored, not fatal.
        return None

    return app
