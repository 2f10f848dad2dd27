"""Start-up and command-line mistakes: one line naming the flag, key or path; exit 2 for usage/config."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from broker_process import BrokerProcess, run_serve, start_broker

from amqplite.cli.main import main

# A RabbitMQ 3.10.8 export (GET /api/definitions of a fresh node): guest's hash is of "guest".
RABBITMQ_EXPORT = {
    "rabbit_version": "3.10.8",
    "rabbitmq_version": "3.10.8",
    "product_name": "RabbitMQ",
    "product_version": "3.10.8",
    "users": [
        {
            "name": "guest",
            "password_hash": "rsEZ8zDlqvXcOptrbHg/wyANqg9yZz5+uFOlHGcsugMp8u7e",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
            "limits": {},
        },
        {
            "name": "rabbit-made",
            "password_hash": "rsEZ8zDlqvXcOptrbHg/wyANqg9yZz5+uFOlHGcsugMp8u7e",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
            "limits": {},
        },
    ],
    "vhosts": [{"name": "/"}],
    "permissions": [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "rabbit-made", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    ],
    "topic_permissions": [],
    "parameters": [],
    "global_parameters": [
        {"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-nUQW6o3G279S3PhotNMkmQ"}
    ],
    "policies": [],
    "queues": [
        {
            "name": "from-rabbit",
            "vhost": "/",
            "durable": True,
            "auto_delete": False,
            "arguments": {},
        }
    ],
    "exchanges": [],
    "bindings": [],
}


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal: the last line on standard error, after any log lines; never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "nothing on standard error"
    return lines[-1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_management_port_in_use_is_one_line_naming_the_flag(
    taken_port: int, tmp_path: Path
) -> None:
    result = run_serve(
        "--port", "0", "--management-port", str(taken_port), "--data-dir", str(tmp_path)
    )
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith(f"amqplite: cannot listen on 127.0.0.1:{taken_port}"), line
    assert "management API (--management-port" in line
    assert "Address already in use" in line


def test_amqp_port_in_use_is_one_line_naming_the_flag(taken_port: int, tmp_path: Path) -> None:
    result = run_serve(
        "--port", str(taken_port), "--management-port", "0", "--data-dir", str(tmp_path)
    )
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith(f"amqplite: cannot listen on 127.0.0.1:{taken_port} for AMQP (--port")
    assert "Address already in use" in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--port", "99999"), "--port: got '99999'"),
        (("--port", "-1"), "--port: got '-1'"),
        (("--port", "five"), "--port: got 'five'"),
        (("--management-port", "70000"), "--management-port: got '70000'"),
    ],
)
def test_a_port_flag_out_of_range_is_a_usage_error(
    args: tuple[str, ...], named: str, tmp_path: Path
) -> None:
    result = run_serve(*args, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    line = last_line(result)
    assert line == (
        f"amqplite serve: error: argument {named}, expected a port number from 0 to 65535"
        " (see amqplite serve --help)"
    )
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["AMQPLITE_PORT", "AMQPLITE_MANAGEMENT_PORT"])
def test_a_port_in_the_environment_out_of_range_is_a_config_error(
    name: str, tmp_path: Path
) -> None:
    result = run_serve("--data-dir", str(tmp_path), env={name: "99999"})
    assert result.returncode == 2
    assert last_line(result) == (
        f"amqplite: configuration error: environment: {name}: got '99999',"
        " expected a port number from 0 to 65535"
    )


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    result = run_serve("--port", "0", "--management-port", "0", "--data-dir", str(file))
    assert result.returncode == 2
    assert last_line(result) == (
        f"amqplite: configuration error: command line: --data-dir: got '{file}',"
        " expected a directory, it is a file"
    )


def test_a_data_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    config = tmp_path / "amqplite.yaml"
    config.write_text(f"listener: {{port: 0}}\ndata_dir: {file}/data\n")
    result = run_serve("--config", str(config), "--management-port", "0")
    assert result.returncode == 2
    assert last_line(result) == (
        f"amqplite: configuration error: {config}:2: data_dir: got '{file}/data',"
        " expected a directory that can be created (Not a directory)"
    )


def test_a_read_only_data_dir_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
    elif Path("/sys/fs").is_dir():  # root writes through mode bits; sysfs refuses new files
        read_only = Path("/sys/fs")
    else:
        pytest.skip("running as root and no read-only directory (/sys/fs) to try")
    result = run_serve(
        "--port", "0", "--management-port", "0", env={"AMQPLITE_DATA_DIR": str(read_only)}
    )
    assert result.returncode == 2
    line = last_line(result)
    assert line.startswith(
        f"amqplite: configuration error: environment: AMQPLITE_DATA_DIR: got '{read_only}',"
        " expected a writable directory ("
    ), line


def test_definitions_validate_of_an_invalid_file_exits_2_like_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  - name: q\n    durable: maybe\n")
    assert main(["definitions", "validate", str(bad)]) == 2
    assert f"{bad}:3: queues[0].durable: got 'maybe'" in capsys.readouterr().err
    assert main(["definitions", "import", "--url", "http://127.0.0.1:9", str(bad)]) == 2


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this module."""
    started = start_broker(tmp_path_factory.mktemp("startup") / "data")
    yield started
    started.stop()


def test_ctl_says_which_management_api_it_talks_to(
    broker: BrokerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["ctl", "--url", broker.management_url, "list", "queues"], out=io.StringIO()) == 0
    assert f"amqplite: management API {broker.management_url} (from --url)" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("AMQPLITE_MANAGEMENT_URL", broker.management_url)
    assert main(["ctl", "list", "queues"], out=io.StringIO()) == 0
    assert f"{broker.management_url} (from AMQPLITE_MANAGEMENT_URL)" in capsys.readouterr().err


def test_ctl_purge_of_an_unknown_queue_names_the_queue(
    broker: BrokerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = broker.management_url
    assert main(["ctl", "--url", url, "purge", "no-such-queue"], out=io.StringIO()) == 1
    assert f"amqplite: no queue 'no-such-queue' in vhost '/' at {url}" in capsys.readouterr().err
    status = main(["ctl", "--url", url, "delete-queue", "nope", "--vhost", "v2"], out=io.StringIO())
    assert status == 1
    assert "amqplite: no queue 'nope' in vhost 'v2'" in capsys.readouterr().err


def test_a_rabbitmq_export_imports_with_its_password_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "rabbit.json"
    export.write_text(json.dumps(RABBITMQ_EXPORT))
    fresh = start_broker(tmp_path / "data")
    try:
        out = io.StringIO()
        assert (
            main(["definitions", "import", "--url", fresh.management_url, str(export)], out=out)
            == 0
        )
        assert "imported (0 conflicts)" in out.getvalue(), capsys.readouterr().err
        params = pika.URLParameters(  # the hash RabbitMQ made logs in as it is
            f"amqp://rabbit-made:guest@127.0.0.1:{fresh.port}/%2F?heartbeat=0"
        )
        conn = pika.BlockingConnection(params)
        try:
            assert conn.channel().queue_declare("from-rabbit", passive=True)
        finally:
            conn.close()
    finally:
        fresh.stop()


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        ([], "amqplite"),
        (["ctl", "list", "nope"], "amqplite ctl list"),
        (["definitions"], "amqplite definitions"),
        (["ctl", "purge"], "amqplite ctl purge"),
        (["serve", "--bogus"], "amqplite"),
    ],
)
def test_usage_errors_of_every_subcommand_are_one_line_and_exit_2(
    argv: list[str], prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"{prog}: error: ")
    assert err.rstrip().endswith(f"(see {prog} --help)")
