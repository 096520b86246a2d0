"""HMAC-SHA256 datagram authentication: key ids for rotation, sessions, anti-replay.

Every authenticated datagram is a header, the payload, and a tag::

    0       1       2                10               18        n-16      n
    +-------+-------+----------------+----------------+---------+---------+
    | flags | key id| session id     | sequence       | payload | tag     |
    +-------+-------+----------------+----------------+---------+---------+
     uint8   uint8   uint64           uint64                     16 bytes

``flags`` is the format version (1) in the high nibble and the direction in
the low one (0: sent by the client, 1: sent by the server). The tag is the
first 16 bytes of HMAC-SHA256(key, header + payload). All integers are
big-endian.

Why these fields:

- **key id**: the receiver picks the key by id, so a sender can move to a
  new key while the receiver still accepts the old one (rotation).
- **session id**: a random 64-bit number the client picks; it names the
  association, the way an IPsec SPI or a QUIC connection id does. The
  anti-replay window is kept per session, not per source address, so a
  datagram replayed from a spoofed address is still a replay. A reply is
  sealed for the client's session, so a reply meant for one client is
  refused by every other.
- **direction**: a datagram sealed by a server is refused by a server, so
  an attacker cannot reflect a server's own datagrams back to it (and the
  same for clients).
- **sequence**: a 64-bit number that never repeats within a session; the
  receiver accepts each once (see :class:`~framework.core.security.replay.ReplayWindow`).
  It starts at the sender's wall clock in microseconds, so a sender that
  restarts with the same session id (a server does: it keeps its clients'
  ids) starts above the numbers it used before, unless it sent more than a
  million datagrams a second on average or its clock stepped back.
- **16-byte tag**: HMAC-SHA256 truncated to 128 bits, as IPsec does
  (RFC 4868) and as RFC 2104 section 5 allows (at least half the hash). A
  forger must guess 128 bits online, one datagram per guess; 16 more bytes
  per datagram would buy nothing against that.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from framework.core._registry import check_limit
from framework.core.errors import AuthenticationError, ConfigError, EncodeError, ReplayedDatagram
from framework.core.security.replay import MAX_WINDOW, MIN_WINDOW, ReplayWindow

__all__ = [
    "HEADER_SIZE",
    "MIN_KEY_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "AuthResponder",
    "AuthSession",
    "HmacAuth",
]

VERSION = 1
_HEADER = struct.Struct(">BBQQ")
#: Bytes before the payload: flags, key id, session id, sequence.
HEADER_SIZE = _HEADER.size
#: Bytes of HMAC-SHA256 kept as the tag.
TAG_SIZE = 16
#: Bytes authentication adds to every datagram.
OVERHEAD = HEADER_SIZE + TAG_SIZE
#: Shortest key accepted: 128 bits, the strength of the tag.
MIN_KEY_SIZE = 16
FROM_CLIENT = VERSION << 4
FROM_SERVER = VERSION << 4 | 1
_MAX_SEQUENCE = 2**64 - 1
_MAX_KEY_ID = 255
_ROLES = {FROM_CLIENT: "client", FROM_SERVER: "server"}


def _first_sequence() -> int:
    # Wall-clock microseconds: above anything an earlier run of this sender
    # used, unless it averaged over one datagram per microsecond.
    return time.time_ns() // 1000


def _check_key_id(key_id: Any) -> int:
    if type(key_id) is not int or not 0 <= key_id <= _MAX_KEY_ID:
        raise ConfigError(
            f"a key id is an int from 0 to {_MAX_KEY_ID}, got {key_id!r}", option="keys"
        )
    return key_id


def _check_key(key_id: int, key: Any) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview):
        raise ConfigError(
            f"key {key_id} must be bytes (e.g. secrets.token_bytes(32)), not {type(key).__name__}",
            option="keys",
        )
    secret = bytes(key)
    if len(secret) < MIN_KEY_SIZE:
        # The message names the length, never the key.
        raise ConfigError(
            f"key {key_id} is {len(secret)} bytes; at least {MIN_KEY_SIZE} are required "
            "(secrets.token_bytes(32) makes a good one)",
            option="keys",
        )
    return secret


class HmacAuth:
    """A keyring and the settings of HMAC-SHA256 datagram authentication.

    ``keys`` maps key ids (0 to 255) to secret keys of at least 16 bytes.
    The sender seals with ``send_key`` (default: the highest id); the
    receiver accepts every key in the ring. :meth:`use` switches the
    sending key and keeps accepting the previous one for ``grace`` seconds
    (``None``: until :meth:`remove_key`). ``window`` is the anti-replay
    window in sequence numbers; ``max_sessions`` bounds how many client
    sessions a server remembers (the least recently heard is forgotten
    first). ``clock`` (monotonic seconds) times the grace period.

    One ``HmacAuth`` may serve any number of servers and clients; each
    creates its own sessions. Put it in a pipeline with
    ``Pipeline(..., datagram=Datagram(auth=auth))`` and the UDP runtime
    seals and opens every datagram; or drive :meth:`session` and
    :meth:`responder` by hand. Keys never appear in ``repr`` or in errors.
    """

    __slots__ = (
        "_clock",
        "_expires",
        "_keys",
        "_send_id",
        "grace",
        "max_sessions",
        "window",
    )

    def __init__(
        self,
        keys: Mapping[int, bytes],
        *,
        send_key: int | None = None,
        grace: float | None = 300.0,
        window: int = 64,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigError("keys must be a non-empty {key id: key} mapping", option="keys")
        self._keys = {_check_key_id(i): _check_key(i, key) for i, key in keys.items()}
        self._expires: dict[int, float] = {}
        if send_key is None:
            send_key = max(self._keys)
        if send_key not in self._keys:
            raise ConfigError(
                f"send_key {send_key!r} is not one of the key ids {sorted(self._keys)}",
                option="send_key",
                value=send_key,
            )
        self._send_id = send_key
        if grace is not None and (type(grace) not in (int, float) or not grace >= 0):
            raise ConfigError(
                f"grace must be a number of seconds >= 0 or None, got {grace!r}",
                option="grace",
                value=grace,
            )
        self.grace = grace
        if type(window) is not int or not MIN_WINDOW <= window <= MAX_WINDOW:
            raise ConfigError(
                f"window must be an int from {MIN_WINDOW} to {MAX_WINDOW}, got {window!r}",
                option="window",
                value=window,
            )
        self.window = window
        check_limit("max_sessions", max_sessions, allow_none=False)
        self.max_sessions = max_sessions
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"HmacAuth(key_ids={self.key_ids}, send_key={self._send_id}, "
            f"grace={self.grace}, window={self.window})"
        )

    # -- the keyring -----------------------------------------------------------------

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The ids of the keys accepted now, in order."""
        self._expire()
        return tuple(sorted(self._keys))

    @property
    def send_key(self) -> int:
        """The id of the key new datagrams are sealed with."""
        return self._send_id

    def add_key(self, key_id: int, key: bytes) -> None:
        """Accept ``key`` under ``key_id`` from now on (it does not seal until :meth:`use`)."""
        _check_key_id(key_id)
        key = _check_key(key_id, key)
        self._expire()
        present = self._keys.get(key_id)
        if present is not None and not hmac.compare_digest(present, key):
            raise ConfigError(
                f"key id {key_id} already names another key; remove it first, or use a new id",
                option="keys",
                value=key_id,
            )
        self._keys[key_id] = key
        self._expires.pop(key_id, None)

    def use(self, key_id: int) -> None:
        """Seal with ``key_id`` from now on; accept the previous key for ``grace`` more seconds."""
        self._expire()
        if key_id not in self._keys:
            raise ConfigError(
                f"key id {key_id!r} is not in the keyring {sorted(self._keys)}; add_key it first",
                option="send_key",
                value=key_id,
            )
        previous, self._send_id = self._send_id, key_id
        self._expires.pop(key_id, None)
        if previous != key_id and self.grace is not None:
            self._expires[previous] = self._clock() + self.grace

    def remove_key(self, key_id: int) -> None:
        """Stop accepting ``key_id`` now. The sending key cannot be removed."""
        self._expire()
        if key_id == self._send_id:
            raise ConfigError(
                f"key {key_id} is the sending key; use() another key first",
                option="keys",
                value=key_id,
            )
        if key_id not in self._keys:
            raise ConfigError(f"no key with id {key_id!r}", option="keys", value=key_id)
        del self._keys[key_id]
        self._expires.pop(key_id, None)

    def _expire(self) -> None:
        if not self._expires:
            return
        now = self._clock()
        for key_id, deadline in list(self._expires.items()):
            if now >= deadline:
                del self._expires[key_id]
                del self._keys[key_id]

    # -- sessions ----------------------------------------------------------------------

    def session(self, *, session_id: int | None = None, sequence: int | None = None) -> AuthSession:
        """A new client session: a random session id, sealing as the client.

        ``session_id`` and ``sequence`` (the first sequence number) are for
        tests and fixed examples: a session id and sequence that were used
        before with the same key make old datagrams acceptable again.
        """
        if session_id is None:
            session_id = secrets.randbits(64)
        return AuthSession(self, session_id, FROM_CLIENT, sequence)

    def responder(self) -> AuthResponder:
        """A server's side: opens datagrams of any client session, and keeps one per session."""
        return AuthResponder(self)

    # -- the wire ----------------------------------------------------------------------

    def _seal(self, flags: int, session_id: int, sequence: int, payload: Any) -> bytes:
        key_id = self._send_id
        key = self._keys[key_id]
        body: bytes = _HEADER.pack(flags, key_id, session_id, sequence) + payload
        return body + hmac.digest(key, body, "sha256")[:TAG_SIZE]

    def _verify(self, datagram: Any, flags: int) -> tuple[int, int, int, memoryview]:
        """Check a datagram's header and tag; return key id, session id, sequence, payload."""
        size = len(datagram)
        if size < OVERHEAD:
            raise AuthenticationError(
                f"datagram of {size} bytes is shorter than the {OVERHEAD} bytes of "
                "authentication header and tag",
                offset=size,
            )
        view = memoryview(datagram)
        got, key_id, session_id, sequence = _HEADER.unpack_from(view)
        if got != flags:
            if got >> 4 != VERSION:
                raise AuthenticationError(
                    f"unknown authentication format version {got >> 4} (flags 0x{got:02x})",
                    offset=0,
                )
            sender = _ROLES.get(got, f"unknown sender (flags 0x{got:02x})")
            raise AuthenticationError(
                f"datagram sealed by a {sender} sent to a {_ROLES[flags ^ 1]}: "
                "a reflected datagram?",
                offset=0,
            )
        self._expire()
        key = self._keys.get(key_id)
        if key is None:
            raise AuthenticationError(
                f"unknown key id {key_id} (accepted: {sorted(self._keys)})",
                key_id=key_id,
                offset=1,
            )
        tag = hmac.digest(key, view[: size - TAG_SIZE], "sha256")[:TAG_SIZE]
        if not hmac.compare_digest(tag, view[size - TAG_SIZE :]):
            raise AuthenticationError(
                f"bad authentication tag (key id {key_id}): forged, corrupted or truncated",
                key_id=key_id,
                offset=size - TAG_SIZE,
            )
        return key_id, session_id, sequence, view[HEADER_SIZE : size - TAG_SIZE]


