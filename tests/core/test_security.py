"""The sans-I/O security stage: HMAC authentication, key rotation, anti-replay, with bytes alone."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.core.errors import AuthenticationError, ConfigError, EncodeError, ReplayedDatagram
from framework.core.framing import Datagram
from framework.core.pipeline import Pipeline
from framework.core.security import (
    HEADER_SIZE,
    OVERHEAD,
    TAG_SIZE,
    HmacAuth,
    ReplayWindow,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
payloads = st.binary(max_size=1500)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(auth: HmacAuth | None = None) -> tuple[HmacAuth, object, object]:
    auth = auth if auth is not None else HmacAuth({1: KEY})
    return auth, auth.session(), auth.responder()


# -- seal and open ----------------------------------------------------------------------


@given(st.lists(payloads, min_size=1, max_size=10))
def test_sealed_datagrams_open_to_their_payload_both_ways(messages: list[bytes]) -> None:
    auth = HmacAuth({1: KEY})
    client, responder = auth.session(), auth.responder()
    for payload in messages:
        datagram = client.seal(payload)
        assert len(datagram) == len(payload) + OVERHEAD
        session, opened = responder.open(datagram)
        assert opened == payload
        assert session.session_id == client.session_id
        assert client.open(session.seal(payload[::-1])) == payload[::-1]
    assert len(responder) == 1


@given(payloads, st.data())
def test_any_bit_flip_is_rejected_as_not_authentic(payload: bytes, data: st.DataObject) -> None:
    _auth, client, responder = pair()
    datagram = bytearray(client.seal(payload))
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    datagram[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError) as caught:
        responder.open(bytes(datagram))
    assert type(caught.value) is AuthenticationError  # forged, never "replayed"
    assert len(responder) == 0  # a forgery creates no session
    # The untouched original still opens: the forgery consumed nothing.
    datagram[bit // 8] ^= 1 << (bit % 8)
    assert responder.open(bytes(datagram))[1] == payload


@given(payloads, st.data())
def test_truncated_or_extended_datagrams_are_rejected(payload: bytes, data: st.DataObject) -> None:
    _auth, client, responder = pair()
    datagram = client.seal(payload)
    cut = data.draw(st.integers(0, len(datagram) - 1))
    with pytest.raises(AuthenticationError):
        responder.open(datagram[:cut])
    with pytest.raises(AuthenticationError):
        responder.open(datagram + data.draw(st.binary(min_size=1, max_size=20)))


@given(st.binary(max_size=200))
def test_garbage_is_rejected_with_an_authentication_error(garbage: bytes) -> None:
    _auth, client, responder = pair()
    with pytest.raises(AuthenticationError):
        responder.open(garbage)
    with pytest.raises(AuthenticationError):
        client.open(garbage)


@given(payloads, st.integers(1, 5))
def test_a_replayed_datagram_is_rejected_every_time(payload: bytes, replays: int) -> None:
    _auth, client, responder = pair()
    datagram = client.seal(payload)
    responder.open(datagram)
    for _ in range(replays):
        with pytest.raises(ReplayedDatagram) as caught:
            responder.open(datagram)
        assert caught.value.key_id == 1
        assert caught.value.sequence == client.next_sequence - 1
        assert "seen before" in str(caught.value)


@given(st.integers(2, 64), st.randoms(use_true_random=False))
def test_reordering_within_the_window_is_accepted_once(count: int, rng: random.Random) -> None:
    _auth, client, responder = pair()
    datagrams = [client.seal(n.to_bytes(2, "big")) for n in range(count)]
    shuffled = datagrams[:]
    rng.shuffle(shuffled)
    assert sorted(responder.open(d)[1] for d in shuffled) == [
        d[HEADER_SIZE:-TAG_SIZE] for d in datagrams
    ]
    for datagram in shuffled:
        with pytest.raises(ReplayedDatagram):
            responder.open(datagram)


def test_a_datagram_older_than_the_window_is_refused() -> None:
    _auth, client, responder = pair(HmacAuth({1: KEY}, window=32))
    late = client.seal(b"late")
    for _ in range(32):
        responder.open(client.seal(b"newer"))
    with pytest.raises(ReplayedDatagram, match="older than the 32-number window"):
        responder.open(late)


@given(st.lists(st.integers(0, 300), max_size=200), st.sampled_from([32, 64, 128]))
def test_the_window_matches_a_model_and_stays_bounded(sequences: list[int], size: int) -> None:
    window = ReplayWindow(size)
    seen: set[int] = set()
    for sequence in sequences:
        highest = max(seen) if seen else None
        fresh = sequence not in seen and (highest is None or sequence > highest - size)
        assert (window.accept(sequence) is None) == fresh
        if fresh:
            seen.add(sequence)
        assert window._bits.bit_length() <= size  # memory is bounded by the window
    assert window.highest == (max(seen) if seen else None)


def test_a_huge_jump_does_not_grow_the_window() -> None:
    window = ReplayWindow(64)
    window.accept(1)
    window.accept(2**63)
    assert window._bits == 1
    assert window.accept(1) == "too old"
    assert window.accept(2**63) == "seen"
    assert window.accept(2**63 - 5) is None


@pytest.mark.parametrize("size", [0, 31, 4097, 64.0])
def test_window_sizes_are_checked(size: object) -> None:
    with pytest.raises(ValueError, match="window size"):
        ReplayWindow(size)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        HmacAuth({1: KEY}, window=size)  # type: ignore[arg-type]


# -- sessions and directions --------------------------------------------------------------


def test_a_servers_datagram_reflected_back_to_a_server_is_refused() -> None:
    _auth, client, responder = pair()
    session, _ = responder.open(client.seal(b"hello"))
    reply = session.seal(b"reply")
    with pytest.raises(AuthenticationError, match="sealed by a server sent to a server"):
        responder.open(reply)
    with pytest.raises(AuthenticationError, match="sealed by a client sent to a client"):
        client.open(client.seal(b"to myself"))


def test_a_reply_for_one_client_is_refused_by_another() -> None:
    auth, alice, responder = pair()
    bob = auth.session()
    to_alice, _ = responder.open(alice.seal(b"hi"))
    reply = to_alice.seal(b"for alice only")
    with pytest.raises(AuthenticationError, match="not of this one"):
        bob.open(reply)
    assert alice.open(reply) == b"for alice only"


def test_a_replay_is_caught_whatever_session_object_sees_it() -> None:
    # The window belongs to the session id, not to an address: a replay sent
    # from another (spoofed) address reaches the same session and is caught.
    _auth, client, responder = pair()
    datagram = client.seal(b"pay 10")
    first, _ = responder.open(datagram)
    with pytest.raises(ReplayedDatagram):
        responder.open(datagram)
    assert responder.get(client.session_id) is first


def test_sessions_are_random_and_sequences_start_at_the_clock() -> None:
    auth = HmacAuth({1: KEY})
    before = time.time_ns() // 1000
    sessions = [auth.session() for _ in range(50)]
    assert len({s.session_id for s in sessions}) == 50
    assert all(s.next_sequence >= before for s in sessions)
    assert sessions[0].role == "client"


def test_a_restarted_server_keeps_serving_a_running_client() -> None:
    auth = HmacAuth({1: KEY})
    client = auth.session()
    old_server = auth.responder()
    session, _ = old_server.open(client.seal(b"one"))
    assert client.open(session.seal(b"reply")) == b"reply"
    restarted = auth.responder()  # same key, no memory of the client
    again, _ = restarted.open(client.seal(b"two"))
    # Its sequence numbers start at the clock: above the old server's.
    assert client.open(again.seal(b"after restart")) == b"after restart"


def test_the_responder_remembers_at_most_max_sessions() -> None:
    auth = HmacAuth({1: KEY}, max_sessions=2)
    responder = auth.responder()
    clients = [auth.session() for _ in range(3)]
    for client in clients:
        responder.open(client.seal(b"x"))
    assert len(responder) == 2
    assert responder.evicted == 1
    assert responder.get(clients[0].session_id) is None


def test_sequence_numbers_never_wrap() -> None:
    auth = HmacAuth({1: KEY})
    client = auth.session(sequence=2**64 - 1)
    auth.responder().open(client.seal(b"last"))
    with pytest.raises(EncodeError, match="every 64-bit sequence number"):
        client.seal(b"one too many")


def test_fixed_session_and_sequence_give_fixed_bytes() -> None:
    auth = HmacAuth({7: KEY})
    first = auth.session(session_id=0x0102030405060708, sequence=5).seal(b"hi")
    again = auth.session(session_id=0x0102030405060708, sequence=5).seal(b"hi")
    assert first == again
    assert first[:HEADER_SIZE].hex() == "1007" + "0102030405060708" + "0000000000000005"
    assert first[HEADER_SIZE:-TAG_SIZE] == b"hi"


# -- keys and rotation ----------------------------------------------------------------------


def test_unknown_key_ids_are_refused_naming_the_id() -> None:
    sender = HmacAuth({2: OTHER_KEY})
    receiver = HmacAuth({1: KEY})
    with pytest.raises(AuthenticationError, match="unknown key id 2") as caught:
        receiver.responder().open(sender.session().seal(b"x"))
    assert caught.value.key_id == 2


def test_the_same_id_with_another_key_is_a_bad_tag() -> None:
    with pytest.raises(AuthenticationError, match="bad authentication tag") as caught:
        HmacAuth({1: KEY}).responder().open(HmacAuth({1: OTHER_KEY}).session().seal(b"x"))
    assert caught.value.key_id == 1


def test_rotation_accepts_the_old_key_for_the_grace_period_then_refuses_it() -> None:
    clock = FakeClock()
    server = HmacAuth({1: KEY}, grace=60, clock=clock)
    client = HmacAuth({1: KEY}, clock=clock)
    responder, laggard = server.responder(), client.session()

    server.add_key(2, OTHER_KEY)  # step 1: the server accepts the new key
    assert server.key_ids == (1, 2)
    assert server.send_key == 1
    server.use(2)  # step 3 (clients moved in step 2): the server seals with it
    session, _ = responder.open(laggard.seal(b"still key 1"))
    assert session.seal(b"")[1] == 2  # the key id byte
    clock.now += 59
    responder.open(laggard.seal(b"within the grace period"))
    clock.now += 2
    with pytest.raises(AuthenticationError, match="unknown key id 1"):
        responder.open(laggard.seal(b"too late"))
    assert server.key_ids == (2,)

    client.add_key(2, OTHER_KEY)
    client.use(2)
    assert responder.open(laggard.seal(b"on the new key"))[1] == b"on the new key"


def test_without_grace_an_old_key_stays_until_removed() -> None:
    clock = FakeClock()
    auth = HmacAuth({1: KEY, 2: OTHER_KEY}, grace=None, clock=clock)
    assert auth.send_key == 2  # the highest id by default
    old = HmacAuth({1: KEY}).session()
    responder = auth.responder()
    clock.now += 10**6
    responder.open(old.seal(b"a"))
    auth.remove_key(1)
    with pytest.raises(AuthenticationError, match="unknown key id 1"):
        responder.open(old.seal(b"b"))


def test_keyring_changes_are_checked() -> None:
    auth = HmacAuth({1: KEY})
    with pytest.raises(ConfigError, match="sending key"):
        auth.remove_key(1)
    with pytest.raises(ConfigError, match="no key with id 9"):
        auth.remove_key(9)
    with pytest.raises(ConfigError, match="add_key it first"):
        auth.use(9)
    with pytest.raises(ConfigError, match="already names another key"):
        auth.add_key(1, OTHER_KEY)
    auth.add_key(1, KEY)  # the same key again is harmless
    with pytest.raises(ConfigError, match="key id"):
        auth.add_key(256, OTHER_KEY)


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({}, "non-empty"),
        ({1: b"short"}, "at least 16"),
        ({1: "a text key, not bytes"}, "must be bytes"),
        ({-1: KEY}, "key id"),
        ({"1": KEY}, "key id"),
    ],
)
def test_bad_keys_are_refused(keys: dict[object, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HmacAuth(keys)  # type: ignore[arg-type]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="send_key"):
        HmacAuth({1: KEY}, send_key=2)
    with pytest.raises(ConfigError, match="grace"):
        HmacAuth({1: KEY}, grace=-1)
    with pytest.raises(ConfigError, match="max_sessions"):
        HmacAuth({1: KEY}, max_sessions=0)
    with pytest.raises(ConfigError, match="auth"):
        Datagram(auth="secret")  # type: ignore[arg-type]


def test_keys_never_show() -> None:
    secret = b"correct horse battery staple"
    auth = HmacAuth({1: secret})
    pipeline = Pipeline(datagram=Datagram(auth=auth))
    shown = [repr(auth), str(auth), repr(pipeline), repr(auth.session()), repr(auth.responder())]
    with pytest.raises(ConfigError) as caught:
        auth.add_key(1, secret[:-1] + b"!")
    shown.append(str(caught.value))
    with pytest.raises(ConfigError) as short:
        HmacAuth({1: secret[:10]})
    shown.append(str(short.value))
    for text in shown:
        assert "horse" not in text
        assert "correct" not in text
        assert secret.hex()[:12] not in text


def test_the_datagram_framing_carries_the_stage() -> None:
    auth = HmacAuth({1: KEY})
    assert Datagram().overhead == 0
    assert Datagram(auth=auth).overhead == OVERHEAD == 34
    assert Pipeline(datagram=Datagram(auth=auth)).datagram_framing.auth is auth


def test_the_stage_is_sans_io() -> None:
    # attrs imports threading for a lock of its own: count what the stage adds.
    script = (
        "import sys, attrs, cattrs, msgpack\n"
        "before = set(sys.modules)\n"
        "import framework.core.security, framework.core.framing\n"
        "io = ('asyncio', 'socket', 'ssl', 'selectors', 'threading')\n"
        "print(sorted(m for m in io if m in sys.modules and m not in before))\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
