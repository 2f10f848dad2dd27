"""Clients served by whichever node they reach: real etcd, three real nodes, pika clients.

A publish to a queue led elsewhere is forwarded to its leader and confirmed when the leader
confirms; a consumer on a node that does not lead the queue gets the leader's deliveries through
a remote consumer, within its prefetch; a publish taken before anyone leads the queue waits for
the leader; the consumers of a leader that steps down keep receiving; a client publishing through
a surviving node sees no nack when the leader is killed; /api/queues shows leader and members.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, api_get, api_request, wait_for
from mirror_helpers import (
    PERSISTENT,
    ConfirmingPublisher,
    acking,
    connect,
    declare_replicated,
    drain,
    leader_name,
    leader_other_than,
    publish_confirmed,
)

from amqplite.cluster.queue_roles import placement

pytestmark = pytest.mark.cluster

QUEUE = "forwarded"


def declare(etcd: EtcdProcess, node: BrokerProcess) -> str:
    """Declare the queue (3 replicas) through node; the leader, once all three are in sync."""
    return declare_replicated(etcd.url, node.url, QUEUE)


def queue_row(node: BrokerProcess) -> dict[str, object]:
    """The queue as node's /api/queues shows it."""
    rows = api_get(node, "/api/queues")
    return next(row for row in rows if row["name"] == QUEUE)


def http_publish(node: BrokerProcess, body: str) -> Any:
    """Publish to the queue through node's management API (persistent); the decoded answer."""
    payload = {
        "properties": {"delivery_mode": 2},
        "routing_key": QUEUE,
        "payload": body,
        "payload_encoding": "string",
    }
    path = "/api/exchanges/%2F/amq.default/publish"
    return api_request(node, "POST", path, payload, timeout=20)[1]


def test_published_on_one_follower_consumed_on_another_every_confirmed_message_arrives(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, nodes["a"])
    publisher_node, consumer_node = [n for n in nodes if n != leader]
    bodies = [f"m{i}".encode() for i in range(300)]
    publish_confirmed(nodes[publisher_node].url, QUEUE, bodies)  # each one confirmed
    # the leader holds them all: they were forwarded, not kept on the follower
    wait_for(lambda: queue_row(nodes[leader])["messages"] == len(bodies), "300 on the leader")
    assert queue_row(nodes[publisher_node])["messages"] == 0
    received: list[bytes] = []
    with connect(nodes[consumer_node].url) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)
        ch.basic_consume(QUEUE, acking(received.append))
        deadline = time.monotonic() + 30
        while len(received) < len(bodies) and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert received == bodies  # every one, once, in order
    # acked on the follower, so settled on the leader
    wait_for(lambda: queue_row(nodes[leader])["messages"] == 0, "the leader's queue empty")


def test_a_consumer_on_a_follower_holds_no_more_than_its_prefetch(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, nodes["a"])
    follower = next(n for n in nodes if n != leader)
    publish_confirmed(nodes[leader].url, QUEUE, [f"p{i}".encode() for i in range(50)])
    held: list[int] = []
    with connect(nodes[follower].url) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=5)
        ch.basic_consume(QUEUE, lambda _c, method, _p, _b: held.append(method.delivery_tag))

        def leader_shows_five_out() -> bool:
            conn.process_data_events(time_limit=0.05)
            row = queue_row(nodes[leader])
            return row["messages_unacknowledged"] == 5 and row["messages_ready"] == 45

        wait_for(leader_shows_five_out, "5 delivered to the follower, 45 ready on the leader")
        conn.process_data_events(time_limit=0.3)
        assert len(held) == 5
        ch.basic_ack(held[-1], multiple=True)  # acks free the window: five more come

        def ten() -> bool:
            conn.process_data_events(time_limit=0.05)
            return len(held) == 10

        wait_for(ten, "five more after the acks")
    # the consumer's connection closed: what it held goes back to the leader's queue
    wait_for(lambda: queue_row(nodes[leader])["messages_ready"] == 45, "requeued on close")


