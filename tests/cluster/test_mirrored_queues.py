"""Mirrored queues end to end: real etcd, three real `amqplite serve` nodes, pika clients.

A leader SIGKILLed while publishing loses no confirmed message and a surviving node takes
over; a paused mirror leaves the in-sync set (confirms go on) and rejoins after SIGCONT.
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
import trio
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, api_get, start_node, wait_for

from amqplite.cluster.election import QueueElection, QueueKeys
from amqplite.cluster.etcd_client import EtcdClient

pytestmark = pytest.mark.cluster

QUEUE = "mirrored"
INSYNC_TIMEOUT_MS = 500
FAILOVER_BOUND = 20.0  # seconds from the leader's SIGKILL to the first confirm on the new leader
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def etcd_view(etcd: EtcdProcess) -> tuple[tuple[str, int] | None, tuple[str, ...]]:
    """(leader, epoch) and the in-sync set of the test queue, as etcd holds them now."""

    async def read() -> tuple[tuple[str, int] | None, tuple[str, ...]]:
        async with EtcdClient([etcd.url]) as client:
            election = QueueElection(client, QueueKeys.of("amqplite", "/", QUEUE), "test")
            return await election.leader(), (await election.in_sync()).members

    return trio.run(read)


@pytest.fixture
def cluster(etcd: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, BrokerProcess]]:
    """Three nodes a, b, c with a short in-sync timeout."""
    yield from three_nodes(etcd, tmp_path)


@pytest.fixture
def stalling_cluster(
    etcd: EtcdProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, BrokerProcess]]:
    """Three nodes whose queue journal syncs hang while tmp_path/stall-<node> exists."""
    monkeypatch.setenv("AMQPLITE_FAULT_STALL_FSYNC", str(tmp_path / "stall-{node}"))
    yield from three_nodes(etcd, tmp_path)
    for flag in tmp_path.glob("stall-*"):
        flag.unlink()


def three_nodes(etcd: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, BrokerProcess]]:
    """Start a, b, c; stop them all after the test (resumed first if paused)."""
    settings = f"  insync_timeout_ms: {INSYNC_TIMEOUT_MS}\n"
    nodes: dict[str, BrokerProcess] = {}
    try:
        for name in ("a", "b", "c"):
            nodes[name] = start_node(tmp_path / name, name, etcd, cluster_settings=settings)
        yield nodes
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
            node.stop()


def connect(node: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.url + "?heartbeat=0"))


def declare_mirrored(etcd: EtcdProcess, nodes: dict[str, BrokerProcess]) -> str:
    """Declare the queue with x-replicas=3 on a; wait for a leader and all three in sync."""
    with connect(nodes["a"]) as conn:
        conn.channel().queue_declare(QUEUE, durable=True, arguments={"x-replicas": 3})

    def placed() -> str | None:
        leader, in_sync = etcd_view(etcd)
        return leader[0] if leader is not None and len(in_sync) == 3 else None

    return wait_for(placed, "a leader and three in-sync members")


def leader_seen(node: BrokerProcess, leader: str) -> bool:
    """True once node's /api/queues names leader as the queue's leader."""
    rows = [row for row in api_get(node, "/api/queues") if row["name"] == QUEUE]
    return bool(rows) and rows[0].get("leader") == leader


def publish(node: BrokerProcess, bodies: list[bytes]) -> None:
    """Publish persistent messages with confirms; each returns once confirmed."""
    with connect(node) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", QUEUE, body, PERSISTENT)


def test_a_killed_leader_loses_no_confirmed_message_and_a_mirror_takes_over(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, cluster)
    first = [f"m{i}".encode() for i in range(50)]
    publish(cluster[leader], first)
    holder = connect(cluster[leader])  # takes 5 messages and never acks them
    taken = []
    ch = holder.channel()
    for _ in range(5):
        method, _, body = ch.basic_get(QUEUE)
        assert method is not None
        taken.append(body)
    confirmed: list[bytes] = []
    stop = threading.Event()

    def keep_publishing() -> None:
        try:
            with connect(cluster[leader]) as conn:
                pub = conn.channel()
                pub.confirm_delivery()
                i = 0
                while not stop.is_set():
                    body = f"k{i}".encode()
                    i += 1
                    try:
                        pub.basic_publish("", QUEUE, body, PERSISTENT)
                    except pika.exceptions.NackError:
                        continue  # an answer, not a confirm (a leader whose sync was slow resigns)
                    confirmed.append(body)
        except pika.exceptions.AMQPError:
            pass  # the leader died under it

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    publisher.start()
    wait_for(lambda: len(confirmed) >= 100, "100 confirms while the leader lives")
    killed_at = time.monotonic()
    cluster[leader].stop(signal.SIGKILL)
    stop.set()
    publisher.join(timeout=10)
    assert not publisher.is_alive()
    survivors = [n for n in cluster if n != leader]

    def new_leader() -> str | None:
        current, _ = etcd_view(etcd)
        return current[0] if current is not None and current[0] in survivors else None

    successor = wait_for(new_leader, "a surviving node leads", timeout=FAILOVER_BOUND)
    deadline = killed_at + FAILOVER_BOUND
    while True:  # publishing resumes on the new leader: the first confirm after the kill
        try:
            publish(cluster[successor], [b"after"])
            break
        except pika.exceptions.AMQPError:
            assert time.monotonic() < deadline, "no confirm on the new leader in time"
            time.sleep(0.1)
    print(f"failover: {time.monotonic() - killed_at:.2f} s from SIGKILL to the first confirm")
    received: dict[bytes, bool] = {}
    with connect(cluster[successor]) as conn:
        ch = conn.channel()
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                break
            received[body] = method.redelivered
    lost = [b for b in [*first, *confirmed, b"after"] if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)}"
    assert all(received[b] for b in taken), "delivered-unacked messages come back redelivered"
    assert not received[first[-1]]  # never delivered: not redelivered
    # the old leader restarts: it catches up as a mirror and rejoins the in-sync set; its own
    # recovered copy of the queue serves nobody
    data_dir = cluster[leader].data_dir
    assert data_dir is not None
    settings = f"  insync_timeout_ms: {INSYNC_TIMEOUT_MS}\n"
    cluster[leader] = start_node(data_dir, leader, etcd, cluster_settings=settings)
    wait_for(lambda: leader in etcd_view(etcd)[1], "the old leader back in sync", timeout=30)
    assert etcd_view(etcd)[0] == (successor, 2)
    wait_for(lambda: leader_seen(cluster[leader], successor), "the old leader naming the new one")


def test_a_paused_mirror_leaves_the_in_sync_set_and_catches_up_after_sigcont(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, cluster)
    publish(cluster[leader], [b"before"])
    paused = next(n for n in cluster if n != leader)
    wait_for(lambda: leader_seen(cluster[paused], leader), "a mirror naming the leader")
    with connect(cluster[paused]) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", QUEUE, b"to-a-mirror", PERSISTENT)  # forwarded to the leader
    assert cluster[paused].proc is not None
    cluster[paused].proc.send_signal(signal.SIGSTOP)
    done = threading.Event()
    in_sync_at_first_confirm: list[tuple[str, ...]] = []

    def publish_while_paused() -> None:
        publish(cluster[leader], [b"p0"])
        in_sync_at_first_confirm.append(etcd_view(etcd)[1])
        publish(cluster[leader], [f"p{i}".encode() for i in range(1, 20)])
        done.set()

    threading.Thread(target=publish_while_paused, daemon=True).start()
    # confirms resume once the mirror is out of the in-sync set (bound: the in-sync timeout)
    wait_for(done.is_set, "20 confirms with a mirror paused", timeout=15)
    # the leader confirmed without the mirror only after etcd no longer held it in sync
    assert paused not in in_sync_at_first_confirm[0]
    cluster[paused].proc.send_signal(signal.SIGCONT)
    wait_for(lambda: paused in etcd_view(etcd)[1], "the resumed mirror back in sync", timeout=30)


def test_a_paused_leader_that_comes_back_is_fenced_and_loses_no_confirmed_message(
    etcd: EtcdProcess, cluster: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, cluster)
    confirmed: list[bytes] = []
    stop = threading.Event()

    def keep_publishing() -> None:  # to the old leader, through its pause and after it
        try:
            with connect(cluster[leader]) as conn:
                pub = conn.channel()
                pub.confirm_delivery()
                i = 0
                while not stop.is_set():
                    body = f"k{i}".encode()
                    i += 1
                    try:
                        pub.basic_publish("", QUEUE, body, PERSISTENT)
                    except pika.exceptions.NackError:
                        continue  # an answer, not a confirm (a leader whose sync was slow resigns)
                    confirmed.append(body)
        except pika.exceptions.AMQPError:
            pass  # nacked, or the connection went

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    publisher.start()
    wait_for(lambda: len(confirmed) >= 50, "50 confirms before the pause")
    proc = cluster[leader].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # its lease runs out; a member takes the queue over

    def new_leader() -> str | None:
        current, _ = etcd_view(etcd)
        return current[0] if current is not None and current[0] != leader else None

    successor = wait_for(new_leader, "another node leads while the leader is paused")
    proc.send_signal(signal.SIGCONT)
    # it learns it no longer leads
    wait_for(lambda: leader_seen(cluster[leader], successor), "the old leader naming the new one")
    stop.set()
    with connect(cluster[successor]) as conn:
        ch = conn.channel()
        received = set()
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                break
            received.add(body)
    # (its last publish may wait for a confirm the fenced term never gives: it ends with the node)
    lost = [b for b in list(confirmed) if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(confirmed)}"


def test_a_leader_whose_disk_hangs_gives_up_and_a_mirror_confirms_instead(
    etcd: EtcdProcess, stalling_cluster: dict[str, BrokerProcess], tmp_path: Path
) -> None:
    cluster = stalling_cluster
    leader = declare_mirrored(etcd, cluster)
    before = [f"b{i}".encode() for i in range(10)]
    publish(cluster[leader], before)
    (tmp_path / f"stall-{leader}").touch()  # its queue journal's next sync hangs

    stuck_outcome: list[str] = []

    def publish_stuck() -> None:
        try:
            publish(cluster[leader], [b"stuck"])
            stuck_outcome.append("ack")
        except pika.exceptions.NackError:
            stuck_outcome.append("nack")
        except pika.exceptions.AMQPError:
            stuck_outcome.append("closed")

    stuck = threading.Thread(target=publish_stuck, daemon=True)
    stuck.start()

    def new_leader() -> str | None:
        current, _ = etcd_view(etcd)
        # (the old leader may be back in the in-sync set already: its mirror copy is apart)
        if current is None or current[0] == leader:
            return None
        return current[0]

    successor = wait_for(new_leader, "the leader with a hung disk replaced", timeout=30)
    publish(cluster[successor], [b"after"])
    with connect(cluster[successor]) as conn:
        ch = conn.channel()
        received = set()
        while True:
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            if method is None:
                break
            received.add(body)
    assert [b for b in [*before, b"after"] if b not in received] == []
    # the hung leader never confirmed it: once it stepped down, it nacked it (never left hanging)
    wait_for(lambda: stuck_outcome, "the stuck publish answered", timeout=15)
    assert stuck_outcome == ["nack"]