class AuthSession:
    """One client-server association: seals what this side sends, opens what the other sends.

    ``seal(payload)`` returns the datagram to send; ``open(datagram)``
    returns the payload of an authentic, fresh datagram of this session and
    raises :class:`~framework.core.errors.AuthenticationError` (forged, truncated,
    unknown key, another session's) or
    :class:`~framework.core.errors.ReplayedDatagram` otherwise. Both are
    sans-I/O: no socket, no clock but the wall clock for the first number.
    """

    __slots__ = ("_auth", "_in_flags", "_next", "_out_flags", "session_id", "window")

    def __init__(
        self, auth: HmacAuth, session_id: int, flags: int, sequence: int | None = None
    ) -> None:
        if type(session_id) is not int or not 0 <= session_id <= _MAX_SEQUENCE:
            raise ConfigError(f"a session id is a uint64, got {session_id!r}", option="session_id")
        if sequence is not None and (
            type(sequence) is not int or not 0 <= sequence <= _MAX_SEQUENCE
        ):
            raise ConfigError(f"a sequence number is a uint64, got {sequence!r}", option="sequence")
        self._auth = auth
        self.session_id = session_id
        self._out_flags = flags
        self._in_flags = flags ^ 1
        self._next = sequence if sequence is not None else _first_sequence()
        #: The anti-replay window over the other side's sequence numbers.
        self.window = ReplayWindow(auth.window)

    def __repr__(self) -> str:
        return (
            f"<AuthSession {self.session_id:016x} {self.role} next_sequence={self._next} "
            f"highest_received={self.window.highest}>"
        )

    @property
    def role(self) -> str:
        """``"client"`` or ``"server"``: the side this session seals for."""
        return _ROLES[self._out_flags]

    @property
    def next_sequence(self) -> int:
        """The sequence number the next :meth:`seal` uses."""
        return self._next

    def seal(self, payload: Any) -> bytes:
        """Return ``payload`` (bytes-like) as an authenticated datagram of this session."""
        sequence = self._next
        if sequence > _MAX_SEQUENCE:
            raise EncodeError(
                "this session has used every 64-bit sequence number; start a new session",
                codec="hmac-auth",
            )
        self._next = sequence + 1
        return self._auth._seal(self._out_flags, self.session_id, sequence, payload)

    def open(self, datagram: Any) -> bytes:
        """Return the payload of ``datagram``, or raise if it is not authentic or not fresh."""
        key_id, session_id, sequence, payload = self._auth._verify(datagram, self._in_flags)
        if session_id != self.session_id:
            raise AuthenticationError(
                f"datagram of session {session_id:016x}, not of this one ({self.session_id:016x})",
                key_id=key_id,
                offset=2,
            )
        self._record(key_id, sequence)
        return bytes(payload)

    def _record(self, key_id: int, sequence: int) -> None:
        reason = self.window.accept(sequence)
        if reason is not None:
            detail = (
                "seen before"
                if reason == "seen"
                else f"older than the {self.window.size}-number window"
            )
            raise ReplayedDatagram(
                f"sequence {sequence} of session {self.session_id:016x} {detail}",
                key_id=key_id,
                sequence=sequence,
            )