def test_a_publish_taken_before_anyone_leads_the_queue_is_forwarded_once_one_does(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    # declared and published at once on the node placed last (it campaigns last): the publish
    # is taken before anyone leads the queue; it waits for the leader, which confirms it
    node = placement("/", QUEUE, sorted(nodes), 3)[-1]
    outcome: list[str] = []

    def publish() -> None:
        with connect(nodes[node].url) as conn:
            ch = conn.channel()
            ch.queue_declare(QUEUE, durable=True, arguments={"x-replicas": 3})
            ch.confirm_delivery()
            try:
                ch.basic_publish("", QUEUE, b"early", PERSISTENT)
                outcome.append("ack")
            except pika.exceptions.NackError:
                outcome.append("nack")

    threading.Thread(target=publish, daemon=True).start()
    wait_for(lambda: outcome, "the early publish answered", timeout=20)
    assert outcome == ["ack"]
    leader = leader_name(etcd.url, QUEUE)
    assert leader is not None
    assert drain(nodes[leader].url, QUEUE) == [b"early"]


def test_consumers_of_a_leader_that_steps_down_keep_receiving(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, nodes["a"])
    received: list[bytes] = []
    conn = connect(nodes[leader].url)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(QUEUE, acking(received.append))
    proc = nodes[leader].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # its lease runs out: another node leads

    new_leader = wait_for(
        lambda: leader_other_than(etcd.url, QUEUE, leader),
        "another node leads while the leader is paused",
    )
    proc.send_signal(signal.SIGCONT)
    publish_confirmed(nodes[new_leader].url, QUEUE, [f"n{i}".encode() for i in range(20)])

    def all_twenty() -> bool:
        conn.process_data_events(time_limit=0.1)
        return len(set(received)) >= 20

    wait_for(all_twenty, "the old leader's consumer receives the new leader's messages")
    assert set(received) == {f"n{i}".encode() for i in range(20)}
    conn.close()


def test_management_shows_leader_members_and_online(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, nodes["b"])

    def shown_everywhere() -> list[dict[str, object]] | None:
        # (online waits too: under load a node's 2 s test lease may lapse and come back)
        rows = [queue_row(node) for node in nodes.values()]
        every = ["a", "b", "c"]
        if all(
            row.get("leader") == leader and sorted(row.get("online", [])) == every for row in rows
        ):  # type: ignore[arg-type]
            return rows
        return None

    for row in wait_for(shown_everywhere, "every node showing the leader, all three online"):
        assert row["node"] == leader
        assert sorted(row["members"]) == ["a", "b", "c"]  # type: ignore[arg-type]
    gone = next(n for n in nodes if n != leader)
    nodes[gone].stop()  # a clean stop revokes its lease: it leaves the member view at once
    survivor = next(n for n in nodes if n not in (leader, gone))
    wait_for(
        lambda: sorted(queue_row(nodes[survivor])["online"]) == sorted([leader, survivor]),  # type: ignore[arg-type]
        "the stopped member no longer online",
    )
    assert sorted(queue_row(nodes[survivor])["members"]) == ["a", "b", "c"]  # type: ignore[arg-type]
    # the HTTP API of a node that does not lead it publishes too, answering once confirmed
    assert http_publish(nodes[survivor], "over http") == {"routed": True}
    assert drain(nodes[leader].url, QUEUE) == [b"over http"]


def test_leader_killed_under_clients_of_other_nodes_no_nacks_nothing_lost(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, nodes["a"])
    # the survivor placed first campaigns first: the publisher is on it, the consumer on the
    # other, so the consumer's deliveries come through a proxy before and (most likely) after
    follower, other = [n for n in placement("/", QUEUE, sorted(nodes), 3) if n != leader]
    consumed: set[bytes] = set()
    stop = threading.Event()
    publisher = ConfirmingPublisher(nodes[follower].url, QUEUE, "k", past_nacks=True)

    def keep_consuming() -> None:  # on the other surviving node, never reconnecting
        with connect(nodes[other].url) as conn:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=20)
            ch.basic_consume(QUEUE, acking(consumed.add))
            while not stop.is_set() or not set(publisher.confirmed) <= consumed:
                conn.process_data_events(time_limit=0.1)

    consumer = threading.Thread(target=keep_consuming, daemon=True)
    publisher.start()
    consumer.start()
    wait_for(lambda: len(consumed) >= 100, "100 consumed through a node that does not lead")
    killed_at = time.monotonic()
    nodes[leader].stop(signal.SIGKILL)
    wait_for(lambda: publisher.confirmed_at[-1] > killed_at, "a confirm after the leader's kill")
    count = len(publisher.confirmed)
    wait_for(
        lambda: len(publisher.confirmed) >= count + 100, "100 more confirms after the failover"
    )
    publisher.stopping.set()
    stop.set()
    publisher.join(timeout=30)
    assert not publisher.is_alive()
    assert publisher.error is None  # it never lost its connection either
    first = next(at for at in publisher.confirmed_at if at > killed_at)
    print(f"failover through a follower: {first - killed_at:.2f} s to the first confirm")
    new_leader = leader_name(etcd.url, QUEUE)
    print(f"publisher on {follower}, consumer on {other}, new leader {new_leader}")
    assert publisher.nacked == []  # the client on a surviving node saw no nack at all
    assert new_leader in (follower, other)
    # the consumer, still on its node, gets every confirmed message (redeliveries allowed)
    consumer.join(timeout=60)
    lost = [b for b in publisher.confirmed if b not in consumed]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(publisher.confirmed)}"
