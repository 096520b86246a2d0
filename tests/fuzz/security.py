# ruff: noqa: PT017 - invariant checks in a fuzz target, not pytest assertions
"""Fuzz target for the datagram authentication stage (``framework.core.security``).

One input is a run of datagrams a server receives. Each goes to a fresh
``AuthResponder`` (two sessions at most, a 32-number window, two keys), and
an independent oracle decides what must happen: it checks the tag with
``hmac`` from the documented wire layout (flags, key id, session id,
sequence, payload, 16-byte HMAC-SHA256 tag) and keeps its own model of the
sessions (least recently heard evicted first) and their replay windows.

Invariants: only ``AuthenticationError`` escapes; a datagram is accepted
exactly when the oracle finds it authentic and fresh, with the payload the
oracle reads; a fresh-but-authentic datagram refused is a ``ReplayedDatagram``
and nothing else is; at most ``max_sessions`` sessions are kept. The fuzzer
cannot forge a tag, so it learns from seeds that are real sealed datagrams
and mutates them: replays, reordering, truncation, bit flips, and key ids,
sessions and directions swapped.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import struct
from typing import Any

from framework.core.errors import AuthenticationError, ReplayedDatagram
from framework.core.security import HmacAuth

from ._support import Input, Target, seed, split

__all__ = ["TARGETS"]

KEYS = {1: b"k" * 16, 7: hashlib.sha256(b"wirekit fuzz key 7").digest()}
WINDOW = 32
MAX_SESSIONS = 2
_HEADER = struct.Struct(">BBQQ")
_TAG = 16
_FROM_CLIENT = 0x10


def _authentic(datagram: bytes) -> tuple[int, int, bytes] | None:
    """Session id, sequence and payload of a client datagram with a good tag, else None."""
    if len(datagram) < _HEADER.size + _TAG:
        return None
    flags, key_id, session_id, sequence = _HEADER.unpack_from(datagram)
    key = KEYS.get(key_id)
    if flags != _FROM_CLIENT or key is None:
        return None
    body, tag = datagram[:-_TAG], datagram[-_TAG:]
    if not hmac.compare_digest(hmac.new(key, body, "sha256").digest()[:_TAG], tag):
        return None
    return session_id, sequence, datagram[_HEADER.size : -_TAG]


class _Window:
    """A replay window written from the RFC's words, with a set instead of a bitmap."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.seen: set[int] = set()

    def accept(self, sequence: int) -> bool:
        if self.highest is None or sequence > self.highest:
            self.highest = sequence
            self.seen = {s for s in self.seen if sequence - s < WINDOW} | {sequence}
            return True
        if self.highest - sequence >= WINDOW or sequence in self.seen:
            return False
        self.seen.add(sequence)
        return True


def run_auth(data: bytes) -> int:
    """Feed a run of datagrams to a server's responder; compare every verdict with the oracle."""
    inp = Input(data)
    sizes, kind = inp.chunking()
    datagrams = split(inp.rest(), sizes)
    responder = HmacAuth(KEYS, window=WINDOW, max_sessions=MAX_SESSIONS).responder()
    sessions: collections.OrderedDict[int, _Window] = collections.OrderedDict()
    accepted = 0
    for datagram in datagrams:
        verdict = _authentic(datagram)
        expected: Any = None
        if verdict is not None:
            session_id, sequence, payload = verdict
            window = sessions.get(session_id)
            if window is None:
                if len(sessions) >= MAX_SESSIONS:
                    sessions.popitem(last=False)
                window = sessions[session_id] = _Window()
            else:
                sessions.move_to_end(session_id)
            expected = payload if window.accept(sequence) else ReplayedDatagram
        try:
            session, got = responder.open(kind(datagram))
        except ReplayedDatagram as exc:
            assert expected is ReplayedDatagram, f"called a replay, expected {expected!r}: {exc}"
        except AuthenticationError as exc:
            assert verdict is None, f"an authentic datagram refused: {exc}"
        else:
            assert expected is not None, f"accepted a datagram the oracle rejects: {datagram!r}"
            assert expected is not ReplayedDatagram, f"accepted a replay: {datagram!r}"
            assert got == expected, f"payload {got!r}, the oracle reads {expected!r}"
            assert session.session_id == verdict[0]  # type: ignore[index]
            accepted += 1
        assert len(responder) <= MAX_SESSIONS
    return accepted


def seeds_auth() -> list[bytes]:
    """Real sealed datagrams of equal size: in order, replayed, reordered, three sessions."""
    size = 40  # 34 bytes of header and tag, 6 of payload: split() cuts one per chunk
    out = []
    for send_key in KEYS:
        auth = HmacAuth(KEYS, send_key=send_key, window=WINDOW)
        first = auth.session(session_id=0x1111, sequence=100)
        second = auth.session(session_id=0x2222, sequence=5)
        third = auth.session(session_id=0x3333, sequence=2**64 - 3)
        a, b, c = (first.seal(b"ab%04d" % i) for i in range(3))
        far = auth.session(session_id=0x1111, sequence=100 + WINDOW + 1).seal(b"far-up")
        runs = [
            [a, b, c],
            [a, a, b],  # a replay
            [c, a, b],  # reordered within the window
            [a, second.seal(b"second"), third.seal(b"third!"), b],  # evicts session 1
            [c, far, a],  # a jump ahead leaves `a` too old
        ]
        for run in runs:
            assert {len(d) for d in run} == {size}
            out.append(seed(b"".join(run), [1, size, 0]))
    return out


TARGETS = [
    Target(
        "hmac-auth",
        "HmacAuth responder: verdicts match an HMAC oracle and a model of sessions and windows",
        run_auth,
        seeds_auth,
        max_len=1024,
    ),
]