class AuthResponder:
    """A server's side of authentication: any client's datagrams in, one session per client.

    :meth:`open` returns the :class:`AuthSession` a datagram belongs to (to
    seal replies with) and its payload. A session is created only for an
    authentic datagram, so forgeries cost no memory; at most
    ``auth.max_sessions`` are kept, the least recently heard forgotten first.
    """

    __slots__ = ("_auth", "_sessions", "evicted")

    def __init__(self, auth: HmacAuth) -> None:
        self._auth = auth
        self._sessions: collections.OrderedDict[int, AuthSession] = collections.OrderedDict()
        #: Sessions forgotten to stay within ``max_sessions``.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"<AuthResponder sessions={len(self._sessions)} evicted={self.evicted}>"

    def get(self, session_id: int) -> AuthSession | None:
        """The session with ``session_id``, if one is remembered."""
        return self._sessions.get(session_id)

    def open(self, datagram: Any) -> tuple[AuthSession, bytes]:
        """Authenticate a client's datagram: return its session and its payload."""
        key_id, session_id, sequence, payload = self._auth._verify(datagram, FROM_CLIENT)
        sessions = self._sessions
        session = sessions.get(session_id)
        if session is None:
            if len(sessions) >= self._auth.max_sessions:
                sessions.popitem(last=False)
                self.evicted += 1
            session = sessions[session_id] = AuthSession(self._auth, session_id, FROM_SERVER)
        else:
            sessions.move_to_end(session_id)
        session._record(key_id, sequence)
        return session, bytes(payload)
