"""What the broker backplanes make of their URLs and channel names (no broker needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework import ConfigError
from framework.runtime.backplane import backplane_from_url
from framework.runtime.backplane.nats import NatsBackplane, subject_for
from framework.runtime.backplane.redis import RedisBackplane

FORBIDDEN_IN_TOKEN = set(" \t\r\n\f\v*>")


def is_subject(subject: str) -> bool:
    """What nats-server accepts as a publish subject: non-empty tokens, no wildcards."""
    tokens = subject.split(".")
    return all(
        token and not any(c in FORBIDDEN_IN_TOKEN or not c.isprintable() for c in token)
        for token in tokens
    )


@given(st.text())
def test_every_channel_maps_to_a_valid_subject(channel: str) -> None:
    assert is_subject(subject_for(channel))


@given(st.text(), st.text())
def test_distinct_channels_map_to_distinct_subjects(first: str, second: str) -> None:
    if first != second:
        assert subject_for(first) != subject_for(second)


@pytest.mark.parametrize("channel", ["wirekit.chat.users", "wirekit.chat.=23lobby", "a:b"])
def test_a_channel_that_is_already_a_subject_is_kept(channel: str) -> None:
    assert subject_for(channel) == channel


@pytest.mark.parametrize(
    ("channel", "subject"),
    [("a..b", "a%2E%2Eb"), ("two words", "two%20words"), ("", "%"), ("x.*", "x%2E%2A")],
)
def test_other_channels_are_escaped_into_one_token(channel: str, subject: str) -> None:
    assert subject_for(channel) == subject


def test_urls_choose_the_backplane_and_its_server() -> None:
    redis = backplane_from_url("redis://10.0.0.5:6380/3", max_queue=5)
    assert isinstance(redis, RedisBackplane)
    assert redis.max_queue == 5
    assert isinstance(backplane_from_url("nats://127.0.0.1:4222"), NatsBackplane)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/zero", "redis://127.0.0.1:notaport", "nats://127.0.0.1:4222/path"],
)
def test_a_malformed_broker_url_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        backplane_from_url(url)
    assert url in str(caught.value)
    assert caught.value.option == "backplane"


def test_a_queue_bound_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match="max_queue"):
        backplane_from_url("redis://127.0.0.1:6379", max_queue=0)
