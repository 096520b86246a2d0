"""The relay server: every position a player sends goes to every other player.

A player is a connection (TCP, Unix, TLS) or a peer address (UDP) that has
joined; the players are a group (:attr:`framework.App.groups`), so every
relay on one backplane is one session: players joined on different relays
see each other's positions, and their numbers stay unique
(:class:`PlayerNumbers`). The relay forwards as it receives: ordering and
loss over UDP are the receiver's business (see :mod:`protocols.game.tracker`).

A spectator is a player that sends no positions: it joins as any player
does, gets a number, and receives every other player's positions. The game
page (``protocols/web/game``) watches the relay that way. A served
connection whose peer sends nothing for ``idle_timeout`` is closed, so a
spectator sends ``Join`` again now and then: a joined player's join is
answered with the same ``Welcome`` and changes nothing else.

Joining is a two-step handshake, as QUIC's Retry and DTLS's
HelloVerifyRequest are: the relay answers a ``Join`` without a valid cookie
with a ``Challenge`` holding a cookie (an HMAC of the peer's address and the
time, under a secret only the relay knows, or that the relays of one
session share: ``cookie_secret``), and admits the peer when it sends that
cookie back. A peer that echoes the cookie receives what is sent
to its address, so the relay marks the address verified and may send it
far more than it sends (every other player's positions) without being a
reflection amplifier for a spoofed address. The relay keeps no state
between the two steps.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from framework import App, ConfigError, Connection, Pipeline
from protocols.game.messages import COOKIE_SIZE, Challenge, Join, Position, Relayed, Welcome
from protocols.web import pages

__all__ = [
    "COOKIE_LIFETIME",
    "DEFAULT_URL",
    "PLAYERS",
    "JoinCookies",
    "PlayerNumbers",
    "create_app",
    "default_pipeline",
]

#: Games default to UDP: a lost position is replaced by the next one anyway.
DEFAULT_URL = "udp://127.0.0.1:9100"
#: Seconds a join cookie stays valid: a round trip, with room for a slow start.
COOKIE_LIFETIME = 30.0

#: The group of every player, with its number as data.
PLAYERS = "players"

_TAG_SIZE = COOKIE_SIZE - 8
_BLOCK = 1 << 16


class PlayerNumbers:
    """Player numbers unique across relays: a block of 65,535 numbers per relay.

    A relay numbers its players ``block * 65536 + 1``, ``+ 2``, ... A block
    is drawn at random (1 to 65535) at the first join, after the fork of a
    worker, and drawn again while presence shows another relay's players
    in it; numbers still in use are skipped. Two relays that draw the same
    block within one backplane round trip can give out the same number:
    a chance of 1 in 65,535 per pair of relays started together.
    """

    __slots__ = ("_block", "_next", "_random")

    def __init__(self, random: Callable[[], int] | None = None) -> None:
        self._random = random if random is not None else lambda: 1 + secrets.randbelow(_BLOCK - 1)
        self._block: int | None = None
        self._next = 1

    def next(self, ours: set[Any], theirs: set[Any]) -> int:
        """A number in use neither here (``ours``) nor on the other relays (``theirs``)."""
        taken = ours | theirs
        blocks = {number // _BLOCK for number in theirs if type(number) is int}
        if self._block is None or self._block in blocks:
            self._block = self._draw(blocks)
            self._next = 1
        for _ in range(_BLOCK - 1):
            number = self._block * _BLOCK + self._next
            self._next = self._next % (_BLOCK - 1) + 1
            if number not in taken:
                return number
        # 65,535 players on this relay: another block.
        self._block = self._draw(blocks | {self._block})
        self._next = 1
        return self.next(ours, theirs | {self._block * _BLOCK})

    def _draw(self, used: set[int]) -> int:
        for _ in range(1000):
            block = self._random()
            if block not in used:
                return block
        raise ConfigError("no free block of player numbers left", option="players")


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


def create_app(
    pipeline: Pipeline | None = None,
    *,
    cookies: JoinCookies | None = None,
    cookie_secret: str | bytes | None = None,
    backplane: str = "memory://",
) -> App:
    """A relay: one node of the game session on ``backplane``.

    ``pipeline`` must carry the five game messages (``default_pipeline()``
    does). ``cookies`` signs the join cookies; or give ``cookie_secret`` (at
    least 16 bytes; a str is taken as UTF-8, e.g. a config file's
    ``[options] cookie_secret``): relays that share it accept each other's
    cookies. Neither: a fresh random secret.
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
    if cookies is not None and cookie_secret is not None:
        raise ConfigError("give cookies or cookie_secret, not both", option="cookie_secret")
    if cookie_secret is not None:
        secret = cookie_secret.encode() if isinstance(cookie_secret, str) else cookie_secret
        if len(secret) < 16:
            raise ConfigError("cookie_secret must be at least 16 bytes", option="cookie_secret")
        cookies = JoinCookies(secret)
    # On a ws:// listener, the live view (protocols/web/game) watches as a spectator.
    app = App(
        pipeline,
        default_url=DEFAULT_URL,
        backplane=backplane,
        namespace="game",
        pages=pages("game"),
    )
    jar = cookies if cookies is not None else JoinCookies()
    groups = app.groups
    # Every node follows the players' presence: their numbers on every node.
    groups.track(PLAYERS)
    numbers = PlayerNumbers()

    @app.on(Join)
    def join(request: Join, conn: Connection) -> Challenge | Welcome:
        number: int | None = conn.state.get("player")
        if number is None:
            if not jar.check(conn.peer, request.cookie):
                # A first join is padded to about the challenge's size
                # (NO_COOKIE): answering a spoofed one amplifies nothing.
                return Challenge(jar.issue(conn.peer))
            _verify_address(conn)
            ours: set[Any] = set()
            theirs: set[Any] = set()
            for member in groups.members(PLAYERS):
                (ours if member.node == groups.node else theirs).add(member.data)
            number = conn.state["player"] = numbers.next(ours, theirs)
            groups.join(conn, PLAYERS, data=number)
        # Joining again (the welcome was lost) gets the same number.
        return Welcome(number)

    @app.on(Position)
    def moved(position: Position, conn: Connection) -> Challenge | None:
        number = conn.state.get("player")
        if number is None:
            # Not a player, or forgotten after idle_timeout: tell it to join.
            return Challenge(jar.issue(conn.peer))
        # Every other player, on every node; one not reading its updates
        # misses them until it catches up: the next position supersedes
        # this one anyway.
        groups.publish(PLAYERS, Relayed(number, position), exclude=conn)
        return None

    @app.on(object)
    def unexpected(value: Any, conn: Connection) -> None:
        # Clients send joins and positions only; anything else is ignored, not fatal.
        return None

    return app
