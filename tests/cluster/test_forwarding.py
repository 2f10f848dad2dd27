"""Clients served by whichever node they reach: real etcd, three real nodes, pika clients.

A publish to a queue led elsewhere is forwarded to its leader and confirmed when the leader
confirms; a consumer on a node that does not lead the queue gets the leader's deliveries through
a remote consumer, within its prefetch; a publish taken before anyone leads the queue waits for
the leader; the consumers of a leader that steps down keep receiving; a client publishing through
a surviving node sees no nack when the leader is killed; /api/queues shows leader and members.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
import trio
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, api_get, start_node, wait_for

from amqplite.cluster.election import QueueElection, QueueKeys
from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.queue_roles import placement

pytestmark = pytest.mark.cluster

QUEUE = "forwarded"
SETTINGS = "  insync_timeout_ms: 500\n"
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def leader_of(etcd: EtcdProcess, queue: str = QUEUE) -> tuple[str | None, tuple[str, ...]]:
    """The queue's leader and in-sync set, as etcd holds them now."""

    async def read() -> tuple[str | None, tuple[str, ...]]:
        async with EtcdClient([etcd.url]) as client:
            election = QueueElection(client, QueueKeys.of("amqplite", "/", queue), "test")
            current = await election.leader()
            return (None if current is None else current[0]), (await election.in_sync()).members

    return trio.run(read)


@pytest.fixture
def cluster(etcd: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, BrokerProcess]]:
    """Nodes a, b, c (resumed, then stopped, after the test)."""
    nodes: dict[str, BrokerProcess] = {}
    try:
        for name in ("a", "b", "c"):
            nodes[name] = start_node(tmp_path / name, name, etcd, cluster_settings=SETTINGS)
        yield nodes
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
            node.stop()


def connect(node: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url + "?heartbeat=0"))


def declare(etcd: EtcdProcess, node: BrokerProcess) -> str:
    """Declare the queue (3 replicas) through node; the leader, once all three are in sync."""
    with connect(node) as conn:
        conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-replicas": 3})

    def placed() -> str | None:
        leader, in_sync = leader_of(etcd)
        return leader if leader is not None and len(in_sync) == 3 else None

    return wait_for(placed, "a leader and three in-sync members")


def queue_row(node: BrokerProcess) -> dict[str, object]:
    """The queue as node's /api/queues shows it."""
    rows = api_get(node, "/api/queues")
    return next(row for row in rows if row["name"] == QUEUE)


def http_publish(node: BrokerProcess, body: str) -> dict[str, object]:
    """Publish to the queue through node's management API (persistent); the decoded answer."""
    payload = {
        "properties": {"delivery_mode": 2},
        "routing_key": QUEUE,
        "payload": body,
        "payload_encoding": "string",
    }
    request = urllib.request.Request(
        node.management_url + "/api/exchanges/%2F/amq.default/publish",
        json.dumps(payload).encode(),
        {"content-type": "application/json"},
    )
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=20) as response:
        answer: dict[str, object] = json.load(response)
        return answer


def drain(node: BrokerProcess) -> list[bytes]:
    """Take every message of the queue through node (basic.get on the leader)."""
    out = []
    with connect(node) as conn:
        ch = conn.channel()
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                return out
            out.append(body)


def test_published_on_one_follower_consumed_on_another_every_confirmed_message_arrives(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, cluster["a"])
    publisher_node, consumer_node = [n for n in cluster if n != leader]
    bodies = [f"m{i}".encode() for i in range(300)]
    with connect(cluster[publisher_node]) as conn:
        ch = conn.channel()
        ch.confirm_delivery()  # each basic_publish returns once confirmed (NackError if nacked)
        for body in bodies:
            ch.basic_publish("", QUEUE, body, PERSISTENT)
    # the leader holds them all: they were forwarded, not kept on the follower
    wait_for(lambda: queue_row(cluster[leader])["messages"] == len(bodies), "300 on the leader")
    assert queue_row(cluster[publisher_node])["messages"] == 0
    received: list[bytes] = []
    with connect(cluster[consumer_node]) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)

        def on_message(
            channel: pika.adapters.blocking_connection.BlockingChannel,
            method: pika.spec.Basic.Deliver,
            _: pika.BasicProperties,
            body: bytes,
        ) -> None:
            received.append(body)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(QUEUE, on_message)
        deadline = time.monotonic() + 30
        while len(received) < len(bodies) and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert received == bodies  # every one, once, in order
    # acked on the follower, so settled on the leader
    wait_for(lambda: queue_row(cluster[leader])["messages"] == 0, "the leader's queue empty")


def test_a_consumer_on_a_follower_holds_no_more_than_its_prefetch(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, cluster["a"])
    follower = next(n for n in cluster if n != leader)
    with connect(cluster[leader]) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(50):
            ch.basic_publish("", QUEUE, f"p{i}".encode(), PERSISTENT)
    held: list[int] = []
    with connect(cluster[follower]) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=5)
        ch.basic_consume(QUEUE, lambda _c, method, _p, _b: held.append(method.delivery_tag))

        def leader_shows_five_out() -> bool:
            conn.process_data_events(time_limit=0.05)
            row = queue_row(cluster[leader])
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
    wait_for(lambda: queue_row(cluster[leader])["messages_ready"] == 45, "requeued on close")


