"""Groups without I/O: who is a member where, and what each publish or envelope means.

A node is one app's running instance (one process, or one ``App`` among
several in a test). Its :class:`GroupTable` holds:

- its **local members**, per group, each with the data the protocol attached
  (a nickname, a player number); a member is any hashable key (the runtime
  uses the connection) and an ``int`` id that names it to other nodes;
- the **channels** the node must be subscribed to: one per group it hosts
  members of, or :meth:`tracks <GroupTable.track>` without members;
- **presence** across nodes: every node announces its members on the
  group's channel (a join, a leave, and a full snapshot every ``refresh``
  seconds, or when a new node asks), and a node that has not been heard on
  a channel for ``ttl`` seconds is forgotten there with all its members, so
  a killed node disappears from presence;
- the **per-publisher order** check: each envelope a node sends on a channel
  is numbered (see :mod:`framework.core.groupwire`); a receiver drops stale
  ones (counted ``out_of_order``) and counts gaps as ``lost``.

Every method takes ``now`` (seconds, any monotonic clock) and returns what to
do: members to hand a value to, :class:`Outgoing` payloads to publish. The
runtime (:mod:`framework.runtime.groups`) does the I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import attrs

from framework.core.errors import ConfigError, DecodeError
from framework.core.groupwire import (
    Envelope,
    Kind,
    channel_name,
    check_node,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    peek_node,
)

__all__ = ["DEFAULT_TTL", "Delivery", "GroupMember", "GroupStats", "GroupTable", "Outgoing"]

K = TypeVar("K", bound=Hashable)

#: Seconds without a word from a node before its members leave presence.
#: Nodes refresh three times per TTL, so one lost refresh costs nothing,
#: and a killed node is gone within 15 s.
DEFAULT_TTL = 15.0
_STREAMS = 1 << 32


@attrs.frozen
class GroupMember:
    """One member of a group, on this node or another: what presence lists."""

    #: The id of the node that hosts it.
    node: str
    #: Its id on that node (a connection's ``id``).
    id: int
    #: What the protocol attached when it joined (``None`` if nothing).
    data: Any = None


@attrs.define
class GroupStats:
    """Counters of one node's groups."""

    #: Values this node published.
    published: int = 0
    #: Values handed to a local member's connection.
    delivered: int = 0
    #: Values a local member did not get: it was not keeping up (``can_send`` false).
    dropped: int = 0
    #: Values a pipeline could not encode (or frame) for the local members
    #: that use it: once per publish and pipeline, not once per member.
    undeliverable: int = 0
    #: Envelopes received from other nodes (own echoes not counted).
    received: int = 0
    #: Envelopes missing in a publisher's numbering (the broker dropped them).
    lost: int = 0
    #: Envelopes older than one already received from the same publisher: dropped.
    out_of_order: int = 0
    #: Payloads on a group's channel that were not valid envelopes: dropped.
    undecodable: int = 0
    #: Nodes forgotten in a group because they fell silent for ``ttl`` seconds.
    expired: int = 0


@attrs.frozen
class Outgoing:
    """A payload to publish on a backplane channel."""

    channel: str
    payload: bytes


@attrs.frozen
class Delivery(Generic[K]):
    """A value another node published: hand it to ``members`` (decode ``body`` first)."""

    group: str
    kind: Kind
    body: bytes
    members: tuple[K, ...]


@attrs.define
class _Local:
    id: int
    data: Any


@attrs.define
class _Peer:
    """Another node, as heard on one group's channel."""

    stream: int
    seq: int
    heard: float
    members: dict[int, Any] = attrs.field(factory=dict)


@attrs.define
class _Out:
    """This node's numbering on one channel."""

    channel: str
    stream: int
    seq: int = 0
    used: float = 0.0


