"""The game packet from the original socket notes, its relayed form, and the join handshake."""

from __future__ import annotations

import attrs

from framework import message

__all__ = ["COOKIE_SIZE", "NO_COOKIE", "Challenge", "Join", "Position", "Relayed", "Welcome"]

#: Bytes in a join cookie: an 8-byte issue time and a 16-byte HMAC tag.
COOKIE_SIZE = 24
#: The cookie of a first join, before the relay has sent one. It pads the
#: join to nearly the size of the challenge that answers it (44 and 49 bytes
#: in msgpack, 28 and 28 in game-binary): answering a spoofed join gives an
#: attacker nothing to amplify.
NO_COOKIE = bytes(COOKIE_SIZE)


@message("position")
@attrs.frozen
class Position:
    """Where a player is (``x``, ``y``, ``z``) and its per-sender sequence number ``count``."""

    x: float
    y: float
    z: float
    count: int


@message("relayed")
@attrs.frozen
class Relayed:
    """A ``position`` forwarded by the relay, tagged with the sender's player number."""

    player: int
    position: Position


@message("join")
@attrs.frozen
class Join:
    """A player asks to join; ``cookie`` echoes the relay's :class:`Challenge`."""

    cookie: bytes = NO_COOKIE


@message("challenge")
@attrs.frozen
class Challenge:
    """The relay's answer to a join without a valid cookie: send this cookie back."""

    cookie: bytes


@message("welcome")
@attrs.frozen
class Welcome:
    """The relay accepted the join: ``player`` is this player's number."""

    player: int
