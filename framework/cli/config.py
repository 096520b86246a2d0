"""Config files: one TOML file describes a whole protocol deployment.

::

    protocol = "protocols.echo"        # module that defines `app`
    url = "tcp://127.0.0.1:9000"       # or a list: ["tcp://...", "ws://..."]
    workers = 2                        # processes sharing the port (Linux)
    metrics = "127.0.0.1:9100"         # Prometheus /metrics and /healthz
    backplane = "redis://127.0.0.1:6379/0"   # carries groups between nodes
    namespace = "chat-eu"              # channel prefix on the backplane
    presence_ttl = 15                  # seconds a silent node stays in presence

    [options]                          # keyword arguments of the module's create_app()
    cookie_secret = "..."

    [framing]
    name = "length-prefix"
    prefix_size = 4

    [codec]                            # or [[codecs]] tables, nearest the wire first
    name = "msgpack"

    [tls]
    certfile = "server.pem"
    keyfile = "server.key"

    [websocket]                        # ws:// and wss:// listeners
    origins = ["https://game.example"]
    subprotocol = "wirekit.chat"

    [limits]
    max_connections = 1000
    idle_timeout = 60
    max_frame_size = 1048576           # applied to the framing

The command line and the Python API read the same file; unknown keys and
wrong types are errors naming the key and the file.
"""

from __future__ import annotations

import contextlib
import importlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from framework.core.codecs import Codec, make_codec
from framework.core.endpoints import parse_url
from framework.core.errors import ConfigError
from framework.core.framing import Framing, make_framing
from framework.core.limits import Limits
from framework.core.websocket import WebSocketOptions
from framework.runtime.app import App
from framework.runtime.backplane import SCHEMES
from framework.runtime.logs import LOG_FORMATS
from framework.runtime.metrics_http import parse_address
from framework.runtime.tls import TlsOptions

__all__ = ["Config", "load_config", "load_protocol", "parse_config"]

_TOP_KEYS = {
    "protocol",
    "url",
    "workers",
    "framing",
    "codec",
    "codecs",
    "tls",
    "limits",
    "log_format",
    "metrics",
    "websocket",
    "backplane",
    "namespace",
    "presence_ttl",
    "options",
}
_WEBSOCKET_KEYS = {field.name for field in attrs.fields(WebSocketOptions)} - {"origin"}
_TLS_TYPES: dict[str, type] = {
    "certfile": str,
    "keyfile": str,
    "cafile": str,
    "require_client_cert": bool,
    "check_hostname": bool,
    "server_hostname": str,
}
_LIMIT_KEYS = {field.name for field in attrs.fields(Limits)} | {"max_frame_size"}


@attrs.frozen(kw_only=True)
class Config:
    """A parsed config file; ``None`` means "keep what the protocol module says"."""

    source: str = "<config>"
    protocol: str | None = None
    #: One URL, or (a list in the file) several served together.
    url: str | tuple[str, ...] | None = None
    framing: Framing | None = None
    codecs: tuple[Codec, ...] | None = None
    tls: TlsOptions | None = None
    limits: Limits = attrs.field(factory=Limits)
    max_frame_size: int | None = None
    #: Processes ``wirekit serve`` runs (``--workers`` overrides it).
    workers: int = 1
    #: ``"text"`` or ``"json"`` log lines (``--log-format`` overrides it).
    log_format: str | None = None
    #: ``"HOST:PORT"`` of the metrics and health endpoint (``--metrics`` overrides it).
    metrics: str | None = None
    #: The ``[websocket]`` table: options of ``ws://`` and ``wss://`` listeners.
    websocket: WebSocketOptions | None = None
    #: The groups' backplane URL (``--backplane`` overrides it).
    backplane: str | None = None
    #: The prefix of the app's backplane channels.
    namespace: str | None = None
    #: Seconds a node that stopped refreshing its members stays in presence.
    presence_ttl: float | None = None
    #: Keyword arguments for the protocol module's ``create_app()``.
    options: dict[str, Any] | None = None

    def apply(self, app: App) -> App:
        """The app with this config's framing, codecs, frame limit and group options applied.

        The app given is not changed: a copy carries what differs.
        """
        app = self._apply_pipeline(app)
        changes = {
            key: getattr(self, key)
            for key in ("backplane", "namespace", "presence_ttl")
            if getattr(self, key) is not None
        }
        if not changes:
            return app
        copy = app.with_pipeline(app.pipeline)
        for key, value in changes.items():
            setattr(copy, key, value)
        return copy

    def _apply_pipeline(self, app: App) -> App:
        pipeline = app.pipeline
        changes: dict[str, Any] = {}
        framing = self.framing if self.framing is not None else pipeline.framing
        if self.max_frame_size is not None:
            framing = attrs.evolve(framing, max_frame_size=self.max_frame_size)  # type: ignore[misc]
        if framing is not pipeline.framing:
            changes["framing"] = framing
        if self.codecs is not None:
            changes["codecs"] = self.codecs
        if not changes:
            return app
        return app.with_pipeline(attrs.evolve(pipeline, **changes))


