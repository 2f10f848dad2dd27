"""Cluster settings: the file's `cluster:` section and the serve flags that override it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from amqplite.cli.main import resolve_config
from amqplite.config.loader import ConfigError, load_config
from amqplite.config.models import ClusterConfig, ClusterListener


def _args(**kwargs: object) -> argparse.Namespace:
    base: dict[str, object] = dict(config=None, host=None, port=None, data_dir=None)
    base.update(management_port=None, log_level=None, definitions=None)
    base.update(node_name=None, etcd=None, cluster_port=None)
    base.update(kwargs)
    return argparse.Namespace(**base)


def test_the_cluster_section_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "amqplite.yaml"
    path.write_text(
        "cluster:\n  enabled: true\n  name: prod\n  node_name: rabbit-1.example\n"
        "  etcd_endpoints: [http://e1:2379, https://e2:2379/]\n"
        "  listen: {host: 0.0.0.0, port: 25673}\n  default_replicas: 3\n  lease_ttl: 5\n"
        "  insync_timeout_ms: 250\n"
    )
    assert load_config(path).cluster == ClusterConfig(
        enabled=True,
        name="prod",
        node_name="rabbit-1.example",
        etcd_endpoints=("http://e1:2379", "https://e2:2379/"),
        listen=ClusterListener("0.0.0.0", 25673),
        default_replicas=3,
        lease_ttl=5,
        insync_timeout_ms=250,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster:\n  node_name: a/b\n", "c.yaml:2: cluster.node_name: got 'a/b', expected a name"),
        (
            "cluster:\n  etcd_endpoints:\n    - http://e1:2379\n    - e2:2379\n",
            "c.yaml:4: cluster.etcd_endpoints[1]: got 'e2:2379', expected an etcd client URL",
        ),
        ("cluster:\n  listen: {port: 70000}\n", "c.yaml:2: cluster.listen.port: got 70000"),
        ("cluster:\n  default_replicas: 0\n", "cluster.default_replicas: got 0, expected a number"),
        ("cluster:\n  lease_ttl: 1\n", "cluster.lease_ttl: got 1, expected a number from 2"),
        ("cluster:\n  insync_timeout_ms: 0\n", "cluster.insync_timeout_ms: got 0, expected"),
        ("cluster:\n  leader: x\n", "cluster.leader: got 'leader', expected one of the settings"),
    ],
)
def test_a_bad_cluster_setting_names_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_cluster_flags_override_the_file_and_turn_cluster_mode_on(tmp_path: Path) -> None:
    path = tmp_path / "amqplite.yaml"
    path.write_text("cluster:\n  node_name: from-file\n  lease_ttl: 4\n")
    assert not resolve_config(_args(config=str(path))).cluster.enabled
    cluster = resolve_config(
        _args(config=str(path), etcd="http://a:2379, http://b:2379", cluster_port=25999)
    ).cluster
    assert cluster.enabled
    assert cluster.node_name == "from-file"
    assert cluster.etcd_endpoints == ("http://a:2379", "http://b:2379")
    assert cluster.listen == ClusterListener("127.0.0.1", 25999)
    assert cluster.lease_ttl == 4
    assert resolve_config(_args(node_name="n2")).cluster.node_name == "n2"


def test_environment_names_the_node_and_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQPLITE_NODE_NAME", "env-node")
    monkeypatch.setenv("AMQPLITE_ETCD", "http://env:2379")
    cluster = resolve_config(_args()).cluster
    assert (cluster.enabled, cluster.node_name, cluster.etcd_endpoints) == (
        True,
        "env-node",
        ("http://env:2379",),
    )
    assert resolve_config(_args(node_name="flag-node")).cluster.node_name == "flag-node"


def test_a_bad_flag_value_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"command line: cluster\.node_name: got 'a b'"):
        resolve_config(_args(node_name="a b"))
    with pytest.raises(ConfigError, match=r"cluster\.listen\.port: got -1"):
        resolve_config(_args(cluster_port=-1))


def test_the_secret_comes_from_the_file_or_a_file_it_names(tmp_path: Path) -> None:
    path = tmp_path / "amqplite.yaml"
    path.write_text("cluster:\n  secret: s3cret\n")
    assert load_config(path).cluster.secret == "s3cret"
    assert "s3cret" not in repr(load_config(path))  # never logged with the config
    cookie = tmp_path / "cookie"
    cookie.write_text("from-file\n")
    path.write_text(f"cluster:\n  secret_file: {cookie}\n")
    assert load_config(path).cluster.secret == "from-file"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("  secret_file: {missing}\n", "cannot read"),
        ("  secret_file: {empty}\n", "is empty"),
        ("  secret: x\n  secret_file: {empty}\n", "not both"),
    ],
)
def test_a_bad_secret_file_is_a_config_error_naming_file_line_and_key(
    tmp_path: Path, section: str, problem: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    path = tmp_path / "amqplite.yaml"
    text = section.format(missing=tmp_path / "nope", empty=empty)
    path.write_text("cluster:\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert "cluster.secret_file" in message
    assert problem in message
