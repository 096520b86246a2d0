"""What a backplane is to wirekit: a broker's publish/subscribe, moved as bytes.

A backplane carries one node's group publishes to the other nodes that host
members of the same group. It knows nothing of groups, members, values or
pipelines: wirekit hands it a channel name and an opaque payload (an
envelope the group layer encodes, naming the sending node so each node can
drop its own echoes) and gets the payloads of the channels it subscribed to
back through ``deliver``. Everything else — which channels a node needs,
presence, per-publisher order checks, fan-out to local members — is the
group layer's, with no I/O, so a new broker is only this adapter.

The contract every backplane keeps (``tests/runtime/test_backplane_contract.py``
runs it against each one):

* :meth:`publish` never blocks and never raises for a broker outage: it
  queues the payload, or, while the broker is unreachable or the queue is
  full, drops it and counts it in :attr:`BackplaneStats.dropped`. One
  :meth:`publish` is one broker message, whatever the number of members.
* Payloads one node publishes on one channel reach each subscriber in the
  order they were published (per-publisher order).
* Delivery across nodes is at most once: a payload published while the
  broker is down is dropped, not replayed.
* A lost broker connection is re-established without a restart, with the
  subscriptions restored; ``on_state(False)`` and ``on_state(True)`` report
  the outage and its end, once each.
* ``deliver`` is called on the event loop, and must not block; the group
  layer bounds each member's queue, so a member that stops reading never
  stalls the backplane's reader.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import attrs

__all__ = ["Backplane", "BackplaneStats", "Deliver", "StateChanged"]

#: Called with ``(channel, payload)`` for every message on a subscribed channel.
Deliver = Callable[[str, bytes], None]
#: Called with ``True`` when the broker connection comes (back) up, ``False`` when it is lost.
StateChanged = Callable[[bool], None]


@attrs.define
class BackplaneStats:
    """Counters of one backplane connection."""

    #: Payloads handed to the broker.
    published: int = 0
    #: Payloads received on subscribed channels (the node's own echoes included).
    received: int = 0
    #: Payloads :meth:`Backplane.publish` dropped: broker unreachable or queue full.
    dropped: int = 0
    #: Times the broker connection was re-established after a loss.
    reconnects: int = 0


class Backplane(abc.ABC):
    """A broker's publish/subscribe, for the group layer (see the module's contract)."""

    #: The URL the backplane was made from, e.g. ``redis://127.0.0.1:6379/0``.
    url: str
    stats: BackplaneStats

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the broker connection is up now (``memory://`` always is)."""

    @abc.abstractmethod
    async def start(self, deliver: Deliver, on_state: StateChanged) -> None:
        """Connect to the broker; from now on payloads go to ``deliver``.

        Raises :class:`~framework.core.errors.ConfigError` naming the URL if
        the broker cannot be reached at start: a node that cannot reach its
        backplane at start-up is misconfigured, unlike one whose broker goes
        away later.
        """

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s payloads (again, after a reconnect, without being asked)."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``'s payloads."""

    @abc.abstractmethod
    def publish(self, channel: str, payload: bytes) -> bool:
        """Queue one broker message; ``False`` if it was dropped (and counted)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is queued (bounded in time), then disconnect."""
