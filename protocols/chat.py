"""Chat: line-based text chat over TCP, usable from ``nc``, ``telnet`` or ``socat``.

::

    $ nc 127.0.0.1 9300
    * welcome, guest-1! you are in #lobby. commands: /nick NAME, /join ROOM, /who, /quit
    /nick ada
    * you are now ada
    hello
    ...

Every line is UTF-8 text ending in a newline (``\\r\\n`` works too). Lines a
peer sends go to everyone else in its room as ``<nick> text``; joins, leaves
and renames are announced with a leading ``*``; errors come back to the
sender only, with a leading ``!``. A line over 2 KiB or one that is not
UTF-8 is answered with an error line and skipped; the connection goes on.

Served on a ``ws://`` URL too, the same rooms have a web page (see
:mod:`protocols.web`): over WebSocket one message is one line, without its
newline.

A client that stops reading is disconnected once its send buffer is full
(the server's write high-water mark, 256 KiB by default): it would
otherwise hold every message for it in memory, and the others do not wait
for it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from typing import Any

import attrs

from framework import (
    App,
    Connection,
    ConnectionClosed,
    Delimited,
    FrameTooLarge,
    Pipeline,
    Utf8Codec,
    WirekitError,
)
from protocols.web import pages

__all__ = ["MAX_LINE", "ChatRoom", "app", "create_app", "pipeline"]

#: Longest line accepted, in bytes: a chat message, not a file transfer.
MAX_LINE = 2048
DEFAULT_ROOM = "lobby"
_NICK = re.compile(r"[A-Za-z0-9_\-]{1,24}")
_ROOM = re.compile(r"#?[A-Za-z0-9_\-]{1,32}")
HELP = "commands: /nick NAME, /join ROOM, /who, /quit"


def pipeline() -> Pipeline:
    """Newline framing (over-long lines skipped, not fatal) and strict UTF-8."""
    return Pipeline(
        framing=Delimited(max_frame_size=MAX_LINE, on_oversize="skip"), codecs=[Utf8Codec()]
    )


@attrs.define
class ChatRoom:
    """Who is in which room, by nickname."""

    members: dict[str, set[Connection]] = attrs.field(factory=dict)
    nicks: dict[str, Connection] = attrs.field(factory=dict)


def create_app() -> App:
    """A chat server with its own rooms."""
    # The page (protocols/web/chat) is served on ws:// listeners: one room for nc and browsers.
    app = App(
        pipeline(), handler_errors="keep", default_url="tcp://127.0.0.1:9300", pages=pages("chat")
    )
    rooms = ChatRoom()
    guests = itertools.count(1)

    def say(conn: Connection, line: str) -> None:
        if conn.closed:
            return
        if not conn.can_send:
            # Its buffer is full: it stopped reading. Do not let it hold the others.
            conn.abort()
            return
        with contextlib.suppress(ConnectionClosed):
            conn.send_nowait(line)

    def tell_room(room: str, line: str, *, besides: Connection | None = None) -> None:
        for member in list(rooms.members.get(room, ())):
            if member is not besides:
                say(member, line)

    def enter(conn: Connection, room: str) -> None:
        conn.state["room"] = room
        rooms.members.setdefault(room, set()).add(conn)
        tell_room(room, f"* {conn.state['nick']} joined #{room}", besides=conn)

    def leave(conn: Connection, reason: str) -> None:
        room: str = conn.state["room"]
        members = rooms.members.get(room, set())
        members.discard(conn)
        if not members:
            rooms.members.pop(room, None)
        tell_room(room, f"* {conn.state['nick']} {reason} #{room}")

    @app.on_connect
    def welcome(conn: Connection) -> None:
        nick = f"guest-{next(guests)}"
        while nick in rooms.nicks:
            nick = f"guest-{next(guests)}"
        conn.state["nick"] = nick
        rooms.nicks[nick] = conn
        say(conn, f"* welcome, {nick}! you are in #{DEFAULT_ROOM}. {HELP}")
        enter(conn, DEFAULT_ROOM)

    @app.on_disconnect
    def goodbye(conn: Connection) -> None:
        nick = conn.state.get("nick")
        if nick is None:
            return
        rooms.nicks.pop(nick, None)
        leave(conn, "left")

    @app.on(str)
    def line(text: str, conn: Connection) -> str | None:
        text = text.strip()
        if not text:
            return None
        if not text.startswith("/"):
            tell_room(conn.state["room"], f"<{conn.state['nick']}> {text}", besides=conn)
            return None
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        handler = commands.get(command.lower())
        if handler is None:
            return f"! unknown command {command}; {HELP}"
        reply: str | None = handler(conn, argument)
        return reply

    def nick(conn: Connection, name: str) -> str:
        if not _NICK.fullmatch(name):
            return "! a nickname is 1-24 letters, digits, '_' or '-'"
        if name in rooms.nicks:
            return f"! {name} is taken"
        old = conn.state["nick"]
        del rooms.nicks[old]
        rooms.nicks[name] = conn
        conn.state["nick"] = name
        tell_room(conn.state["room"], f"* {old} is now known as {name}", besides=conn)
        return f"* you are now {name}"

    def join(conn: Connection, room: str) -> str:
        if not _ROOM.fullmatch(room):
            return "! a room name is 1-32 letters, digits, '_' or '-'"
        room = room.removeprefix("#")
        if room == conn.state["room"]:
            return f"* you are already in #{room}"
        leave(conn, "left")
        enter(conn, room)
        return f"* you are in #{room}"

    def who(conn: Connection, _argument: str) -> str:
        room = conn.state["room"]
        names = sorted(member.state["nick"] for member in rooms.members.get(room, ()))
        return f"* in #{room}: {', '.join(names)}"

    def quit_(conn: Connection, _argument: str) -> None:
        say(conn, "* bye")
        conn.close()

    commands: dict[str, Any] = {"/nick": nick, "/join": join, "/who": who, "/quit": quit_}

    @app.fallback
    def bad_line(error: WirekitError, conn: Connection) -> str:
        if isinstance(error, FrameTooLarge):
            return f"! line too long (over {MAX_LINE} bytes): ignored"
        offset = getattr(error, "offset", None)
        where = f" at byte {offset}" if offset is not None else ""
        return f"! not valid UTF-8{where}: line ignored"

    return app


#: The chat server of ``wirekit serve protocols.chat``.
app = create_app()
