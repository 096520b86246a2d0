"""Per-sender sequence tracking: what a UDP receiver does with ``count``.

Datagrams can be lost, duplicated or reordered. For each sender the tracker
keeps the newest ``count`` seen and accepts only newer ones, comparing in
serial-number arithmetic (RFC 1982) so the 32-bit counter may wrap around.
A window of the last 64 numbers (as in IPsec's anti-replay window) tells a
late update from a repeated one.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

__all__ = ["SERIAL_BITS", "WINDOW", "SequenceTracker"]

SERIAL_BITS = 32
WINDOW = 64
_MODULUS = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)
_WINDOW_MASK = (1 << WINDOW) - 1


@attrs.define
class SequenceTracker:
    """Accept each sender's updates in order; count what was lost, late or repeated.

    ``lost`` counts numbers skipped over and not seen since; an update that
    arrives after a newer one is ``out_of_order`` (and, within the window, no
    longer counted lost) and is dropped as stale; one seen before is a
    ``duplicate``.
    """

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    lost: int = 0
    # sender -> (newest count, bits of numbers seen, bits of numbers skipped),
    # bit i standing for newest - i, over the last WINDOW numbers.
    _state: dict[Hashable, tuple[int, int, int]] = attrs.field(
        factory=dict, alias="state", repr=False
    )

    def newest(self, sender: Hashable) -> int | None:
        """The newest ``count`` accepted from ``sender``."""
        state = self._state.get(sender)
        return state[0] if state is not None else None

    def accept(self, sender: Hashable, count: int) -> bool:
        """Record an update; ``True`` if it is newer than any seen from ``sender``."""
        self.received += 1
        count %= _MODULUS
        state = self._state.get(sender)
        if state is None:
            self._state[sender] = (count, 1, 0)
            self.accepted += 1
            return True
        newest, seen, missing = state
        delta = (count - newest) % _MODULUS
        if delta == 0:
            self.duplicates += 1
            return False
        if delta < _HALF:
            skipped = min(delta - 1, WINDOW)
            self.lost += delta - 1
            seen = ((seen << delta) | 1) & _WINDOW_MASK
            missing = ((missing << delta) | (((1 << skipped) - 1) << 1)) & _WINDOW_MASK
            self._state[sender] = (count, seen, missing)
            self.accepted += 1
            return True
        age = _MODULUS - delta  # how far behind the newest
        bit = 1 << age if age < WINDOW else 0
        if seen & bit:
            self.duplicates += 1
            return False
        if missing & bit:
            # Late, not lost after all.
            self.lost -= 1
            missing &= ~bit
        self._state[sender] = (newest, seen | bit, missing)
        self.out_of_order += 1
        return False
