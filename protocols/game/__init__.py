"""The game protocol: the position packet from the original socket notes.

A relay server forwards every ``position`` (x, y, z, count) a player sends to
every other player that has joined (a two-step handshake whose cookie
verifies a UDP player's address; see :mod:`protocols.game.relay`). It runs
over UDP by default and over TCP by config, with no code change; the codec
is msgpack or the fixed 16-byte ``game-binary`` layout, also by config::

    wirekit serve protocols.game                      # udp://127.0.0.1:9100
    wirekit serve protocols.game --url tcp://127.0.0.1:9100 --codec game-binary
"""

from __future__ import annotations

from framework import register_codec
from protocols.game.binary import GameBinaryCodec
from protocols.game.client import join
from protocols.game.messages import NO_COOKIE, Challenge, Join, Position, Relayed, Welcome
from protocols.game.relay import (
    DEFAULT_URL,
    PLAYERS,
    JoinCookies,
    PlayerNumbers,
    create_app,
    default_pipeline,
)
from protocols.game.tracker import SequenceTracker

__all__ = [
    "DEFAULT_URL",
    "NO_COOKIE",
    "PLAYERS",
    "Challenge",
    "GameBinaryCodec",
    "Join",
    "JoinCookies",
    "PlayerNumbers",
    "Position",
    "Relayed",
    "SequenceTracker",
    "Welcome",
    "app",
    "create_app",
    "default_pipeline",
    "join",
]

register_codec("game-binary", GameBinaryCodec)

#: The relay served by ``wirekit serve protocols.game``.
app = create_app()
