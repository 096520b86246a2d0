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

Rooms are groups (:attr:`framework.App.groups`), so every server on one
backplane is one chat: two ``wirekit serve protocols.chat --backplane
redis://...`` on two ports or machines (or ``--workers 2``) share the rooms,
``/who`` and the join, leave and rename lines. Nicknames are unique through
presence, best effort: a nickname in use on any node is taken, but two
nodes that give one free nickname away within the same backplane round trip
(a few milliseconds) both do.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from typing import Any

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

__all__ = ["MAX_LINE", "USERS", "app", "create_app", "pipeline"]

#: Longest line accepted, in bytes: a chat message, not a file transfer.
MAX_LINE = 2048
DEFAULT_ROOM = "lobby"
_NICK = re.compile(r"[A-Za-z0-9_\-]{1,24}")
_ROOM = re.compile(r"#?[A-Za-z0-9_\-]{1,32}")
HELP = "commands: /nick NAME, /join ROOM, /who, /quit"
#: The group every user is in, with its nickname as data; room R is group "#R".
USERS = "users"


def pipeline() -> Pipeline:
    """Newline framing (over-long lines skipped, not fatal) and strict UTF-8."""
    return Pipeline(
        framing=Delimited(max_frame_size=MAX_LINE, on_oversize="skip"), codecs=[Utf8Codec()]
    )


def create_app(*, backplane: str = "memory://") -> App:
    """A chat server: one node of the chat on ``backplane`` (see the module).

    Every node on one backplane (and namespace) shares the rooms: two
    ``create_app()`` in one process on ``memory://`` are two nodes of one
    chat, as two processes on one Redis are.
    """
    app = App(
        pipeline(),
        handler_errors="keep",
        default_url="tcp://127.0.0.1:9300",
        backplane=backplane,
        namespace="chat",
        # The page (protocols/web/chat) is served on ws:// listeners: one room for nc and browsers.
        pages=pages("chat"),
    )
    groups = app.groups
    # Every user is in USERS, with its nickname: the nicknames in use on
    # every node, from the first connection on.
    groups.track(USERS)
    guests = itertools.count(1)

    def taken(nick: str) -> bool:
        return any(member.data == nick for member in groups.members(USERS))

    def enter(conn: Connection, room: str) -> None:
        conn.state["room"] = room
        nick = conn.state["nick"]
        # A member that stops reading is disconnected, not skipped: a chat
        # line is never lost silently.
        groups.join(conn, f"#{room}", data=nick, when_full="close")
        groups.publish(f"#{room}", f"* {nick} joined #{room}", exclude=conn)

    def leave(conn: Connection, reason: str) -> None:
        room: str = conn.state["room"]
        groups.leave(conn, f"#{room}")
        groups.publish(f"#{room}", f"* {conn.state['nick']} {reason} #{room}")

    @app.on_connect
    def welcome(conn: Connection) -> None:
        nick = f"guest-{next(guests)}"
        while taken(nick):
            nick = f"guest-{next(guests)}"
        conn.state["nick"] = nick
        groups.join(conn, USERS, data=nick)
        with contextlib.suppress(ConnectionClosed):
            conn.send_nowait(f"* welcome, {nick}! you are in #{DEFAULT_ROOM}. {HELP}")
        enter(conn, DEFAULT_ROOM)

    @app.on_disconnect
    def goodbye(conn: Connection) -> None:
        if "room" in conn.state:
            leave(conn, "left")

    @app.on(str)
    def line(text: str, conn: Connection) -> str | None:
        text = text.strip()
        if not text:
            return None
        if not text.startswith("/"):
            room = conn.state["room"]
            groups.publish(f"#{room}", f"<{conn.state['nick']}> {text}", exclude=conn)
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
        if taken(name):
            return f"! {name} is taken"
        old = conn.state["nick"]
        conn.state["nick"] = name
        room = conn.state["room"]
        groups.join(conn, USERS, data=name)  # joining again changes the data
        groups.join(conn, f"#{room}", data=name, when_full="close")
        groups.publish(f"#{room}", f"* {old} is now known as {name}", exclude=conn)
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
        names = sorted(str(member.data) for member in groups.members(f"#{room}"))
        return f"* in #{room}: {', '.join(names)}"

    def quit_(conn: Connection, _argument: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            conn.send_nowait("* bye")
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
