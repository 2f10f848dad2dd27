"""The node link's shared secret: real etcd, real nodes. Nodes that share it link (one reads it
from `cluster.secret`, the other from `cluster.secret_file`); a node with another secret is
refused, and the node it dials logs that once, not at every redial.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, start_node, stop_nodes, wait_for
from mirror_helpers import connect, declare_replicated, in_sync_of, publish_confirmed

pytestmark = pytest.mark.cluster

QUEUE = "secret-q"
REFUSED = "refused: node 'c' does not know this cluster's secret"


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
        # linked (same secret): a leader and both members in sync
        leader = declare_replicated(etcd.url, nodes["a"].url, QUEUE, replicas=2)
        follower = "b" if leader == "a" else "a"
        publish_confirmed(
            nodes[follower].url, QUEUE, [b"f0", b"f1"]
        )  # forwarded over an authenticated link
        nodes["c"] = start_node(tmp_path / "c", "c", etcd, cluster_settings="  secret: wrong\n")
        # c learns the queue from etcd and dials its leader to forward to it: refused
        wait_for(lambda: REFUSED in nodes[leader].output(), "the leader refusing node c")
        publish_confirmed(
            nodes[follower].url, QUEUE, [f"g{i}".encode() for i in range(20)]
        )  # c keeps redialling
        with connect(nodes["c"].url) as conn:  # c's count falls back to its own empty copy
            count = conn.channel().queue_declare(QUEUE, passive=True).method.message_count
        assert count == 0
        assert nodes[leader].output().count(REFUSED) == 1
        assert set(in_sync_of(etcd.url, QUEUE)) == {"a", "b"}  # c holds no part of it
        with connect(nodes[leader].url) as conn:
            got = conn.channel().queue_declare(QUEUE, passive=True).method.message_count
        assert got == 22
    finally:
        stop_nodes(nodes.values())
