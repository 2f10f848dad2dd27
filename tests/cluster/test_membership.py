"""Cluster membership end to end: real etcd, real `amqplite serve --node-name ... --etcd ...`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from broker_process import ROOT, BrokerProcess, free_port
from cluster_helpers import EtcdProcess, StartNode, api_get, node_names, start_node, wait_for

from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.keys import node_key

pytestmark = pytest.mark.cluster

AMQPLITE = (sys.executable, "-m", "amqplite")


def registered_in_etcd(etcd: EtcdProcess, name: str) -> bool:
    """Whether etcd holds the node's key right now."""

    async def get() -> bool:
        async with EtcdClient([etcd.url]) as client:
            return await client.get(node_key("amqplite", name)) is not None

    return trio.run(get)


def alive(node: BrokerProcess) -> bool:
    """The node's process is still running."""
    return node.proc is not None and node.proc.poll() is None


def test_serve_in_cluster_mode_without_etcd_exits_naming_the_endpoints(tmp_path: Path) -> None:
    endpoints = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    result = subprocess.run(
        [
            *AMQPLITE,
            "serve",
            "--node-name",
            "n1",
            "--etcd",
            ",".join(endpoints),
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--management-port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("amqplite: cluster: cannot reach etcd at ")
    assert all(url in lines[0] for url in endpoints)


def test_a_bad_etcd_flag_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *AMQPLITE,
            "serve",
            "--etcd",
            "http://127.0.0.1:2379,etcd:2379",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "amqplite: configuration error: command line: cluster.etcd_endpoints[1]: "
        "got 'etcd:2379', expected an etcd client URL like http://host:2379"
    )


def test_two_nodes_see_each_other_in_api_nodes_and_ctl_cluster(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    b = node("node-b")
    for started in (a, b):
        wait_for(lambda n=started: node_names(n) == ["node-a", "node-b"], "both nodes listed")
    listed = {n["name"]: n for n in api_get(a, "/api/nodes")}
    assert listed["node-a"]["this_node"] is True
    assert listed["node-b"]["this_node"] is False
    assert listed["node-b"]["amqp"] == f"127.0.0.1:{b.port}"
    assert listed["node-b"]["management"] == b.management_url
    ctl = subprocess.run(
        [*AMQPLITE, "ctl", "--url", b.management_url, "cluster"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ctl.returncode == 0, ctl.stderr
    rows = [line.split() for line in ctl.stdout.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("node-a", f"127.0.0.1:{a.port}"),
        ("node-b", f"127.0.0.1:{b.port}"),
    ]


def test_a_killed_node_disappears_after_its_lease_ttl(node: StartNode, etcd: EtcdProcess) -> None:
    a = node("node-a")
    b = node("node-b")
    wait_for(lambda: node_names(a) == ["node-a", "node-b"], "node-b listed on node-a")
    b.stop(signal.SIGKILL)  # no chance to revoke its lease: only the TTL removes it
    wait_for(lambda: node_names(a) == ["node-a"], "node-b gone after its lease TTL")
    assert not registered_in_etcd(etcd, "node-b")
    assert registered_in_etcd(etcd, "node-a")


def test_a_second_process_with_a_live_nodes_name_is_refused(
    tmp_path: Path, node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    with pytest.raises(RuntimeError, match="broker exited with 1"):
        start_node(tmp_path / "a2", "node-a", etcd)
    output = (tmp_path / "a2").parent.glob("a2-broker-*.log")
    text = "".join(p.read_text() for p in output)
    assert "node name 'node-a' is registered by a live node at 127.0.0.1:" in text
    assert node_names(a) == ["node-a"]
    assert alive(a)


def test_restarting_etcd_does_not_stop_a_node_and_it_stays_registered(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    wait_for(lambda: registered_in_etcd(etcd, "node-a"), "node-a registered")
    etcd.stop()
    wait_for(lambda: "etcd unreachable" in a.output(), "node-a notices the outage")
    assert alive(a)
    etcd.start()
    wait_for(lambda: "etcd reachable again" in a.output(), "node-a reconnects")
    wait_for(lambda: registered_in_etcd(etcd, "node-a"), "node-a registered after restart")
    assert alive(a)
    assert node_names(a) == ["node-a"]


def test_nodes_register_again_in_an_etcd_that_lost_every_key(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    b = node("node-b")
    wait_for(lambda: node_names(a) == ["node-a", "node-b"], "both nodes listed")
    etcd.stop()
    etcd.wipe()
    etcd.start()
    for name in ("node-a", "node-b"):
        wait_for(lambda n=name: registered_in_etcd(etcd, n), f"{name} registered again")
    for started in (a, b):
        wait_for(lambda n=started: node_names(n) == ["node-a", "node-b"], "both listed again")
        assert alive(started)