def test_a_publish_taken_before_anyone_leads_the_queue_is_forwarded_once_one_does(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    # declared and published at once on the node placed last (it campaigns last): the publish
    # is taken before anyone leads the queue; it waits for the leader, which confirms it
    node = placement("/", QUEUE, sorted(cluster), 3)[-1]
    outcome: list[str] = []

    def publish() -> None:
        with connect(cluster[node]) as conn:
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
    leader, _ = leader_of(etcd)
    assert leader is not None
    assert drain(cluster[leader]) == [b"early"]


def test_consumers_of_a_leader_that_steps_down_keep_receiving(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, cluster["a"])
    received: list[bytes] = []
    conn = connect(cluster[leader])
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)

    def on_message(
        channel: pika.adapters.blocking_connection.BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _: pika.BasicProperties,
        body: bytes,
    ) -> None:
        received.append(body)
        channel.basic_ack(method.delivery_tag)

    ch.basic_consume(QUEUE, on_message)
    proc = cluster[leader].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # its lease runs out: another node leads

    def successor() -> str | None:
        current, _ = leader_of(etcd)
        return current if current is not None and current != leader else None

    new_leader = wait_for(successor, "another node leads while the leader is paused")
    proc.send_signal(signal.SIGCONT)
    with connect(cluster[new_leader]) as pub:
        pc = pub.channel()
        pc.confirm_delivery()
        for i in range(20):
            pc.basic_publish("", QUEUE, f"n{i}".encode(), PERSISTENT)

    def all_twenty() -> bool:
        conn.process_data_events(time_limit=0.1)
        return len(set(received)) >= 20

    wait_for(all_twenty, "the old leader's consumer receives the new leader's messages")
    assert set(received) == {f"n{i}".encode() for i in range(20)}
    conn.close()


def test_management_shows_leader_members_and_online(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, cluster["b"])

    def shown_everywhere() -> list[dict[str, object]] | None:
        # (online waits too: under load a node's 2 s test lease may lapse and come back)
        rows = [queue_row(node) for node in cluster.values()]
        every = ["a", "b", "c"]
        if all(
            row.get("leader") == leader and sorted(row.get("online", [])) == every for row in rows
        ):  # type: ignore[arg-type]
            return rows
        return None

    for row in wait_for(shown_everywhere, "every node showing the leader, all three online"):
        assert row["node"] == leader
        assert sorted(row["members"]) == ["a", "b", "c"]  # type: ignore[arg-type]
    gone = next(n for n in cluster if n != leader)
    cluster[gone].stop()  # a clean stop revokes its lease: it leaves the member view at once
    survivor = next(n for n in cluster if n not in (leader, gone))
    wait_for(
        lambda: sorted(queue_row(cluster[survivor])["online"]) == sorted([leader, survivor]),  # type: ignore[arg-type]
        "the stopped member no longer online",
    )
    assert sorted(queue_row(cluster[survivor])["members"]) == ["a", "b", "c"]  # type: ignore[arg-type]
    # the HTTP API of a node that does not lead it publishes too, answering once confirmed
    assert http_publish(cluster[survivor], "over http") == {"routed": True}
    assert drain(cluster[leader]) == [b"over http"]


def test_leader_killed_under_clients_of_other_nodes_no_nacks_nothing_lost(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare(etcd, cluster["a"])
    # the survivor placed first campaigns first: the publisher is on it, the consumer on the
    # other, so the consumer's deliveries come through a proxy before and (most likely) after
    follower, other = [n for n in placement("/", QUEUE, sorted(cluster), 3) if n != leader]
    confirmed: list[bytes] = []
    nacked: list[bytes] = []
    confirmed_at: list[float] = []
    consumed: set[bytes] = set()
    stop = threading.Event()

    def keep_publishing() -> None:  # through a node that survives, confirm by confirm
        with connect(cluster[follower]) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            i = 0
            while not stop.is_set():
                body = f"k{i}".encode()
                try:
                    ch.basic_publish("", QUEUE, body, PERSISTENT)
                    confirmed.append(body)
                    confirmed_at.append(time.monotonic())
                except pika.exceptions.NackError:
                    nacked.append(body)
                i += 1

    def keep_consuming() -> None:  # on the other surviving node, never reconnecting
        with connect(cluster[other]) as conn:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=20)

            def on_message(
                channel: pika.adapters.blocking_connection.BlockingChannel,
                method: pika.spec.Basic.Deliver,
                _: pika.BasicProperties,
                body: bytes,
            ) -> None:
                consumed.add(body)
                channel.basic_ack(method.delivery_tag)

            ch.basic_consume(QUEUE, on_message)
            while not stop.is_set() or not set(confirmed) <= consumed:
                conn.process_data_events(time_limit=0.1)

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    consumer = threading.Thread(target=keep_consuming, daemon=True)
    publisher.start()
    consumer.start()
    wait_for(lambda: len(consumed) >= 100, "100 consumed through a node that does not lead")
    killed_at = time.monotonic()
    cluster[leader].stop(signal.SIGKILL)
    wait_for(lambda: confirmed_at[-1] > killed_at, "a confirm after the leader's kill")
    count = len(confirmed)
    wait_for(lambda: len(confirmed) >= count + 100, "100 more confirms after the failover")
    stop.set()
    publisher.join(timeout=30)
    assert not publisher.is_alive()
    first = next(at for at in confirmed_at if at > killed_at)
    print(f"failover through a follower: {first - killed_at:.2f} s to the first confirm")
    print(f"publisher on {follower}, consumer on {other}, new leader {leader_of(etcd)[0]}")
    assert nacked == []  # the client on a surviving node saw no nack at all
    new_leader, _ = leader_of(etcd)
    assert new_leader in (follower, other)
    # the consumer, still on its node, gets every confirmed message (redeliveries allowed)
    consumer.join(timeout=60)
    lost = [b for b in confirmed if b not in consumed]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(confirmed)}"
