"""basic.get, queue.purge and declare-ok counts on a node that does not lead the queue.

Real etcd, three real nodes, pika: each request is forwarded to the leader over the node link
and answered from there; what a follower's client got stays unacked on the leader until that
client acks (gone), nacks (requeued there, redelivered) or goes away (requeued).
"""

from __future__ import annotations

import pika
import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, api_get, wait_for
from mirror_helpers import connect, declare_replicated, publish_confirmed

pytestmark = pytest.mark.cluster

QUEUE = "forwarded"


def ready_and_unacked(node: BrokerProcess) -> tuple[int, int]:
    """The queue's ready and unacked counts as node's /api/queues shows them."""
    row = next(r for r in api_get(node, "/api/queues") if r["name"] == QUEUE)
    return int(row["messages_ready"]), int(row["messages_unacknowledged"])


def count(ch: pika.adapters.blocking_connection.BlockingChannel) -> int:
    """The message count of a passive declare through ch."""
    return int(ch.queue_declare(QUEUE, passive=True).method.message_count)


def test_get_purge_and_declare_counts_through_a_follower_act_on_the_leader(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare_replicated(etcd.url, nodes["a"].url, QUEUE)
    follower = nodes[next(n for n in nodes if n != leader)]
    publish_confirmed(nodes[leader].url, QUEUE, [f"m{i}".encode() for i in range(6)])
    with connect(follower.url) as conn:
        ch = conn.channel()
        wait_for(lambda: count(ch) == 6, "the follower's declare-ok counting the leader's 6")
        first, _, body = ch.basic_get(QUEUE)
        assert first is not None
        assert (body, first.message_count) == (b"m0", 5)
        second, _, body = ch.basic_get(QUEUE)
        assert second is not None
        assert body == b"m1"
        assert ready_and_unacked(nodes[leader]) == (4, 2)  # held on the leader for this client
        ch.basic_ack(first.delivery_tag)
        ch.basic_nack(second.delivery_tag, requeue=True)
        assert count(ch) == 5  # m1 back on the leader, m0 gone
        again, _, body = ch.basic_get(QUEUE)
        assert again is not None
        assert body == b"m1"
        assert again.redelivered
        ch.basic_reject(again.delivery_tag, requeue=False)  # no dead-letter exchange: dropped
        taken, _, body = ch.basic_get(QUEUE, auto_ack=True)
        assert taken is not None
        assert body == b"m2"
        assert count(ch) == 3
        held = conn.channel()
        got, _, body = held.basic_get(QUEUE)
        assert got is not None
        assert body == b"m3"
        assert count(ch) == 2
        held.close()  # its unacked message goes back to the leader
        assert count(ch) == 3
        assert ch.queue_purge(QUEUE).method.message_count == 3
        assert ch.basic_get(QUEUE) == (None, None, None)
    assert ready_and_unacked(nodes[leader]) == (0, 0)
    with connect(nodes[leader].url) as conn:
        assert count(conn.channel()) == 0
