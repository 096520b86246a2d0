"""wirekit's log output: lines a peer can cause kept bounded, and text or JSON lines.

A hostile or broken peer can make a server refuse thousands of connections or
drop thousands of datagrams a second. Each is counted (``Server.refused``,
``DatagramStats``); logging each one would turn the flood into a log flood.
A :class:`LogLimiter` logs the first event of a kind at once, holds the ones
that follow within ``interval`` seconds, and says how many it held in one
line when the interval ends::

    refusing ('127.0.0.1', 51514): 2 connections open from 127.0.0.1 (max_connections_per_peer)
    refused 3,999 more connections (max_connections_per_peer) in the last 10 s

:func:`configure_logging` sets the process's log output: the usual text
lines, or one JSON object per line (``time``, ``level``, ``logger``,
``message``, and ``connection``, ``peer``, ``listener`` and ``transport``
when the line is about a connection a server accepted), for log collectors.

The limiter takes the time as an argument. Given ``schedule`` (a server
passes its loop's ``call_at``), it reports a held count when its interval
ends even if no other event of the kind comes; otherwise the owner calls
:meth:`LogLimiter.flush` at :attr:`LogLimiter.due`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from framework.core.errors import ConfigError

__all__ = ["INTERVAL", "JSON_HANDLER", "LOG_FORMATS", "LogLimiter", "configure_logging"]

#: The formats :func:`configure_logging` knows.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The name of the handler :func:`configure_logging` installs for JSON lines.
JSON_HANDLER = "wirekit-json"

#: Seconds between two lines of one kind. Ten seconds keeps a flood to six
#: lines a minute per kind and still shows an operator that it goes on.
INTERVAL = 10.0


class _Kind:
    __slots__ = ("held", "level", "logger", "summary", "until")

    def __init__(self, logger: logging.Logger, level: int, summary: str, until: float) -> None:
        self.logger = logger
        self.level = level
        self.summary = summary
        self.until = until
        self.held = 0


class LogLimiter:
    """At most one line per kind per ``interval`` seconds to ``logger``; the rest are counted."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = INTERVAL,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._schedule = schedule
        self._kinds: dict[str, _Kind] = {}
        self._armed_at: float | None = None

    def log(
        self,
        now: float,
        kind: str,
        summary: str,
        level: int,
        message: str,
        *args: Any,
        logger: logging.Logger | None = None,
    ) -> None:
        """Log ``message % args`` unless a line of ``kind`` went out less than an interval ago.

        ``summary`` names what the held lines were, for the count line:
        ``"refused connections (max_connections_per_peer)"`` gives
        "refused 3,999 more connections (max_connections_per_peer) in the last 10 s".
        Its first word is the verb the count follows. ``logger``: where the
        lines of this kind go, if not to the limiter's own logger.
        """
        state = self._kinds.get(kind)
        if state is not None and now < state.until:
            state.held += 1
            if self._schedule is not None and self._armed_at is None:
                self._arm(state.until)
            return
        if state is not None:
            self._report(state)
        target = logger if logger is not None else self.logger
        self._kinds[kind] = _Kind(target, level, summary, now + self.interval)
        target.log(level, message, *args)

    @property
    def due(self) -> float | None:
        """When the earliest held count must be reported, or None if nothing is held."""
        held = [state.until for state in self._kinds.values() if state.held]
        return min(held) if held else None

    def flush(self, now: float) -> None:
        """Report the counts whose interval has ended; forget kinds that went quiet."""
        for kind, state in list(self._kinds.items()):
            if now >= state.until:
                self._report(state)
                del self._kinds[kind]

    def _arm(self, at: float) -> None:
        assert self._schedule is not None
        self._armed_at = at
        self._schedule(at, self._on_timer)

    def _on_timer(self) -> None:
        at, self._armed_at = self._armed_at, None
        if at is None:
            return
        self.flush(at)
        due = self.due
        if due is not None:
            self._arm(due)

    def _report(self, state: _Kind) -> None:
        if not state.held:
            return
        verb, _, what = state.summary.partition(" ")
        state.logger.log(
            state.level,
            "%s %s more %s in the last %g s",
            verb,
            f"{state.held:,}",
            what,
            self.interval,
        )
        state.held = 0


class _ConnectionFields(logging.Filter):
    """Name the connection a line is about, as fields: id, peer, listener and transport.

    Every wirekit line about a connection passes the connection as its first
    argument (``"%r: closing: ..."``), so the fields come from there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            subject = args[0]
            conn_id = getattr(subject, "id", None)
            if isinstance(conn_id, int) and hasattr(subject, "peer"):
                record.connection = conn_id
                record.peer = _peer_text(subject.peer)
                listener = getattr(subject, "listener", None)
                if isinstance(listener, str):
                    record.listener = listener
                    record.transport = listener.partition("://")[0]
        return True


def _peer_text(peer: Any) -> str | None:
    if peer is None:
        return None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


def configure_logging(
    *, level: int = logging.WARNING, log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log line to ``stream`` (stderr) as text or JSON; returns the handler.

    Replaces the handlers of the root logger, so calling it again changes
    the format (the command line calls it once more after reading a config
    file that names ``log_format``).
    """
    if log_format not in LOG_FORMATS:
        raise ConfigError(
            f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}",
            option="log_format",
            value=log_format,
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
        handler.addFilter(_ConnectionFields())
        handler.set_name(JSON_HANDLER)
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