def _error(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}", option=key)


def _check_keys(source: str, table: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        where = f"[{table}] " if table else ""
        raise _error(
            source,
            f"{table + '.' if table else ''}{unknown[0]}",
            f"unknown key {where}(expected one of: {', '.join(sorted(allowed))})",
        )


def _table(source: str, data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _error(source, key, f"must be a table, got {type(value).__name__}")
    return value


def _named(source: str, key: str, table: dict[str, Any], make: Any) -> Any:
    options = dict(table)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise _error(source, f"{key}.name", "is required and must be a string")
    try:
        return make(name, **options)
    except ConfigError as exc:
        raise _error(source, key, str(exc)) from exc


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate a config mapping (as read from TOML) into a :class:`Config`."""
    _check_keys(source, "", data, _TOP_KEYS)
    fields: dict[str, Any] = {"source": source}
    for key in ("protocol", "metrics"):
        if key in data:
            if not isinstance(data[key], str):
                raise _error(source, key, f"must be a string, got {type(data[key]).__name__}")
            fields[key] = data[key]
    if "url" in data:
        fields["url"] = _urls(source, data["url"])
    if "log_format" in data:
        log_format = data["log_format"]
        if log_format not in LOG_FORMATS:
            raise _error(
                source, "log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
            )
        fields["log_format"] = log_format
    if "workers" in data:
        workers = data["workers"]
        if type(workers) is not int or workers < 1:
            raise _error(source, "workers", f"must be a positive integer, got {workers!r}")
        fields["workers"] = workers
    if "metrics" in fields:
        try:
            parse_address(fields["metrics"])
        except ConfigError as exc:
            raise _error(source, "metrics", str(exc)) from exc
    fields.update(_group_options(source, data))
    if "protocol" in fields:
        # Import it first: a protocol module registers its own codecs and
        # framings by name, and the tables below may name them. One that
        # cannot be found yet (defined later, or elsewhere on sys.path) is
        # reported when it is loaded.
        with contextlib.suppress(ConfigError):
            load_protocol(fields["protocol"])
    framing = _table(source, data, "framing")
    if framing is not None:
        fields["framing"] = _named(source, "framing", framing, make_framing)
    if "codec" in data and "codecs" in data:
        raise _error(source, "codecs", "give either [codec] or [[codecs]], not both")
    codec = _table(source, data, "codec")
    if codec is not None:
        fields["codecs"] = (_named(source, "codec", codec, make_codec),)
    if "codecs" in data:
        stack = data["codecs"]
        if not isinstance(stack, list) or not all(isinstance(item, dict) for item in stack):
            raise _error(source, "codecs", "must be an array of tables ([[codecs]])")
        fields["codecs"] = tuple(
            _named(source, f"codecs[{i}]", item, make_codec) for i, item in enumerate(stack)
        )
    tls = _table(source, data, "tls")
    if tls is not None:
        _check_keys(source, "tls", tls, set(_TLS_TYPES))
        for key, value in tls.items():
            if not isinstance(value, _TLS_TYPES[key]):
                expected = _TLS_TYPES[key].__name__
                raise _error(source, f"tls.{key}", f"must be {expected}, got {value!r}")
        fields["tls"] = TlsOptions(**tls)
    websocket = _table(source, data, "websocket")
    if websocket is not None:
        _check_keys(source, "websocket", websocket, _WEBSOCKET_KEYS)
        try:
            fields["websocket"] = WebSocketOptions(**websocket)
        except ConfigError as exc:
            raise _error(source, f"websocket.{exc.option}", str(exc)) from exc
    limits = _table(source, data, "limits")
    if limits is not None:
        _check_keys(source, "limits", limits, _LIMIT_KEYS)
        options = dict(limits)
        if "max_frame_size" in options:
            size = options.pop("max_frame_size")
            if type(size) is not int or size <= 0:
                raise _error(
                    source, "limits.max_frame_size", f"must be a positive integer, got {size!r}"
                )
            fields["max_frame_size"] = size
        try:
            fields["limits"] = Limits(**options)
        except ConfigError as exc:
            raise _error(source, f"limits.{exc.option}", str(exc)) from exc
    return Config(**fields)


def _group_options(source: str, data: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("backplane", "namespace"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise _error(source, key, f"must be a non-empty string, got {data[key]!r}")
            fields[key] = data[key]
    if "backplane" in fields:
        scheme = urlsplit(fields["backplane"]).scheme
        if scheme not in SCHEMES:
            known = ", ".join(f"{name}://" for name in SCHEMES)
            raise _error(source, "backplane", f"must start with one of {known}")
    if "presence_ttl" in data:
        ttl = data["presence_ttl"]
        if type(ttl) not in (int, float) or not ttl > 0:
            raise _error(source, "presence_ttl", f"must be a positive number, got {ttl!r}")
        fields["presence_ttl"] = float(ttl)
    options = _table(source, data, "options")
    if options is not None:
        fields["options"] = options
    return fields


def _urls(source: str, value: Any) -> str | tuple[str, ...]:
    """``url``: one URL string, or a non-empty list of them; each one parsed."""
    if isinstance(value, str):
        urls = [value]
    elif isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        urls = value
    else:
        raise _error(source, "url", f"must be a URL string or a list of them, got {value!r}")
    for url in urls:
        try:
            parse_url(url)
        except ConfigError as exc:
            raise _error(source, "url", str(exc)) from exc
    if len(set(urls)) != len(urls):
        raise _error(source, "url", "lists a URL twice")
    return value if isinstance(value, str) else tuple(urls)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file", option="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}", option="config") from exc
    return parse_config(data, source=source)


def load_protocol(name: str, options: Mapping[str, Any] | None = None) -> App:
    """Import a protocol module and return its ``app`` (or the result of ``create_app()``).

    With ``options`` (a config file's ``[options]`` table), the module's
    ``create_app(**options)`` makes the app.
    """
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(f"no protocol module named {name!r}", option="protocol") from exc
        raise
    if options:
        create = getattr(module, "create_app", None)
        if not callable(create):
            raise ConfigError(
                f"[options] needs a create_app() in protocol module {name!r}", option="options"
            )
        try:
            app = create(**options)
        except TypeError as exc:
            raise ConfigError(f"[options]: {name}.create_app(): {exc}", option="options") from exc
    else:
        app = getattr(module, "app", None)
        if app is None and callable(getattr(module, "create_app", None)):
            app = module.create_app()
    if not isinstance(app, App):
        raise ConfigError(
            f"protocol module {name!r} defines no `app` (an App) nor `create_app()`",
            option="protocol",
        )
    return app