class GroupTable(Generic[K]):
    """One node's memberships, presence and numbering (see the module).

    ``node`` is this node's id (printable ASCII; the runtime draws a random
    one per start); ``namespace`` prefixes every channel, so two apps on one
    broker do not mix; ``ttl`` is how long a silent node stays in presence.
    """

    def __init__(
        self, node: str, namespace: str, *, ttl: float = DEFAULT_TTL, now: float = 0.0
    ) -> None:
        if not ttl > 0:
            raise ConfigError(f"presence_ttl must be positive, got {ttl!r}", option="presence_ttl")
        channel_name(namespace, "check")  # a bad namespace fails here
        check_node(node)
        self.node = node
        self.namespace = namespace
        self.ttl = ttl
        #: Seconds between two snapshots of a node's members (a third of ``ttl``).
        self.refresh = ttl / 3
        self.stats = GroupStats()
        self._local: dict[str, dict[K, _Local]] = {}
        self._of: dict[K, dict[str, None]] = {}
        self._tracked: set[str] = set()
        self._channels: dict[str, str] = {}
        self._channel_of: dict[str, str] = {}
        self._remote: dict[str, dict[str, _Peer]] = {}
        self._out: dict[str, _Out] = {}
        self._streams = itertools.count(1)
        self._next_refresh = now + self.refresh

    def __repr__(self) -> str:
        return f"<GroupTable node={self.node} groups={len(self._channels)}>"

    # -- what the node needs ---------------------------------------------------------

    @property
    def channels(self) -> dict[str, str]:
        """The channels this node must be subscribed to, and the group of each."""
        return dict(self._channels)

    @property
    def wakeup_at(self) -> float:
        """When :meth:`on_timer` is due: the next snapshot and expiry round."""
        return self._next_refresh

    def groups_of(self, key: K) -> tuple[str, ...]:
        """The groups ``key`` is a local member of, in the order it joined them."""
        return tuple(self._of.get(key, ()))

    def local(self, group: str) -> tuple[K, ...]:
        """The local members of ``group``, in the order they joined."""
        return tuple(self._local.get(group, ()))

    def members(self, group: str, now: float) -> list[GroupMember]:
        """Every member of ``group`` this node knows of: its own first, then other nodes'.

        Other nodes' members are known for the groups this node hosts or
        tracks, and only while their node has been heard within ``ttl``.
        """
        found = [
            GroupMember(self.node, local.id, local.data)
            for local in self._local.get(group, {}).values()
        ]
        for node, peer in sorted(self._remote.get(group, {}).items()):
            if peer.heard + self.ttl >= now:
                found += [GroupMember(node, id_, data) for id_, data in peer.members.items()]
        return found

    # -- local membership ------------------------------------------------------------

    def track(self, group: str) -> None:
        """Keep ``group``'s channel and presence even while no local member is in it."""
        self._tracked.add(group)
        self._need(group)

    def join(self, key: K, member_id: int, group: str, data: Any, now: float) -> list[Outgoing]:
        """``key`` joins ``group`` (or, already in it, changes its data): announce it."""
        body = encode_body([member_id, data])  # data that cannot cross fails here, first
        members = self._local.setdefault(group, {})
        members[key] = _Local(member_id, data)
        self._of.setdefault(key, {})[group] = None
        self._need(group)
        return [self._envelope(group, Kind.JOIN, body, now)]

    def leave(self, key: K, group: str, now: float) -> list[Outgoing]:
        """``key`` leaves ``group`` (nothing if it was not in it): announce it."""
        members = self._local.get(group)
        local = members.pop(key, None) if members is not None else None
        if local is None:
            return []
        groups = self._of[key]
        del groups[group]
        if not groups:
            del self._of[key]
        out = [self._envelope(group, Kind.LEAVE, encode_body(local.id), now)]
        if not members:
            del self._local[group]
            if group not in self._tracked:
                self._drop(group)
        return out

    def leave_all(self, key: K, now: float) -> list[Outgoing]:
        """``key`` leaves every group it is in (its connection closed)."""
        out: list[Outgoing] = []
        for group in self.groups_of(key):
            out += self.leave(key, group, now)
        return out

    def _need(self, group: str) -> None:
        if group not in self._channel_of:
            channel = channel_name(self.namespace, group)
            self._channel_of[group] = channel
            self._channels[channel] = group

    def _drop(self, group: str) -> None:
        # Unsubscribed: what other nodes said about the group goes stale at once.
        channel = self._channel_of.pop(group, None)
        if channel is not None:
            del self._channels[channel]
        self._remote.pop(group, None)

    # -- sending ---------------------------------------------------------------------

    def publish(
        self, group: str, kind: Kind, body: bytes, now: float, *, exclude: K | None = None
    ) -> tuple[tuple[K, ...], Outgoing]:
        """The routing of one publish: the local members to hand it to, and one envelope.

        One envelope whatever the number of members: every other node that
        hosts members of ``group`` receives it and hands it to its own.
        """
        self.stats.published += 1
        members = self._local.get(group)
        if not members:
            local: tuple[K, ...] = ()
        elif exclude is None or exclude not in members:
            local = tuple(members)
        else:
            local = tuple(key for key in members if key != exclude)
        return local, self._envelope(group, kind, body, now)

    def hello(self, group: str, now: float) -> list[Outgoing]:
        """Just subscribed to ``group``'s channel: ask the other nodes for their members."""
        out = [self._envelope(group, Kind.HELLO, b"", now)]
        if group in self._local:
            out.append(self._snapshot(group, now))
        return out

    def resync(self, now: float) -> list[Outgoing]:
        """The broker is back: announce every hosted group again and ask for the others'."""
        out: list[Outgoing] = []
        for group in list(self._channel_of):
            out += self.hello(group, now)
        return out

    def _snapshot(self, group: str, now: float) -> Outgoing:
        members = self._local.get(group, {})
        body = encode_body([[local.id, local.data] for local in members.values()])
        return self._envelope(group, Kind.SNAPSHOT, body, now)

    def _envelope(self, group: str, kind: Kind, body: bytes, now: float) -> Outgoing:
        out = self._out.get(group)
        if out is None:
            stream = next(self._streams) % _STREAMS
            out = self._out[group] = _Out(channel_name(self.namespace, group), stream)
        out.seq += 1
        out.used = now
        return Outgoing(
            out.channel, encode_envelope(Envelope(kind, self.node, out.stream, out.seq, body))
        )

    # -- receiving -------------------------------------------------------------------

    def receive(
        self, channel: str, payload: bytes, now: float
    ) -> tuple[Delivery[K] | None, list[Outgoing]]:
        """An envelope from ``channel``: a value to hand out, and what to answer.

        Own echoes, channels no longer needed and stale envelopes give
        nothing. A payload that is not a valid envelope is counted in
        ``undecodable`` and raises :class:`~framework.core.errors.DecodeError`.
        """
        if peek_node(payload) == self.node:
            return None, []  # our own publish, back from the broker
        group = self._channels.get(channel)
        if group is None:
            return None, []  # unsubscribed since: what it says is no longer ours to hear
        try:
            envelope = decode_envelope(payload)
        except DecodeError:
            self.stats.undecodable += 1
            raise
        self.stats.received += 1
        peer = self._heard(group, envelope, now)
        if peer is None:
            return None, []
        kind = envelope.kind
        if kind is Kind.VALUE or kind is Kind.MESSAGE:
            return Delivery(group, kind, envelope.body, self.local(group)), []
        if kind is Kind.HELLO:
            return None, [self._snapshot(group, now)] if group in self._local else []
        try:
            self._presence(peer, kind, decode_body(envelope.body))
        except (DecodeError, TypeError, ValueError) as exc:
            self.stats.undecodable += 1
            raise DecodeError(
                f"bad {kind.name} presence body from node {envelope.node}: {exc}",
                codec="envelope",
            ) from exc
        return None, []

    def _heard(self, group: str, envelope: Envelope, now: float) -> _Peer | None:
        """Check the sender's numbering; the sender's record, or None for a stale envelope."""
        peers = self._remote.setdefault(group, {})
        peer = peers.get(envelope.node)
        if peer is None or peer.stream != envelope.stream or peer.heard + self.ttl < now:
            # A node first heard, numbering afresh, or back after it expired.
            # What it said before is not trusted again: its next snapshot tells.
            fresh = peers[envelope.node] = _Peer(envelope.stream, envelope.seq, now)
            return fresh
        if envelope.seq <= peer.seq:
            self.stats.out_of_order += 1
            return None
        self.stats.lost += envelope.seq - peer.seq - 1
        peer.seq = envelope.seq
        peer.heard = now
        return peer

    def _presence(self, peer: _Peer, kind: Kind, body: Any) -> None:
        if kind is Kind.JOIN:
            member_id, data = body
            peer.members[_member_id(member_id)] = data
        elif kind is Kind.LEAVE:
            peer.members.pop(_member_id(body), None)
        elif kind is Kind.SNAPSHOT:
            peer.members = {_member_id(id_): data for id_, data in body}

    # -- time --------------------------------------------------------------------------

    def on_timer(self, now: float) -> list[Outgoing]:
        """Due at :attr:`wakeup_at`: snapshot every hosted group, forget silent nodes."""
        if now < self._next_refresh:
            return []
        self._next_refresh = now + self.refresh
        for peers in self._remote.values():
            for node in [n for n, peer in peers.items() if peer.heard + self.ttl < now]:
                del peers[node]
                self.stats.expired += 1
        for group in [g for g, out in self._out.items() if self._idle(g, out, now)]:
            del self._out[group]
        return [self._snapshot(group, now) for group in list(self._local)]

    def _idle(self, group: str, out: _Out, now: float) -> bool:
        # A channel this node neither hosts nor tracks, unused for a TTL:
        # forget its numbering (the next publish starts a new stream).
        return group not in self._channel_of and out.used + self.ttl < now


def _member_id(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"a member id is an int, got {value!r}")
    return value
