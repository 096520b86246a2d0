"""The token bucket: refill, burst, debt and a clock that steps back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.core.errors import ConfigError
from framework.core.ratelimit import TokenBucket


def test_starts_full_and_refuses_past_the_burst() -> None:
    bucket = TokenBucket(10, 3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(10, 3, now=0.0)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.tokens(0.1) == pytest.approx(1.0)
    assert bucket.tokens(100.0) == 3.0


def test_burst_defaults_to_one_second_of_rate() -> None:
    assert TokenBucket(50, now=0.0).burst == 50
    assert TokenBucket(0.5, now=0.0).burst == 1  # never below one token


def test_charge_goes_into_debt_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(100, 10, now=0.0)
    assert bucket.charge(0.0, 10) == 0.0
    assert bucket.charge(0.0, 50) == pytest.approx(0.5)
    assert not bucket.take(0.25)
    assert bucket.tokens(0.5) == pytest.approx(0.0)


def test_a_clock_stepping_back_mints_nothing() -> None:
    bucket = TokenBucket(10, 1, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(1.0)
    assert bucket.tokens(5.0) == 0.0


@pytest.mark.parametrize(
    ("rate", "burst", "named", "shown"),
    [
        (0, None, "rate", "0"),
        (-1, None, "rate", "-1"),
        (float("nan"), None, "rate", "nan"),
        ("10", None, "rate", "'10'"),
        (True, None, "rate", "True"),
        (1, 0.5, "burst", "0.5"),
        (1, float("nan"), "burst", "nan"),
        (1, "3", "burst", "'3'"),
    ],
)
def test_refuses_impossible_buckets_with_a_config_error_naming_the_argument(
    rate: object, burst: object, named: str, shown: str
) -> None:
    with pytest.raises(ConfigError, match=rf"TokenBucket {named} must be .*, got {shown}$") as info:
        TokenBucket(rate, burst, now=0.0)  # type: ignore[arg-type]
    assert info.value.option == named
    assert isinstance(info.value, ValueError)  # what a caller of a constructor catches


def test_accepts_an_infinite_rate_and_burst() -> None:
    bucket = TokenBucket(float("inf"), float("inf"), now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))


@given(
    rate=st.floats(0.1, 1e6),
    burst=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 10), st.integers(1, 5)), max_size=50),
)
def test_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    now = granted = 0.0
    for advance, count in steps:
        now += advance
        if bucket.take(now, count):
            granted += count
    assert granted <= burst + rate * now + 1e-6 * max(1.0, rate * now)
