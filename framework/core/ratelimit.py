"""A token bucket, sans-I/O: the caller passes the time.

The runtime keeps one per stream connection or UDP peer when
``Limits.max_frames_per_second`` is set. It lives in the core because it
never reads a clock of its own, so tests drive it with any numbers.
"""

from __future__ import annotations

from framework.core.errors import ConfigError

__all__ = ["TokenBucket"]


def _number(name: str, value: object, *, minimum: float, inclusive: bool) -> float:
    """``value`` as a float if it is a number above ``minimum`` (or equal, if inclusive)."""
    # bool is an int, but True is no rate; the comparisons refuse NaN.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= minimum if inclusive else value > minimum)
    ):
        bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"
        raise ConfigError(
            f"TokenBucket {name} must be a number {bound}, got {value!r}", option=name, value=value
        )
    return float(value)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    :meth:`take` is for traffic that can be dropped (datagrams): it takes a
    token if there is one. :meth:`charge` is for traffic that must not be
    lost (frames already read from a stream): it always takes, may go into
    debt, and says how long the caller should stop reading to pay it back.

    A ``rate`` that is not positive, or a ``burst`` below one token, raises
    :class:`~framework.core.errors.ConfigError` naming the argument.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None, *, now: float) -> None:
        self.rate = _number("rate", rate, minimum=0, inclusive=False)
        # A burst below one token could never pay for a single frame.
        self.burst = (
            _number("burst", burst, minimum=1, inclusive=True)
            if burst is not None
            else max(1.0, self.rate)
        )
        self._tokens = self.burst
        self._stamp = now

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self._tokens:.3f})"

    def _refill(self, now: float) -> None:
        # A clock that steps back (or a caller passing an older time) must
        # not mint tokens or erase debt.
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (negative while in debt)."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, count: float = 1.0) -> bool:
        """Take ``count`` tokens if all are there; return whether it did."""
        self._refill(now)
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False

    def charge(self, now: float, count: float = 1.0) -> float:
        """Take ``count`` tokens, into debt if need be; return seconds until out of debt."""
        self._refill(now)
        self._tokens -= count
        return -self._tokens / self.rate if self._tokens < 0 else 0.0
