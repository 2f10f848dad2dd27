"""etcd stopped and restarted (same data directory and port) while confirming publishers run.

No node exits, nothing confirmed is lost, and confirms go on once etcd is back. The outage
(OUTAGE s) is longer than the nodes' lease TTL, so leaders must stop confirming while their
lease is not surely valid and start again when etcd renews it (a restarted etcd keeps leases).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, start_node, wait_for
from proxied_cluster import in_sync_of, leader_of

pytestmark = pytest.mark.cluster

QUEUE = "through-restart"
SETTINGS = "  insync_timeout_ms: 500\n"
OUTAGE = 3.0  # seconds etcd stays down: longer than the lease TTL (2 s)
PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def nodes(etcd: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, BrokerProcess]]:
    """Nodes a, b, c (lease TTL 2 s)."""
    started: dict[str, BrokerProcess] = {}
    try:
        for name in ("a", "b", "c"):
            started[name] = start_node(tmp_path / name, name, etcd, cluster_settings=SETTINGS)
        yield started
    finally:
        for node in started.values():
            node.stop()


def connect(node: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url + "?heartbeat=0"))


class Publisher(threading.Thread):
    """Publishes persistent messages with confirms to one node until told to stop."""

    def __init__(self, node: BrokerProcess, prefix: str) -> None:
        super().__init__(daemon=True)
        self.node, self.prefix = node, prefix
        self.confirmed: list[bytes] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.node) as conn:
                ch = conn.channel()
                ch.confirm_delivery()
                i = 0
                while not self.stopping.is_set():
                    body = f"{self.prefix}{i}".encode()
                    ch.basic_publish("", QUEUE, body, PERSISTENT)
                    self.confirmed.append(body)
                    i += 1
        except pika.exceptions.AMQPError as exc:
            self.error = exc


def test_etcd_restarted_while_publishing_stops_no_node_and_loses_nothing_confirmed(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    with connect(nodes["a"]) as conn:
        conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-replicas": 3})

    def placed() -> str | None:
        leader = leader_of(etcd.url, QUEUE)
        return leader[0] if leader is not None and len(in_sync_of(etcd.url, QUEUE)) == 3 else None

    leader = wait_for(placed, "a leader and three in-sync members")
    publishers = [Publisher(nodes[leader], f"p{i}-") for i in range(2)]
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
    for name, node in nodes.items():
        assert node.proc is not None
        assert node.proc.poll() is None, f"node {name} exited"
        assert "etcd unreachable" in node.output(), f"node {name} never saw the outage"
    assert leader_of(etcd.url, QUEUE) == (leader, 1)  # etcd kept the leases: no failover
    received: set[bytes] = set()
    with connect(nodes[leader]) as conn:
        ch = conn.channel()
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                break
            received.add(body)
    confirmed = [b for p in publishers for b in p.confirmed]
    lost = [b for b in confirmed if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(confirmed)}"
    for node in nodes.values():  # each stops cleanly (its lease revoked), as after no outage
        assert node.stop(signal.SIGTERM) == 0
