"""conf/amqplite.yaml: defaults, overrides, and errors that name file, line, key, value, expectation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from amqplite.cli.main import main, resolve_config
from amqplite.config.loader import ConfigError, load_config
from amqplite.config.models import Config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amqplite.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_every_default() -> None:
    assert load_config(None) == Config()


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == Config()


def test_shipped_conf_file_matches_the_built_in_defaults() -> None:
    assert load_config(ROOT / "conf" / "amqplite.yaml") == Config()


def test_settings_in_the_file_are_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listener: {port: 5673}\nlimits: {heartbeat: 10}\nstore: {fsync: false}\n"
        "vhosts: [/, staging]\nlogging: {format: json}\n",
    )
    config = load_config(path)
    assert config.listener.port == 5673
    assert config.limits.heartbeat == 10
    assert config.store.fsync is False
    assert config.vhosts == ("/", "staging")
    assert config.logging.format == "json"
    assert config.management == Config().management


@pytest.mark.parametrize(
    ("text", "line", "key", "value", "expected"),
    [
        (
            "listener:\n  port: 5672\nlimits:\n  heartbeat: sixty\n",
            4,
            "limits.heartbeat",
            "'sixty'",
            "expected an integer",
        ),
        (
            "listener:\n  prot: 5672\n",
            2,
            "listener.prot",
            "'prot'",
            "expected one of the settings host, port",
        ),
        (
            "listener:\n  port: 70000\n",
            2,
            "listener.port",
            "70000",
            "expected a number from 0 to 65535",
        ),
        (
            "log_level: loud\n",
            1,
            "log_level",
            "'loud'",
            "expected one of debug, info, warning, error, critical",
        ),
        ("store:\n  fsync: sometimes\n", 2, "store.fsync", "'sometimes'", "expected true or false"),
        (
            "limits:\n  frame_max: 512\n",
            2,
            "limits.frame_max",
            "512",
            "expected a number from 4096",
        ),
        (
            "users:\n  - name: a\n    tags: admin\n  - name: b\n    password: [1]\n",
            5,
            "users[1].password",
            "[1]",
            "expected a string",
        ),
        (
            "management: 15672\n",
            1,
            "management",
            "15672",
            "expected a mapping of ManagementConfig settings",
        ),
        ("logging:\n  format: xml\n", 2, "logging.format", "'xml'", "expected one of text, json"),
    ],
)
def test_bad_setting_names_file_line_key_value_and_expectation(
    tmp_path: Path, text: str, line: int, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: got {value}, {expected}"), message
    assert info.value.line == line
    assert info.value.key == key


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "listener:\n  port: 5672\n  host: [oops\n")
    with pytest.raises(ConfigError, match=r"amqplite\.yaml:\d+: \(syntax\): not valid YAML"):
        load_config(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: \(file\): cannot read"):
        load_config(tmp_path / "missing.yaml")


def _args(**kwargs: object) -> argparse.Namespace:
    base = dict(config=None, host=None, port=None, data_dir=None, management_port=None)
    base.update(log_level=None, definitions=None)
    base.update(kwargs)
    return argparse.Namespace(**base)


def test_environment_overrides_file_and_flags_override_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "listener: {port: 1111}\ndata_dir: /file\nlog_level: error\n")
    monkeypatch.setenv("AMQPLITE_PORT", "2222")
    monkeypatch.setenv("AMQPLITE_DATA_DIR", "/env")
    config = resolve_config(_args(config=str(path), data_dir="/flag"))
    assert config.listener.port == 2222
    assert config.data_dir == "/flag"
    assert config.log_level == "error"


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQPLITE_PORT", "fifty")
    with pytest.raises(ConfigError, match="AMQPLITE_PORT: got 'fifty', expected a port number"):
        resolve_config(_args())


def test_serve_with_a_bad_file_exits_2_with_the_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "limits:\n  channel_max: -1\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: limits.channel_max: got -1, expected a number from 1 to 65535" in err
    assert "Traceback" not in err


def test_serve_refuses_a_bad_definitions_file_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    defs = tmp_path / "defs.yaml"
    defs.write_text("queues:\n  - name: q\n    durable: maybe\n")
    assert main(["serve", "--port", "0", "--definitions", str(defs)]) == 2
    err = capsys.readouterr().err
    assert f"{defs}:3: queues[0].durable: got 'maybe', expected true or false" in err


def test_serve_refuses_a_plugin_that_cannot_be_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "plugins: [plugins.no_such_plugin]\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "plugins[0]: got 'plugins.no_such_plugin', expected an importable module" in (
        capsys.readouterr().err
    )


def test_prometheus_port_is_null_by_default_and_checked_like_other_ports(tmp_path: Path) -> None:
    assert (
        load_config(
            write(tmp_path, "management: {prometheus_port: null}\n")
        ).management.prometheus_port
        is None
    )
    assert (
        load_config(
            write(tmp_path, "management: {prometheus_port: 9419}\n")
        ).management.prometheus_port
        == 9419
    )
    path = write(tmp_path, "management:\n  prometheus_port: 70000\n")
    with pytest.raises(
        ConfigError,
        match=r":2: management.prometheus_port: got 70000, expected a number from 0 to 65535",
    ):
        load_config(path)
