"""The log limiter: the first line of a kind, then one count per interval."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest

from framework.core.errors import ConfigError
from framework.runtime.logs import LogLimiter, configure_logging

log = logging.getLogger("wirekit.test-logs")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def refuse(limiter: LogLimiter, now: float, peer: str = "p") -> None:
    limiter.log(now, "refused", "refused connections", logging.WARNING, "refusing %s", peer)


def test_the_first_line_goes_out_and_the_rest_are_counted_until_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    limiter = LogLimiter(log, interval=10.0)
    for i in range(4_000):
        refuse(limiter, now=i / 1000, peer=f"p{i}")
    assert lines(caplog) == ["refusing p0"]
    assert limiter.due == 10.0
    limiter.flush(9.9)
    assert len(lines(caplog)) == 1
    limiter.flush(10.0)
    assert lines(caplog)[1:] == ["refused 3,999 more connections in the last 10 s"]
    assert limiter.due is None


def test_an_event_after_the_interval_reports_the_count_then_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    limiter = LogLimiter(log, interval=10.0)
    refuse(limiter, 0.0, "a")
    refuse(limiter, 1.0, "b")
    refuse(limiter, 12.0, "c")
    assert lines(caplog) == [
        "refusing a",
        "refused 1 more connections in the last 10 s",
        "refusing c",
    ]


def test_kinds_are_limited_apart_and_at_their_own_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    limiter = LogLimiter(log, interval=1.0)
    refuse(limiter, 0.0)
    limiter.log(0.0, "forged", "dropped datagrams (forged)", logging.INFO, "forged one")
    limiter.log(0.5, "forged", "dropped datagrams (forged)", logging.INFO, "forged two")
    limiter.flush(1.0)
    assert [(r.getMessage(), r.levelno) for r in caplog.records if r.name == log.name] == [
        ("refusing p", logging.WARNING),
        ("forged one", logging.INFO),
        ("dropped 1 more datagrams (forged) in the last 1 s", logging.INFO),
    ]


def test_with_a_scheduler_the_count_is_reported_when_its_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    timers: list[tuple[float, Callable[[], None]]] = []
    limiter = LogLimiter(log, interval=10.0, schedule=lambda at, fire: timers.append((at, fire)))
    refuse(limiter, 0.0)
    assert timers == []  # nothing held, nothing to report later
    refuse(limiter, 1.0)
    refuse(limiter, 2.0)
    assert [at for at, _ in timers] == [10.0]  # one timer for the held count
    timers.pop()[1]()
    assert lines(caplog)[1:] == ["refused 2 more connections in the last 10 s"]
    assert timers == []


class Subject:
    """What a connection offers the log fields: an id, a peer, the listener that accepted it."""

    def __init__(self, peer: object, listener: str | None = None) -> None:
        self.id = 7
        self.peer = peer
        self.listener = listener

    def __repr__(self) -> str:
        return "<Connection #7>"


@pytest.mark.parametrize(
    ("peer", "text"),
    [(("127.0.0.1", 5000), "127.0.0.1:5000"), (("::1", 5000, 0, 0), "[::1]:5000"), ("/s", "/s")],
)
def test_json_lines_name_the_connection_a_line_is_about(peer: object, text: str) -> None:
    stream = io.StringIO()
    handler = configure_logging(level=logging.INFO, log_format="json", stream=stream)
    try:
        log.warning("%r: closing: %s", Subject(peer), "FrameTooLarge")
        log.info("no connection here")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "<Connection #7>: closing: FrameTooLarge"
    assert (first["level"], first["logger"]) == ("WARNING", log.name)
    assert (first["connection"], first["peer"]) == (7, text)
    assert "time" in first
    assert "connection" not in second


def test_text_is_the_default_and_an_unknown_format_is_refused() -> None:
    stream = io.StringIO()
    handler = configure_logging(level=logging.INFO, stream=stream)
    try:
        log.warning("plain %s", "text")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("WARNING wirekit.test-logs: plain text")
    with pytest.raises(ConfigError, match="log_format"):
        configure_logging(log_format="xml")


def test_json_lines_name_the_listener_and_transport_of_a_served_connection() -> None:
    stream = io.StringIO()
    handler = configure_logging(log_format="json", stream=stream)
    try:
        log.warning("%r: closing", Subject(("127.0.0.1", 1), listener="udp://127.0.0.1:9000"))
    finally:
        logging.getLogger().removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert (line["listener"], line["transport"]) == ("udp://127.0.0.1:9000", "udp")
