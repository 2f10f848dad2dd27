"""etcd stopped and restarted (same data directory and port) while confirming publishers run.

No node exits, nothing confirmed is lost, and confirms go on once etcd is back. The outage
(OUTAGE s) is longer than the nodes' lease TTL, so leaders must stop confirming while their
lease is not surely valid and start again when etcd renews it (a restarted etcd keeps leases).
"""

from __future__ import annotations

import signal
import time

import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, wait_for
from mirror_helpers import ConfirmingPublisher, declare_replicated, drain, leader_of

pytestmark = pytest.mark.cluster

QUEUE = "through-restart"
OUTAGE = 3.0  # seconds etcd stays down: longer than the lease TTL (2 s)


def test_etcd_restarted_while_publishing_stops_no_node_and_loses_nothing_confirmed(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare_replicated(etcd.url, nodes["a"].url, QUEUE)
    publishers = [ConfirmingPublisher(nodes[leader].url, QUEUE, f"p{i}-") for i in range(2)]
    for publisher in publishers:
        publisher.start()
    wait_for(lambda: all(len(p.confirmed) >= 30 for p in publishers), "confirms before")
    etcd.stop()
    time.sleep(OUTAGE)  # the fault itself: etcd away for longer than the lease TTL
    assert all(n.proc is not None and n.proc.poll() is None for n in nodes.values())
    etcd.start()
    at_restart = [len(p.confirmed) for p in publishers]
    wait_for(
        lambda: all(
            len(p.confirmed) >= n + 30 for p, n in zip(publishers, at_restart, strict=True)
        ),
        "confirms going on after etcd is back",
    )
    for publisher in publishers:
        publisher.stopping.set()
    for publisher in publishers:
        publisher.join(timeout=30)
        assert publisher.error is None
        assert publisher.nacked == []
    for name, node in nodes.items():
        assert node.proc is not None
        assert node.proc.poll() is None, f"node {name} exited"
        assert "etcd unreachable" in node.output(), f"node {name} never saw the outage"
    assert leader_of(etcd.url, QUEUE) == (leader, 1)  # etcd kept the leases: no failover
    received = set(drain(nodes[leader].url, QUEUE))
    confirmed = [b for p in publishers for b in p.confirmed]
    lost = [b for b in confirmed if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(confirmed)}"
    for node in nodes.values():  # each stops cleanly (its lease revoked), as after no outage
        assert node.stop(signal.SIGTERM) == 0
