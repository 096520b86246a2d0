"""Groups without I/O: envelopes, membership, routing, presence; bytes and a clock number."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework import DecodeError, EncodeError, MessageRegistry, message
from framework.core.groups import GroupMember, GroupTable, Outgoing
from framework.core.groupwire import (
    Envelope,
    Kind,
    channel_name,
    decode_envelope,
    decode_value,
    encode_envelope,
    encode_value,
    peek_node,
)


@message("move")
@attrs.frozen
class Move:
    x: float
    who: str


MESSAGES = MessageRegistry([Move])

nodes = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=255)
envelopes = st.builds(
    Envelope,
    st.sampled_from(list(Kind)),
    nodes,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=200),
)
plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
group_names = st.text(min_size=1, max_size=12)


# -- the envelope ---------------------------------------------------------------------


@given(envelopes)
def test_envelope_round_trip(envelope: Envelope) -> None:
    payload = encode_envelope(envelope)
    assert decode_envelope(payload) == envelope
    assert peek_node(payload) == envelope.node


@given(st.binary(max_size=64))
def test_any_bytes_are_an_envelope_or_a_decode_error(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
    except DecodeError:
        return
    assert encode_envelope(envelope) == data


def test_envelope_errors_say_what_is_wrong() -> None:
    good = encode_envelope(Envelope(Kind.VALUE, "n1", 1, 1, b"\xc0"))
    with pytest.raises(DecodeError, match="at least"):
        decode_envelope(good[:5])
    with pytest.raises(DecodeError, match="not a wirekit envelope"):
        decode_envelope(b"xx" + good[2:])
    with pytest.raises(DecodeError, match="version 9"):
        decode_envelope(good[:2] + b"\x09" + good[3:])
    with pytest.raises(DecodeError, match="unknown envelope kind 77"):
        decode_envelope(good[:3] + b"\x4d" + good[4:])
    with pytest.raises(DecodeError, match="node id"):
        decode_envelope(good[:17])


def test_the_header_layout() -> None:
    payload = encode_envelope(Envelope(Kind.JOIN, "ab", 7, 258, b"\x90"))
    assert payload == bytes.fromhex("776b 01 03 00000007 0000000000000102 02 6162 90")


@given(group_names, group_names)
def test_channel_names_are_safe_and_one_to_one(first: str, second: str) -> None:
    one, two = channel_name("app", first), channel_name("app", second)
    assert (one == two) == (first == second)
    assert all(c.isascii() and (c.isalnum() or c in "._-=") for c in one)
    assert one.startswith("wirekit.app.")


def test_namespaces_keep_apps_apart() -> None:
    assert channel_name("chat", "#lobby") == "wirekit.chat.=23lobby"
    assert channel_name("chat", "lobby") != channel_name("game", "lobby")
    assert channel_name("a.b", "c") != channel_name("a", "b.c")


@given(plain)
def test_plain_values_cross_as_msgpack(value: Any) -> None:
    kind, body = encode_value(value, MESSAGES)
    assert kind is Kind.VALUE
    assert decode_value(kind, body, MESSAGES) == value


@given(st.floats(allow_nan=False), st.text(max_size=10))
def test_registered_messages_stay_typed(x: float, who: str) -> None:
    kind, body = encode_value(Move(x, who), MESSAGES)
    assert kind is Kind.MESSAGE
    assert decode_value(kind, body, MESSAGES) == Move(x, who)


def test_a_value_that_cannot_cross_is_refused_at_publish() -> None:
    with pytest.raises(EncodeError, match="cannot cross to other nodes"):
        encode_value(object(), MESSAGES)
    with pytest.raises(EncodeError, match="cannot cross"):
        encode_value(Move(1.0, "a"), None)  # not registered there
    kind, body = encode_value(Move(1.0, "a"), MESSAGES)
    with pytest.raises(DecodeError, match="registers no messages"):
        decode_value(kind, body, None)


# -- membership and routing -------------------------------------------------------------


def table(node: str = "a", ttl: float = 15.0) -> GroupTable[str]:
    return GroupTable(node, "test", ttl=ttl, now=0.0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "close", "track"]),
        st.sampled_from(["m1", "m2", "m3", "m4"]),
        st.sampled_from(["g1", "g2", "g3"]),
    ),
    max_size=40,
)


@given(ops)
def test_membership_invariants_under_any_sequence(sequence: list[tuple[str, str, str]]) -> None:
    groups = table()
    model: dict[str, dict[str, Any]] = {}
    tracked: set[str] = set()
    for step, (op, member, group) in enumerate(sequence):
        if op == "join":
            out = groups.join(member, int(member[1:]), group, f"{member}@{step}", now=step)
            model.setdefault(group, {})[member] = f"{member}@{step}"
            assert len(out) == 1
        elif op == "leave":
            out = groups.leave(member, group, now=step)
            was_in = member in model.get(group, {})
            assert len(out) == int(was_in)
            model.get(group, {}).pop(member, None)
        elif op == "close":
            out = groups.leave_all(member, now=step)
            assert len(out) == sum(member in members for members in model.values())
            for members in model.values():
                members.pop(member, None)
        else:
            groups.track(group)
            tracked.add(group)
        model = {g: m for g, m in model.items() if m}
        for g in ("g1", "g2", "g3"):
            assert list(groups.local(g)) == list(model.get(g, {}))
            assert [m.data for m in groups.members(g, now=step)] == list(model.get(g, {}).values())
        for m in ("m1", "m2", "m3", "m4"):
            assert set(groups.groups_of(m)) == {g for g, ms in model.items() if m in ms}
        assert set(groups.channels.values()) == set(model) | tracked


def test_a_publish_is_one_envelope_whatever_the_number_of_members() -> None:
    groups = table()
    for index in range(50):
        groups.join(f"m{index}", index, "room", None, now=0.0)
    local, out = groups.publish("room", Kind.VALUE, b"\xa2hi", now=1.0, exclude="m7")
    assert len(local) == 49
    assert "m7" not in local
    assert isinstance(out, Outgoing)
    assert out.channel == channel_name("test", "room")
    assert decode_envelope(out.payload).kind is Kind.VALUE


def test_publishing_to_a_group_without_local_members_still_reaches_other_nodes() -> None:
    local, out = table().publish("elsewhere", Kind.VALUE, b"\xc0", now=0.0)
    assert local == ()
    assert out.channel == channel_name("test", "elsewhere")


def test_bad_member_data_is_refused_before_anything_changes() -> None:
    groups = table()
    with pytest.raises(EncodeError):
        groups.join("m1", 1, "room", object(), now=0.0)
    assert groups.local("room") == ()
    assert groups.channels == {}


# -- two nodes -------------------------------------------------------------------------


class Broker:
    """What a backplane does, without one: every payload to every other table subscribed."""

    def __init__(self, *tables: GroupTable[str]) -> None:
        self.tables = tables
        self.deliveries: list[tuple[str, Any]] = []

    def send(self, sender: GroupTable[str], out: list[Outgoing], now: float) -> None:
        """Deliver what ``sender`` sent, and the answers it causes, until quiet."""
        queue = list(out)
        while queue:
            item = queue.pop(0)
            for target in self.tables:
                if item.channel not in target.channels:
                    continue
                delivery, answers = target.receive(item.channel, item.payload, now)
                if delivery is not None:
                    self.deliveries.append((target.node, delivery))
                queue += answers


def joined(
    groups: GroupTable[str], member: str, group: str, data: Any, now: float = 0.0
) -> list[Outgoing]:
    first = group not in groups.channels.values()
    out = groups.join(member, int(member[1:]), group, data, now)
    if first:
        out += groups.hello(group, now)  # what the runtime sends once subscribed
    return out


def test_presence_crosses_nodes_and_a_late_node_learns_it() -> None:
    a, b = table("a"), table("b")
    broker = Broker(a, b)
    broker.send(a, joined(a, "m1", "room", "ada"), now=0.0)
    broker.send(b, joined(b, "m2", "room", "bob"), now=1.0)
    assert b.members("room", now=1.0) == [GroupMember("b", 2, "bob"), GroupMember("a", 1, "ada")]
    assert a.members("room", now=1.0) == [GroupMember("a", 1, "ada"), GroupMember("b", 2, "bob")]
    broker.send(a, a.join("m1", 1, "room", "ada2", now=2.0), now=2.0)
    assert [m.data for m in b.members("room", now=2.0)] == ["bob", "ada2"]
    broker.send(a, a.leave("m1", "room", now=3.0), now=3.0)
    assert [m.data for m in b.members("room", now=3.0)] == ["bob"]


def test_values_reach_the_other_nodes_members_and_not_the_sender_twice() -> None:
    a, b = table("a"), table("b")
    broker = Broker(a, b)
    broker.send(a, joined(a, "m1", "room", None), now=0.0)
    broker.send(b, joined(b, "m2", "room", None), now=0.0)
    broker.send(b, joined(b, "m3", "room", None), now=0.0)
    local, out = a.publish("room", Kind.VALUE, b"\xa1x", now=1.0)
    assert local == ("m1",)
    broker.send(a, [out], now=1.0)
    assert [(node, d.members, d.body) for node, d in broker.deliveries] == [
        ("b", ("m2", "m3"), b"\xa1x")
    ]


def test_own_echoes_are_dropped() -> None:
    a = table("a")
    a.join("m1", 1, "room", None, now=0.0)
    _local, out = a.publish("room", Kind.VALUE, b"\xc0", now=0.0)
    assert a.receive(out.channel, out.payload, now=0.0) == (None, [])
    assert a.stats.received == 0


def test_gaps_are_counted_lost_and_stale_envelopes_dropped() -> None:
    a, b = table("a"), table("b")
    b.join("m2", 2, "room", None, now=0.0)
    sent = [a.publish("room", Kind.VALUE, b"\xc0", now=0.0)[1] for _ in range(5)]
    receive = [b.receive(item.channel, item.payload, now=0.0)[0] for item in sent[:2]]
    assert all(delivery is not None for delivery in receive)
    assert b.receive(sent[4].channel, sent[4].payload, now=0.0)[0] is not None
    assert b.stats.lost == 2
    assert b.receive(sent[3].channel, sent[3].payload, now=0.0) == (None, [])
    assert b.stats.out_of_order == 1


def test_a_node_that_starts_numbering_afresh_is_not_out_of_order() -> None:
    a, b = table("a", ttl=1.0), table("b")
    b.join("m2", 2, "room", None, now=0.0)
    for _ in range(3):
        item = a.publish("room", Kind.VALUE, b"\xc0", now=0.0)[1]
        b.receive(item.channel, item.payload, now=0.0)
    a.on_timer(now=10.0)  # "room" unused for a TTL on a: its numbering is forgotten
    item = a.publish("room", Kind.VALUE, b"\xc0", now=10.0)[1]
    assert decode_envelope(item.payload).seq == 1
    assert b.receive(item.channel, item.payload, now=10.0)[0] is not None
    assert (b.stats.out_of_order, b.stats.lost) == (0, 0)


def test_a_silent_node_leaves_presence_after_the_ttl_and_refreshes_keep_it() -> None:
    a, b = table("a", ttl=3.0), table("b", ttl=3.0)
    broker = Broker(a, b)
    broker.send(a, joined(a, "m1", "room", "ada"), now=0.0)
    broker.send(b, joined(b, "m2", "room", "bob"), now=0.0)
    now = 0.0
    while now < 10.0:  # a refreshes every ttl/3
        now += 0.5
        broker.send(a, a.on_timer(now), now)
        assert "ada" in [m.data for m in b.members("room", now)]
    # a is killed: nothing more from it.
    assert "ada" in [m.data for m in b.members("room", now + 2.9)]
    assert [m.data for m in b.members("room", now + 3.1)] == ["bob"]
    b.on_timer(now + 3.1)
    assert b.stats.expired == 1


def test_bad_payloads_on_a_channel_are_counted_and_raised() -> None:
    b = table("b")
    b.join("m2", 2, "room", None, now=0.0)
    channel = channel_name("test", "room")
    with pytest.raises(DecodeError):
        b.receive(channel, b"garbage from another program", now=0.0)
    bad_join = encode_envelope(Envelope(Kind.JOIN, "a", 1, 1, b"\x92\xa1x\xc0"))  # id "x"
    with pytest.raises(DecodeError, match="JOIN"):
        b.receive(channel, bad_join, now=0.0)
    assert b.stats.undecodable == 2
    assert b.receive(channel_name("test", "other"), bad_join, now=0.0) == (None, [])


def test_a_hello_is_answered_with_a_snapshot_by_hosting_nodes_only() -> None:
    a, b = table("a"), table("b")
    a.join("m1", 1, "room", "ada", now=0.0)
    b.track("room")
    hello = b.hello("room", now=0.0)
    assert len(hello) == 1  # b hosts nobody: nothing to snapshot
    _delivery, answers = a.receive(hello[0].channel, hello[0].payload, now=0.0)
    assert [decode_envelope(x.payload).kind for x in answers] == [Kind.SNAPSHOT]
    b.receive(answers[0].channel, answers[0].payload, now=0.0)
    assert b.members("room", now=0.0) == [GroupMember("a", 1, "ada")]


@given(st.sampled_from(list(Kind)), st.integers(1, 3), st.binary(max_size=40))
def test_any_envelope_body_from_the_broker_is_handled_or_a_decode_error(
    kind: Kind, seq: int, body: bytes
) -> None:
    b = table("b")
    b.join("m2", 2, "room", "bob", now=0.0)
    payload = encode_envelope(Envelope(kind, "a", 1, seq, body))
    try:
        b.receive(channel_name("test", "room"), payload, now=0.0)
    except DecodeError:
        assert b.stats.undecodable == 1
    assert GroupMember("b", 2, "bob") in b.members("room", now=0.0)


def test_a_bad_ttl_or_namespace_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="presence_ttl"):
        GroupTable("a", "ns", ttl=0)
    with pytest.raises(ValueError, match="non-empty"):
        GroupTable("a", "", ttl=1)
    with pytest.raises(ValueError, match="node id"):
        GroupTable("a b", "ns", ttl=1)


two_node_ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["join", "leave", "close"]),
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["g1", "g2"]),
    ),
    max_size=30,
)


@given(two_node_ops)
def test_presence_converges_on_both_nodes_after_any_sequence(
    sequence: list[tuple[str, str, str, str]],
) -> None:
    # A TTL longer than the run: silence between steps is not a dead node here.
    nodes = {"a": table("a", ttl=1000.0), "b": table("b", ttl=1000.0)}
    broker = Broker(*nodes.values())
    for node in nodes.values():
        for group in ("g1", "g2"):
            node.track(group)
            broker.send(node, node.hello(group, now=0.0), now=0.0)
    model: dict[tuple[str, str], dict[str, Any]] = {}  # (node, member) -> {group: data}
    for step, (name, op, member, group) in enumerate(sequence):
        node = nodes[name]
        key = f"{name}{member}"
        if op == "join":
            out = node.join(key, int(member[1:]), group, [key, step], now=step)
            model.setdefault((name, member), {})[group] = [key, step]
        elif op == "leave":
            out = node.leave(key, group, now=step)
            model.get((name, member), {}).pop(group, None)
        else:
            out = node.leave_all(key, now=step)
            model.pop((name, member), None)
        broker.send(node, out, now=step)
        for group in ("g1", "g2"):
            expected = {
                (who, int(member[1:]), repr(groups[group]))
                for (who, member), groups in model.items()
                if group in groups
            }
            for viewer in nodes.values():
                seen = {(m.node, m.id, repr(m.data)) for m in viewer.members(group, now=step)}
                assert seen == expected
