"""Config files: parsing, validation messages, and applying them to an app."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework import ConfigError, Delimited, JsonCodec, LengthPrefix, MsgpackCodec, Utf8Codec
from framework.cli.config import Config, load_config, load_protocol, parse_config
from framework.core.limits import Limits


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


def test_full_config_is_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
protocol = "protocols.echo"
url = "udp://127.0.0.1:0"

[framing]
name = "length-prefix"
prefix_size = 2

[codec]
name = "json"
max_depth = 8

[tls]
certfile = "server.pem"
keyfile = "server.key"
require_client_cert = false

[limits]
max_connections = 5
idle_timeout = 1.5
max_frame_size = 1024
""",
    )
    config = load_config(path)
    assert config.protocol == "protocols.echo"
    assert config.url == "udp://127.0.0.1:0"
    assert config.framing == LengthPrefix(prefix_size=2)
    assert config.codecs == (JsonCodec(max_depth=8),)
    assert config.tls is not None
    assert config.tls.certfile == "server.pem"
    assert config.limits == Limits(max_connections=5, idle_timeout=1.5)
    assert config.max_frame_size == 1024


def test_codec_stack_is_read_nearest_the_wire_first() -> None:
    config = parse_config({"codecs": [{"name": "utf-8"}, {"name": "json"}]})
    assert config.codecs == (Utf8Codec(), JsonCodec())


def test_apply_overrides_framing_codecs_and_frame_limit_keeping_handlers() -> None:
    app = load_protocol("protocols.echo")
    config = parse_config(
        {
            "framing": {"name": "newline"},
            "codec": {"name": "utf-8"},
            "limits": {"max_frame_size": 99},
        }
    )
    applied = config.apply(app)
    assert applied.pipeline.framing == Delimited(max_frame_size=99)
    assert applied.pipeline.codecs == (Utf8Codec(),)
    assert dict(applied.handlers) == dict(app.handlers)
    assert app.pipeline.codecs == (MsgpackCodec(),), "the original app is unchanged"


def test_empty_config_changes_nothing() -> None:
    app = load_protocol("protocols.echo")
    assert Config().apply(app) is app


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('colour = "blue"', "colour"),
        ("[limits]\nmax_conections = 3", "limits.max_conections"),
        ('[limits]\nmax_connections = "many"', "limits.max_connections"),
        ("[limits]\nidle_timeout = -1", "limits.idle_timeout"),
        ("[limits]\nmax_frame_size = 0", "limits.max_frame_size"),
        ("[tls]\ncertfile = 3", "tls.certfile"),
        ("[tls]\nverify = true", "tls.verify"),
        ("[framing]\nprefix_size = 4", "framing.name"),
        ('[framing]\nname = "length-prefix"\nprefix_size = 3', "framing"),
        ('[framing]\nname = "carrier-pigeon"', "framing"),
        ('[codec]\nname = "msgpack"\nmax_detph = 3', "codec"),
        ("url = 9000", "url"),
        ('framing = "newline"', "framing"),
        ('codecs = "json"', "codecs"),
    ],
)
def test_bad_config_names_the_key_and_the_file(tmp_path: Path, text: str, names: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert names in message


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "url = "))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_load_protocol_errors() -> None:
    with pytest.raises(ConfigError, match=r"no protocol module named 'protocols\.nope'"):
        load_protocol("protocols.nope")
    with pytest.raises(ConfigError, match=r"defines no `app`"):
        load_protocol("framework.core.errors")


def test_a_bad_url_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'url = "tcp://localhost"')
    with pytest.raises(ConfigError, match=r"deploy\.toml: url: .*port is missing"):
        load_config(path)


def test_a_protocol_module_registers_its_codecs_before_they_are_named(tmp_path: Path) -> None:
    module = tmp_path / "tinyproto.py"
    module.write_text(
        "from framework import App, BytesCodec, register_codec\n"
        "class Shout(BytesCodec):\n"
        "    name = 'shout'\n"
        "register_codec('shout', Shout)\n"
        "app = App()\n"
    )
    path = write(tmp_path, 'protocol = "tinyproto"\n[codec]\nname = "shout"\n')
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        config = load_config(path)
    finally:
        sys.path.remove(str(tmp_path))
    assert [codec.name for codec in config.codecs or ()] == ["shout"]


def test_an_unknown_protocol_is_reported_with_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write(tmp_path, 'protocol = "no.such.module"')
    result = subprocess.run(
        [sys.executable, "-m", "framework", "serve", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"{path}: protocol: no protocol module named 'no.such.module'" in result.stderr


def test_workers_is_a_top_level_key(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'url = "tcp://0.0.0.0:9000"\nworkers = 4\n')).workers == 4
    assert load_config(write(tmp_path, "")).workers == 1


@pytest.mark.parametrize("value", ["0", "-2", '"2"', "1.5", "true"])
def test_workers_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="workers: must be a positive integer") as info:
        load_config(write(tmp_path, f"workers = {value}\n"))
    assert info.value.option == "workers"


def test_group_keys_and_protocol_options(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'protocol = "protocols.game"\nbackplane = "redis://127.0.0.1:6379/2"\n'
            'namespace = "game-eu"\npresence_ttl = 5\n'
            '[options]\ncookie_secret = "a shared secret of enough bytes"\n',
        )
    )
    assert (config.backplane, config.namespace, config.presence_ttl) == (
        "redis://127.0.0.1:6379/2",
        "game-eu",
        5.0,
    )
    assert config.options == {"cookie_secret": "a shared secret of enough bytes"}
    original = load_protocol("protocols.game", config.options)
    app = config.apply(original)
    assert (app.backplane, app.namespace, app.presence_ttl) == (
        "redis://127.0.0.1:6379/2",
        "game-eu",
        5.0,
    )
    assert original.backplane == "memory://"  # the module's app is not changed
    assert app.groups is original.groups  # the handlers' groups


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('backplane = "kafka://x"', "backplane: must start with one of memory://"),
        ("backplane = 3", "backplane: must be a non-empty string"),
        ('namespace = ""', "namespace: must be a non-empty string"),
        ("presence_ttl = 0", "presence_ttl: must be a positive number"),
        ('options = "x"', "options: must be a table"),
    ],
)
def test_bad_group_keys_name_the_key(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(write(tmp_path, text + "\n"))


def test_options_need_create_app_and_its_parameters() -> None:
    with pytest.raises(ConfigError, match=r"\[options\]: protocols.game.create_app\(\)"):
        load_protocol("protocols.game", {"colour": "red"})
    with pytest.raises(ConfigError, match="needs a create_app"):
        load_protocol("protocols.echo", {"x": 1})


def test_metrics_is_a_top_level_host_and_port() -> None:
    assert parse_config({"metrics": "127.0.0.1:9100"}).metrics == "127.0.0.1:9100"
    assert parse_config({}).metrics is None


@pytest.mark.parametrize("value", ["'9100'", "'localhost'", "9100"])
def test_a_bad_metrics_address_names_the_key_and_the_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text(f"metrics = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"deploy\.toml: metrics: ") as info:
        load_config(path)
    assert info.value.option == "metrics"
