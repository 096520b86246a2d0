"""Security stages for datagrams, sans-I/O: authentication and anti-replay.

UDP has no TLS in the standard library. :class:`HmacAuth` authenticates
every datagram with HMAC-SHA256 under a key id (so keys can rotate), binds
it to a session and a direction, and numbers it so that a receiver accepts
each datagram once (:class:`ReplayWindow`). It authenticates; it does not
encrypt. The UDP runtime applies it when a pipeline's datagram framing has
``auth`` set; :meth:`HmacAuth.session` and :meth:`HmacAuth.responder` drive
it by hand, with bytes alone.
"""

from __future__ import annotations

from framework.core.security.hmac_auth import (
    HEADER_SIZE,
    MIN_KEY_SIZE,
    OVERHEAD,
    TAG_SIZE,
    AuthResponder,
    AuthSession,
    HmacAuth,
)
from framework.core.security.replay import ReplayWindow

__all__ = [
    "HEADER_SIZE",
    "MIN_KEY_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "AuthResponder",
    "AuthSession",
    "HmacAuth",
    "ReplayWindow",
]
