"""The game packet from the original socket notes, and its relayed form."""

from __future__ import annotations

import attrs

from framework import message

__all__ = ["Position", "Relayed"]


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
