"""The relay server: every position a player sends goes to every other player.

A player is a connection (TCP, Unix, TLS) or a peer address (UDP); all the
players of one server share its session. The relay forwards as it receives:
ordering and loss over UDP are the receiver's business (see
:mod:`protocols.game.tracker`).
"""

from __future__ import annotations

import itertools
from typing import Any

from framework import App, Connection, ConnectionClosed, Pipeline
from protocols.game.messages import Position, Relayed

__all__ = ["DEFAULT_URL", "create_app", "default_pipeline"]

#: Games default to UDP: a lost position is replaced by the next one anyway.
DEFAULT_URL = "udp://127.0.0.1:9100"


def default_pipeline() -> Pipeline:
    """Length-prefix + msgpack + the game messages (the framing only matters on streams)."""
    return Pipeline(framing="length-prefix", codecs="msgpack", messages=[Position, Relayed])


def create_app(pipeline: Pipeline | None = None) -> App:
    """A relay with its own session (its own set of players)."""
    app = App(pipeline if pipeline is not None else default_pipeline(), default_url=DEFAULT_URL)
    players: dict[Connection, int] = {}
    numbers = itertools.count(1)

    @app.on_connect
    def joined(conn: Connection) -> None:
        players[conn] = conn.state["player"] = next(numbers)

    @app.on_disconnect
    def left(conn: Connection) -> None:
        players.pop(conn, None)

    @app.on(Position)
    def moved(position: Position, conn: Connection) -> None:
        update = Relayed(players[conn], position)
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

    @app.on(object)
    def unexpected(value: Any, conn: Connection) -> None:
        # Clients send positions only; anything else is ignored, not fatal.
        return None

    return app
