"""The node link's shared secret: real etcd, real nodes. Nodes that share it link (one reads it
from `cluster.secret`, the other from `cluster.secret_file`); a node with another secret is
refused, and the node it dials logs that once, not at every redial.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, start_node, wait_for
from test_forwarding import PERSISTENT, connect, leader_of

pytestmark = pytest.mark.cluster

QUEUE = "secret-q"
REFUSED = "refused: node 'c' does not know this cluster's secret"


def publish(node: BrokerProcess, bodies: list[bytes]) -> None:
    """Persistent publishes with confirms through node; each returns once confirmed."""
    with connect(node) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", QUEUE, body, PERSISTENT)


def test_a_node_with_another_secret_is_refused_and_logged_once(
    etcd: EtcdProcess, tmp_path: Path
) -> None:
    cookie = tmp_path / "cookie"
    cookie.write_text("right\n")
    nodes: dict[str, BrokerProcess] = {}
    try:
        nodes["a"] = start_node(tmp_path / "a", "a", etcd, cluster_settings="  secret: right\n")
        nodes["b"] = start_node(
            tmp_path / "b", "b", etcd, cluster_settings=f"  secret_file: {cookie}\n"
        )
        with connect(nodes["a"]) as conn:
            conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-replicas": 2})

        def placed() -> str | None:
            leader, in_sync = leader_of(etcd, QUEUE)
            return leader if leader is not None and len(in_sync) == 2 else None

        leader = wait_for(placed, "a leader and both members in sync")  # linked: same secret
        follower = "b" if leader == "a" else "a"
        publish(nodes[follower], [b"f0", b"f1"])  # forwarded over an authenticated link
        nodes["c"] = start_node(tmp_path / "c", "c", etcd, cluster_settings="  secret: wrong\n")
        # c learns the queue from etcd and dials its leader to forward to it: refused
        wait_for(lambda: REFUSED in nodes[leader].output(), "the leader refusing node c")
        publish(nodes[follower], [f"g{i}".encode() for i in range(20)])  # c keeps redialling
        with connect(nodes["c"]) as conn:  # c's count falls back to its own empty copy
            count = conn.channel().queue_declare(QUEUE, passive=True).method.message_count
        assert count == 0
        assert nodes[leader].output().count(REFUSED) == 1
        assert set(leader_of(etcd, QUEUE)[1]) == {"a", "b"}  # c holds no part of it
        with connect(nodes[leader]) as conn:
            got = conn.channel().queue_declare(QUEUE, passive=True).method.message_count
        assert got == 22
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
            node.stop()
