"""The ``wirekit`` command: serve a protocol, send values, listen to a port.

::

    wirekit serve protocols.echo --url tcp://127.0.0.1:9000
    wirekit serve deploy.toml
    wirekit serve protocols.echo --url tcp://0.0.0.0:9000 --workers 2
    wirekit send tcp://127.0.0.1:9000 '{"hello": "world"}' --codec msgpack
    wirekit listen udp://127.0.0.1:9000 --codec json
    wirekit top 127.0.0.1:9100

A command's flags may come anywhere among its arguments. Errors print one
line and exit with status 1; bad usage prints the command's usage and exits
2. ``--debug`` shows the traceback. Every command runs on uvloop when it is
installed, unless ``WIREKIT_UVLOOP=0`` (or, for ``serve``, ``--no-uvloop``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import attrs

from framework.cli.config import Config, load_config, load_protocol, parse_config
from framework.cli.top import add_top_command, top
from framework.core.codecs import codec_names, make_codec
from framework.core.endpoints import parse_url
from framework.core.errors import ConfigError, WirekitError
from framework.core.framing import framing_names, make_framing
from framework.core.pipeline import Pipeline
from framework.runtime import Server, connect
from framework.runtime.app import App
from framework.runtime.logs import JSON_HANDLER, LOG_FORMATS, configure_logging
from framework.runtime.loop import describe_loop
from framework.runtime.loop import run as run_loop
from framework.runtime.metrics_http import MetricsEndpoint
from framework.runtime.metrics_workers import WorkerMetrics, open_metrics
from framework.runtime.tls import TlsOptions
from framework.runtime.workers import check_workers, serve_workers

__all__ = ["main"]

log = logging.getLogger("wirekit.cli")

#: The log handler main() installed: the command's own notices on stderr
#: (start-up, errors) go out in its format, so JSON logs stay all JSON.
_log_handler: logging.Handler | None = None


def _notice(text: str, level: int = logging.INFO) -> None:
    """One line on stderr from the command itself, whatever the log level."""
    handler = _log_handler
    if handler is not None and handler.get_name() == JSON_HANDLER:
        record = logging.makeLogRecord(
            {
                "name": log.name,
                "levelno": level,
                "levelname": logging.getLevelName(level),
                "msg": text,
            }
        )
        print(handler.format(record), file=sys.stderr, flush=True)
        return
    print(f"wirekit: {text}", file=sys.stderr, flush=True)


def _configure_logging(args: argparse.Namespace, log_format: str) -> None:
    global _log_handler
    level = logging.DEBUG if args.debug else logging.WARNING
    _log_handler = configure_logging(level=level, log_format=log_format)
    if not args.debug:
        # A broker outage is logged at WARNING and its end at INFO: an operator
        # who was shown the first needs the second too.
        logging.getLogger("wirekit.backplane").setLevel(logging.INFO)


#: Where ``wirekit serve`` listens when nothing else says.
DEFAULT_URL = "tcp://127.0.0.1:9000"


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--framing", help=f"framing name ({', '.join(framing_names())}); default length-prefix"
    )
    parser.add_argument(
        "--codec",
        action="append",
        help=f"codec name ({', '.join(codec_names())}); repeat to stack, nearest the wire "
        "first; default msgpack",
    )
    parser.add_argument("--max-frame-size", type=int, help="override the framing's frame limit")


def _add_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", help="certificate file (PEM) for tls://")
    parser.add_argument("--tls-key", help="private key file (PEM) for tls://")
    parser.add_argument("--tls-ca", help="CA file: verify the peer against it")
    parser.add_argument(
        "--require-client-cert", action="store_true", help="servers: demand client certificates"
    )
    parser.add_argument(
        "--no-check-hostname", action="store_true", help="clients: skip host name verification"
    )


# typeshed makes the class generic; at run time it cannot be subscripted.
class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Sub-commands whose flags may come anywhere among their positionals.

    argparse's own sub-parsers parse a command's arguments in one pass, so an
    optional positional list (``send URL [VALUE ...]``) is settled, empty, at
    the first flag and a value after it is "unrecognized". Here the command's
    parser reads them intermixed, and a usage error prints that command's
    usage, not the top level's.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        name, *arguments = values
        # argparse has checked the name against the choices before calling.
        command: argparse.ArgumentParser = self.choices[name]
        try:
            parsed, extras = command.parse_known_intermixed_args(arguments)
        except TypeError:
            # Raised before parsing anything for a command intermixed parsing
            # cannot read (a REMAINDER positional, sub-commands of its own):
            # such a command from another package gets argparse's usual pass.
            super().__call__(parser, namespace, values, option_string)
            return
        if extras:
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        setattr(namespace, self.dest, name)
        for key, value in vars(parsed).items():
            setattr(namespace, key, value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wirekit", description="Serve, poke and sniff wirekit protocols."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="log lines as text (the default) or one JSON object per line",
    )
    commands = parser.add_subparsers(
        action=_Commands, dest="command", required=True, metavar="COMMAND"
    )

    serve = commands.add_parser("serve", help="serve a protocol module or a config file")
    serve.add_argument("target", help="protocol module (protocols.echo) or config file (.toml)")
    serve.add_argument(
        "--url",
        action="append",
        help="endpoint to listen on; give it again to listen on several at once, one app "
        "and one state for all (default: the config's, the protocol's, else tcp://127.0.0.1:9000)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve from N processes sharing the port(s) (Linux SO_REUSEPORT; tcp, tls, udp, "
        "ws, wss)",
    )
    serve.add_argument(
        "--backplane",
        metavar="URL",
        help="the broker that carries groups between nodes: memory:// (in-process, the "
        "default), redis://HOST:PORT[/DB] or nats://HOST:PORT",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at /metrics and a health check at /healthz on HOST:PORT "
        "(needs wirekit[metrics])",
    )
    serve.add_argument(
        "--no-uvloop",
        action="store_true",
        help="use asyncio's own event loop even if uvloop is installed",
    )
    _add_pipeline_flags(serve)
    _add_tls_flags(serve)

    send = commands.add_parser("send", help="send values and print the replies as JSON lines")
    send.add_argument("url", help="endpoint to connect to")
    send.add_argument(
        "values",
        nargs="*",
        default=[],  # without a default, argparse calls a missing URL "url, values" missing
        help="values as JSON ('-' reads JSON lines from stdin)",
    )
    send.add_argument("--expect", type=int, help="replies to wait for (default: one per value)")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for replies")
    _add_pipeline_flags(send)
    _add_tls_flags(send)

    listen = commands.add_parser("listen", help="serve and print every value received")
    listen.add_argument("url", help="endpoint to listen on")
    _add_pipeline_flags(listen)
    _add_tls_flags(listen)
    add_top_command(commands)
    _add_plugin_commands(commands)
    return parser


def _add_plugin_commands(commands: Any) -> None:
    # Other packages (wirekit's own protocols among them) add commands through
    # the "wirekit.commands" entry point group: a function that gets the
    # subparsers and sets `handler` (args -> exit status) on its parser.
    for entry in entry_points(group="wirekit.commands"):
        try:
            entry.load()(commands)
        except Exception as exc:
            log.warning("cannot load wirekit command %r: %s", entry.name, exc)


def _pipeline(args: argparse.Namespace, base: Pipeline | None = None) -> Pipeline:
    pipeline = base if base is not None else Pipeline(framing="length-prefix", codecs="msgpack")
    changes: dict[str, Any] = {}
    if args.framing:
        changes["framing"] = make_framing(args.framing)
    if args.codec:
        changes["codecs"] = tuple(make_codec(name) for name in args.codec)
    if changes:
        pipeline = attrs.evolve(pipeline, **changes)
    if args.max_frame_size is not None:
        framing = attrs.evolve(pipeline.framing, max_frame_size=args.max_frame_size)  # type: ignore[misc]
        pipeline = attrs.evolve(pipeline, framing=framing)
    return pipeline


def _tls(args: argparse.Namespace, base: TlsOptions | None) -> TlsOptions | None:
    flags = {
        "certfile": args.tls_cert,
        "keyfile": args.tls_key,
        "cafile": args.tls_ca,
        "require_client_cert": args.require_client_cert or None,
        "check_hostname": False if args.no_check_hostname else None,
    }
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return base
    return attrs.evolve(base, **given) if base is not None else TlsOptions(**given)


def _load_target(target: str) -> tuple[App, Config]:
    if target.endswith(".toml") or os.path.sep in target or os.path.isfile(target):
        config = load_config(target)
        if config.protocol is None:
            raise ConfigError(f'{target}: protocol: is required (e.g. protocol = "protocols.echo")')
        try:
            app = load_protocol(config.protocol, config.options)
        except ConfigError as exc:
            raise ConfigError(f"{target}: protocol: {exc}", option="protocol") from exc
        return config.apply(app), config
    return load_protocol(target), parse_config({}, source="<command line>")


def _to_json(value: Any) -> str:
    def fallback(item: Any) -> Any:
        if isinstance(item, bytes | bytearray | memoryview):
            return bytes(item).decode("utf-8", "backslashreplace")
        if attrs.has(type(item)):
            return attrs.asdict(item)
        return repr(item)

    return json.dumps(value, default=fallback, ensure_ascii=False)


def _from_json(text: str, pipeline: Pipeline) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not a JSON value: {text!r} ({exc.msg})", option="values") from None
    first = pipeline.codecs[-1].name if pipeline.codecs else "bytes"
    if first == "bytes":
        if not isinstance(value, str):
            raise ConfigError("the bytes codec sends strings: pass a JSON string", option="values")
        return value.encode("utf-8")
    if first == "utf-8" and not isinstance(value, str):
        return json.dumps(value)
    return value


def _serve(args: argparse.Namespace) -> None:
    app, config = _load_target(args.target)
    if config.log_format is not None and args.log_format is None:
        _configure_logging(args, config.log_format)
    app = app.with_pipeline(_pipeline(args, app.pipeline)) if _overrides(args) else app
    if args.backplane is not None:
        app = app.with_pipeline(app.pipeline)  # a copy: the module's app stays as it was
        app.backplane = args.backplane
    url = args.url or config.url or app.default_url or DEFAULT_URL
    urls = [url] if isinstance(url, str) else list(url)
    tls = _tls(args, config.tls)
    workers = args.workers if args.workers is not None else config.workers
    uvloop = False if args.no_uvloop else None
    metrics = args.metrics if args.metrics is not None else config.metrics
    if workers != 1:
        for each in urls:
            check_workers(parse_url(each), workers)
        app.check_workers(workers)
    endpoint, reporter = open_metrics(metrics, workers)
    try:
        _serve_until_stopped(args, app, urls, config, tls, workers, uvloop, endpoint, reporter)
    finally:
        if endpoint is not None:
            endpoint.close()


def _serve_until_stopped(
    args: argparse.Namespace,
    app: App,
    urls: list[str],
    config: Config,
    tls: TlsOptions | None,
    workers: int,
    uvloop: bool | None,
    endpoint: MetricsEndpoint | None,
    reporter: WorkerMetrics | None,
) -> None:
    loop_label = describe_loop(uvloop)
    # On every listener's line: a script waiting for any one of them sees it.
    shown = f" (metrics: {endpoint.url}/metrics)" if endpoint is not None else ""

    def banner(bound: str) -> None:
        print(f"wirekit: serving {args.target} on {bound}{shown}", flush=True)

    announced: list[str] = []
    if workers != 1:

        def announce(bound: str, pids: list[int]) -> None:
            banner(bound)
            announced.append(bound)
            if len(announced) == len(urls):
                _notice(
                    f"{len(pids)} workers (pids {', '.join(map(str, pids))}), "
                    f"event loop: {loop_label}"
                )

        serve_workers(
            app,
            urls,
            workers=workers,
            limits=config.limits,
            tls=tls,
            uvloop=uvloop,
            announce=announce,
            metrics=reporter,
            websocket=config.websocket,
        )
        return

    def ready(server: Server) -> None:
        banner(server.url)
        announced.append(server.url)
        if len(announced) == len(urls):
            _notice(f"event loop: {loop_label}")

    serving = app.serve(
        urls, limits=config.limits, tls=tls, ready=ready, websocket=config.websocket
    )
    run_loop(serving, uvloop=uvloop)


def _overrides(args: argparse.Namespace) -> bool:
    return bool(args.framing or args.codec or args.max_frame_size is not None)


async def _send(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args)
    texts: list[str] = []
    for item in args.values:
        if item == "-":
            texts += [line for line in sys.stdin.read().splitlines() if line.strip()]
        else:
            texts.append(item)
    values = [_from_json(text, pipeline) for text in texts]
    expect = args.expect if args.expect is not None else len(values)
    tls = _tls(args, None)
    async with connect(args.url, pipeline, tls=tls, timeout=args.timeout) as conn:
        for value in values:
            await conn.send(value)
        try:
            async with asyncio.timeout(args.timeout):
                for _ in range(expect):
                    print(_to_json(await conn.receive()), flush=True)
        except TimeoutError:
            print(
                f"wirekit: error: timed out waiting for replies after {args.timeout} s",
                file=sys.stderr,
            )
            return 1
    return 0


async def _listen(args: argparse.Namespace) -> None:
    app = App(_pipeline(args))

    @app.on(object)
    def show(value: Any, conn: Any) -> None:
        print(_to_json(value), flush=True)

    @app.fallback
    def bad(error: WirekitError, conn: Any) -> None:
        _notice(f"{conn.peer}: {type(error).__name__}: {error}", logging.WARNING)

    def ready(server: Server) -> None:
        _notice(f"listening on {server.url}")

    await app.serve(args.url, tls=_tls(args, None), ready=ready)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    # Like `python -m`, find protocol modules in the current directory.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = _parser().parse_args(argv)
    _configure_logging(args, args.log_format or "text")
    try:
        url = getattr(args, "url", None) if args.command in ("serve", "listen", "send") else None
        for each in [url] if isinstance(url, str) else url or []:
            parse_url(each)
        if args.command == "serve":
            _serve(args)
        elif args.command == "send":
            return run_loop(_send(args))
        elif args.command == "listen":
            run_loop(_listen(args))
        elif args.command == "top":
            return top(args.address, interval=args.interval, iterations=args.iterations)
        else:
            return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except (WirekitError, OSError) as exc:
        if args.debug:
            raise
        _notice(f"error: {exc}", logging.ERROR)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
