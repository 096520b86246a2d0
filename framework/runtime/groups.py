"""Groups of connections across nodes: the asyncio side of :mod:`framework.core.groups`.

An app's :class:`Groups` (``app.groups``) lets a connection (a stream or a
UDP peer) join named groups, a handler publish a value to every member of a
group on every node, and a protocol list a group's members across nodes
(presence). The table and every decision are the core's
(:class:`~framework.core.groups.GroupTable`); this module runs the
backplane that carries envelopes between nodes, the subscriptions, the
presence timer, and the fan-out to local members, each through its own
pipeline.

A member that does not keep up (its connection's ``can_send`` is false:
its write buffer is over ``Limits.write_high_water``) does not get the
value: it is counted in ``stats.dropped`` (and :meth:`Groups.dropped`), and
closed instead if it joined with ``when_full="close"``. Nothing ever waits
for a member, so a slow one stalls neither the publisher nor the
backplane's reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from framework.core.errors import ConfigError, ConnectionClosed, DecodeError, WirekitError
from framework.core.groups import GroupMember, GroupStats, GroupTable, Outgoing
from framework.core.groupwire import decode_value, encode_value
from framework.core.messages import MessageRegistry
from framework.runtime.backplane import Backplane, backplane_from_url
from framework.runtime.logs import LogLimiter

if TYPE_CHECKING:
    from framework.runtime.connection import Connection

__all__ = ["WHEN_FULL", "Groups"]

log = logging.getLogger("wirekit.groups")

#: What happens to a member that is not keeping up when a value is published to it.
WHEN_FULL = ("drop", "close")


class Groups:
    """An app's groups: membership, publish and presence, on every node (see the module).

    Made by :attr:`App.groups <framework.runtime.app.App.groups>`; it runs
    while the app serves: the app starts its backplane before it listens and
    closes it once its connections have drained.
    """

    def __init__(self) -> None:
        self.stats = GroupStats()
        self._table: GroupTable[Connection] | None = None
        self._backplane: Backplane | None = None
        self._messages: MessageRegistry | None = None
        self._tracked: list[str] = []
        self._users = 0
        self._starting: asyncio.Lock | None = None
        self._subscribed: set[str] = set()
        self._syncing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_when_full: set[Connection] = set()
        self._dropped: dict[Connection, int] = {}
        # Members no server of the app serves (client connections): their
        # close is watched here, since no disconnect hook of the app runs.
        self._watching: dict[Connection, asyncio.Future[None]] = {}
        self._connected = True
        self._log: LogLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = f"node={self.node}" if self._table is not None else "stopped"
        return f"<Groups {state}>"

    # -- what protocols call ----------------------------------------------------------

    @property
    def node(self) -> str | None:
        """This node's id while the app serves (a new random one each start), else ``None``."""
        return self._table.node if self._table is not None else None

    @property
    def running(self) -> bool:
        """Whether the backplane is started (the app serves)."""
        return self._table is not None

    @property
    def backplane(self) -> Backplane | None:
        """The running backplane (its ``stats`` count broker messages), or ``None``."""
        return self._backplane

    def join(
        self, conn: Connection, group: str, data: Any = None, *, when_full: str = "drop"
    ) -> None:
        """Put ``conn`` in ``group``, with ``data`` for presence (joining again changes it).

        ``data`` travels to other nodes as msgpack (a nickname, a number, a
        small dict): :class:`~framework.core.errors.EncodeError` if it
        cannot. ``when_full`` is what a published value does when ``conn``
        is not keeping up: ``"drop"`` (skip it for this member, counted) or
        ``"close"`` (abort the connection). A closed connection joins nothing.
        """
        if when_full not in WHEN_FULL:
            raise ConfigError(
                f"when_full must be 'drop' or 'close', got {when_full!r}", option="when_full"
            )
        table = self._running()
        if conn.closed:
            return
        out = table.join(conn, conn.id, group, data, self._now())
        if conn.listener is None and conn not in self._watching:
            self._watch(conn)
        if when_full == "close":
            self._close_when_full.add(conn)
        else:
            self._close_when_full.discard(conn)
        self._send(out)
        self._sync()

    def _watch(self, conn: Connection) -> None:
        """``conn`` leaves its groups when it closes (a client connection: no hook does it)."""
        closed = asyncio.ensure_future(conn.wait_closed())
        self._watching[conn] = closed

        def ended(_: asyncio.Future[None]) -> None:
            if self._watching.get(conn) is closed:
                del self._watching[conn]
                self.leave_all(conn)

        closed.add_done_callback(ended)

    def leave(self, conn: Connection, group: str) -> bool:
        """Take ``conn`` out of ``group``; ``False`` if it was not in it."""
        table = self._running()
        out = table.leave(conn, group, self._now())
        self._send(out)
        self._sync()
        return bool(out)

    def publish(self, group: str, value: Any, *, exclude: Connection | None = None) -> int:
        """Send ``value`` to every member of ``group`` on every node (``exclude`` not).

        One broker message, whatever the number of members; each member
        gets the value in its own pipeline's wire format, encoded once per
        pipeline and transport, not once per member. Returns how many local
        members it was handed to. The value crosses nodes as msgpack, or, if
        it is a message the app's pipeline registers, as that message:
        anything else raises :class:`~framework.core.errors.EncodeError`
        here, and nobody gets it.
        """
        table = self._running()
        kind, body = encode_value(value, self._messages)
        members, out = table.publish(group, kind, body, self._now(), exclude=exclude)
        assert self._backplane is not None
        self._backplane.publish(out.channel, out.payload)
        return self._fan_out(members, value)

    def members(self, group: str) -> list[GroupMember]:
        """Presence: every member of ``group`` this node knows of, its own first.

        Other nodes' members are known for the groups this node hosts
        members of, or :meth:`tracks <track>`; a node silent for
        ``presence_ttl`` seconds (killed, cut off) is left out.
        """
        table = self._running()
        return table.members(group, self._now())

    def local_members(self, group: str) -> list[Connection]:
        """The connections of this node in ``group``, in the order they joined."""
        return list(self._table.local(group)) if self._table is not None else []

    def groups_of(self, conn: Connection) -> tuple[str, ...]:
        """The groups ``conn`` is in, in the order it joined them."""
        return self._table.groups_of(conn) if self._table is not None else ()

    def dropped(self, conn: Connection) -> int:
        """Values ``conn`` missed because it was not keeping up."""
        return self._dropped.get(conn, 0)

    def track(self, group: str) -> None:
        """Follow ``group``'s presence even while no local connection is in it.

        Call it at set-up: the node subscribes to the group's channel when
        the app starts, so :meth:`members` is complete from the first
        connection on (the chat's nicknames, the game's player numbers).
        """
        if group not in self._tracked:
            self._tracked.append(group)
        if self._table is not None:
            self._table.track(group)
            self._sync()

    # -- fan-out ---------------------------------------------------------------------

    def _fan_out(self, members: tuple[Connection, ...], value: Any) -> int:
        # The value is encoded once per pipeline and framed once per encoding
        # (a pipeline on one kind of transport), when a member first needs
        # it; None: it could not be, which is counted once, not per member.
        payloads: dict[int, bytes | None] = {}
        wires: dict[Hashable, bytes | None] = {}
        stats = self.stats
        sent = 0
        for conn in members:
            if not conn.can_send:
                if conn.closing:
                    continue  # ending: it leaves its groups in its disconnect hook
                stats.dropped += 1
                self._dropped[conn] = self._dropped.get(conn, 0) + 1
                if conn in self._close_when_full:
                    conn.abort()
                continue
            encoding = conn.encoding
            try:
                data = wires[encoding.key]
            except KeyError:
                data = wires[encoding.key] = self._wire(conn, value, payloads)
            if data is None:
                continue
            try:
                conn.send_encoded(data)
            except ConnectionClosed:
                continue
            except WirekitError as exc:  # this member's own step (a UDP peer's seal)
                self._undeliverable(conn, exc)
                continue
            sent += 1
        stats.delivered += sent
        return sent

    def _wire(
        self, conn: Connection, value: Any, payloads: dict[int, bytes | None]
    ) -> bytes | None:
        """``value`` as ``conn`` writes it, or None; ``payloads`` holds them by pipeline."""
        pipeline = conn.pipeline
        try:
            payload = payloads[id(pipeline)]
        except KeyError:
            try:
                payload = payloads[id(pipeline)] = pipeline.encode_frame(value)
            except WirekitError as exc:
                payload = payloads[id(pipeline)] = None
                self._undeliverable(conn, exc)
        if payload is None:
            return None
        try:
            return conn.encoding.frame(payload)
        except WirekitError as exc:
            self._undeliverable(conn, exc)
            return None

    def _undeliverable(self, conn: Connection, exc: WirekitError) -> None:
        self.stats.undeliverable += 1
        self._warn("undeliverable", "%r: cannot encode a group value: %s", conn, exc)

    def leave_all(self, conn: Connection) -> None:
        """``conn`` leaves every group it is in (the app does this when it closes)."""
        table = self._table
        if table is None:
            return
        self._close_when_full.discard(conn)
        self._dropped.pop(conn, None)
        if table.groups_of(conn):
            self._send(table.leave_all(conn, self._now()))
            self._sync()

    # -- the backplane ----------------------------------------------------------------

    async def start(
        self,
        backplane: str | Backplane,
        namespace: str,
        ttl: float,
        messages: MessageRegistry | None,
    ) -> None:
        """Connect to ``backplane`` (a URL or a :class:`Backplane`) as a new node.

        The app calls this before each of its servers listens, and
        :meth:`stop` after each has closed: the servers of one app share
        one node, opened by the first start and closed by the last stop.
        """
        # Servers of one app starting at once (a gather) share one backplane.
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._users:
                self._users += 1
                return
            await self._open(backplane, namespace, ttl, messages)
            self._users = 1

    async def _open(
        self,
        backplane: str | Backplane,
        namespace: str,
        ttl: float,
        messages: MessageRegistry | None,
    ) -> None:
        loop = self._loop = asyncio.get_running_loop()
        # A fresh id per start: after a fork each worker is a node of its own.
        table: GroupTable[Connection] = GroupTable(
            secrets.token_hex(8), namespace, ttl=ttl, now=loop.time()
        )
        plane = backplane_from_url(backplane) if isinstance(backplane, str) else backplane
        table.stats = self.stats
        await plane.start(self._received, self._state_changed)
        self._backplane, self._table, self._messages = plane, table, messages
        self._log = LogLimiter(log, schedule=loop.call_at)
        self._connected = True
        self._subscribed = set()
        for group in self._tracked:
            table.track(group)
        self._arm()
        self._sync()
        if self._syncing is not None:
            await asyncio.shield(self._syncing)  # tracked groups: subscribed before serving
        log.info("groups: node %s on %s, namespace %r", table.node, plane.url, namespace)

    async def stop(self) -> None:
        """Undo one :meth:`start`; the last one leaves the backplane and closes it."""
        if self._users > 1:
            self._users -= 1
            return
        table, plane = self._table, self._backplane
        if table is None or plane is None:
            return
        self._users = 0
        self._starting = None  # the next start may run on another event loop
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncing
            self._syncing = None
        # Members still in (client connections, say): the other nodes hear them leave.
        for group in list(table.channels.values()):
            for conn in table.local(group):
                self._send(table.leave_all(conn, self._now()))
        self._table = None
        self._backplane = None
        try:
            await plane.close()
        finally:
            if self._log is not None:
                self._log.flush(float("inf"))
            self._close_when_full.clear()
            self._dropped.clear()
            watching, self._watching = self._watching, {}
            for closed in watching.values():
                closed.cancel()

    def _running(self) -> GroupTable[Connection]:
        if self._table is None:
            raise ConfigError(
                "groups are not running: join, publish and list members from the handlers "
                "and hooks of a served app",
                option="groups",
            )
        return self._table

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _send(self, out: list[Outgoing]) -> None:
        plane = self._backplane
        if plane is None:
            return
        for item in out:
            plane.publish(item.channel, item.payload)

    def _received(self, channel: str, payload: bytes) -> None:
        """The backplane's ``deliver``: one envelope from another node (never raises)."""
        table = self._table
        if table is None:
            return
        try:
            delivery, out = table.receive(channel, payload, self._now())
        except DecodeError as exc:
            self._warn("undecodable", "dropped a payload on %s: %s", channel, exc)
            return
        self._send(out)
        if delivery is None:
            return
        try:
            value = decode_value(delivery.kind, delivery.body, self._messages)
        except DecodeError as exc:
            self.stats.undecodable += 1
            self._warn("undecodable", "dropped a value published on %s: %s", channel, exc)
            return
        self._fan_out(delivery.members, value)

    def _state_changed(self, up: bool) -> None:
        plane, table = self._backplane, self._table
        if plane is None or table is None or up == self._connected:
            return
        self._connected = up
        # The backplane itself logs the outage (WARNING) and its end (INFO), once each.
        if not up:
            log.debug("backplane %s down: values reach this node's members only", plane.url)
            return
        log.debug("backplane %s up: announcing this node's members again", plane.url)
        # Other nodes may have expired ours meanwhile: announce everything again.
        self._send(table.resync(self._now()))
        self._sync()

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        if self._log is None:
            log.warning(message, *args)
            return
        self._log.log(
            self._now(), kind, f"group payloads ({kind})", logging.WARNING, message, *args
        )

    def _arm(self) -> None:
        table, loop = self._table, self._loop
        if table is None or loop is None:
            return
        self._timer = loop.call_at(table.wakeup_at, self._tick)

    def _tick(self) -> None:
        table = self._table
        if table is None:
            return
        self._send(table.on_timer(self._now()))
        self._arm()

    # -- subscriptions ------------------------------------------------------------------

    def _sync(self) -> None:
        """Bring the subscriptions in line with the table's channels (one task at a time)."""
        table = self._table
        if table is None or (self._syncing is not None and not self._syncing.done()):
            return
        if table.channels.keys() == self._subscribed:
            return
        assert self._loop is not None
        self._syncing = self._loop.create_task(self._subscriptions())

    async def _subscriptions(self) -> None:
        while (table := self._table) is not None and (plane := self._backplane) is not None:
            wanted = table.channels
            missing = [channel for channel in wanted if channel not in self._subscribed]
            extra = [channel for channel in self._subscribed if channel not in wanted]
            if not missing and not extra:
                return
            try:
                for channel in missing:
                    await plane.subscribe(channel)
                    self._subscribed.add(channel)
                    group = table.channels.get(channel)
                    if group is not None:
                        self._send(table.hello(group, self._now()))
                for channel in extra:
                    await plane.unsubscribe(channel)
                    self._subscribed.discard(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The broker is away: try again when it is back (on_state(True)).
                log.warning("backplane %s: cannot change subscriptions: %s", plane.url, exc)
                return
