"""The anti-replay window: accept each sequence number once, refuse the too old.

The sliding bitmap of IPsec (RFC 4303, section 3.4.3) and DTLS (RFC 6347,
section 4.1.2.6): the window remembers the highest number accepted and which
of the ``size`` numbers below it have been seen. Newer numbers slide it
forward; a number inside it is accepted once; a number below it is refused,
because the window can no longer tell whether it was seen.
"""

from __future__ import annotations

__all__ = ["ReplayWindow"]

#: The smallest window offered: RFC 4303 requires 32 and recommends 64.
MIN_WINDOW = 32
#: The largest: past it the bitmap costs more than reordering is worth.
MAX_WINDOW = 4096


class ReplayWindow:
    """Which sequence numbers of one sender have been accepted.

    Memory is bounded by ``size`` bits whatever numbers arrive: a jump far
    ahead clears the bitmap instead of growing it.
    """

    __slots__ = ("_bits", "_mask", "highest", "size")

    def __init__(self, size: int = 64) -> None:
        if type(size) is not int or not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"window size must be an int from {MIN_WINDOW} to {MAX_WINDOW}")
        self.size = size
        #: The highest sequence number accepted, or ``None`` before the first.
        self.highest: int | None = None
        # Bit i stands for highest - i.
        self._bits = 0
        self._mask = (1 << size) - 1

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, highest={self.highest})"

    def check(self, sequence: int) -> str | None:
        """Why ``sequence`` would be refused (``"seen"``, ``"too old"``), or ``None``."""
        highest = self.highest
        if highest is None or sequence > highest:
            return None
        age = highest - sequence
        if age >= self.size:
            return "too old"
        if self._bits >> age & 1:
            return "seen"
        return None

    def accept(self, sequence: int) -> str | None:
        """Record ``sequence`` if the window accepts it; else say why not (see :meth:`check`)."""
        highest = self.highest
        if highest is None:
            self.highest = sequence
            self._bits = 1
            return None
        if sequence > highest:
            shift = sequence - highest
            # Never shift by a huge jump: the bitmap would grow with it.
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.highest = sequence
            return None
        reason = self.check(sequence)
        if reason is None:
            self._bits |= 1 << (highest - sequence)
        return reason
