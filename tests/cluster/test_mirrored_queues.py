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
from broker_process import BrokerProcess
from cluster_helpers import (
    INSYNC_SETTINGS,
    EtcdProcess,
    api_get,
    running_nodes,
    start_node,
    wait_for,
)
from mirror_helpers import (
    ConfirmingPublisher,
    connect,
    declare_replicated,
    drain,
    drain_deliveries,
    in_sync_of,
    leader_of,
    leader_other_than,
    publish_confirmed,
)

pytestmark = pytest.mark.cluster

QUEUE = "mirrored"
FAILOVER_BOUND = 20.0  # seconds from the leader's SIGKILL to the first confirm on the new leader


@pytest.fixture
def stalling_nodes(
    etcd: EtcdProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, BrokerProcess]]:
    """Three nodes whose queue journal syncs hang while tmp_path/stall-<node> exists."""
    monkeypatch.setenv("AMQPLITE_FAULT_STALL_FSYNC", str(tmp_path / "stall-{node}"))
    with running_nodes(etcd, tmp_path, cluster_settings=INSYNC_SETTINGS) as started:
        yield started
    for flag in tmp_path.glob("stall-*"):
        flag.unlink()


def declare_mirrored(etcd: EtcdProcess, nodes: dict[str, BrokerProcess]) -> str:
    """Declare the queue with x-replicas=3 on a; wait for a leader and all three in sync."""
    return declare_replicated(etcd.url, nodes["a"].url, QUEUE)


def leader_seen(node: BrokerProcess, leader: str) -> bool:
    """True once node's /api/queues names leader as the queue's leader."""
    rows = [row for row in api_get(node, "/api/queues") if row["name"] == QUEUE]
    return bool(rows) and rows[0].get("leader") == leader


def publish(node: BrokerProcess, bodies: list[bytes]) -> None:
    """Publish persistent messages with confirms; each returns once confirmed."""
    publish_confirmed(node.url, QUEUE, bodies)


def test_a_killed_leader_loses_no_confirmed_message_and_a_mirror_takes_over(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, nodes)
    first = [f"m{i}".encode() for i in range(50)]
    publish(nodes[leader], first)
    holder = connect(nodes[leader].url)  # takes 5 messages and never acks them
    taken = []
    ch = holder.channel()
    for _ in range(5):
        method, _, body = ch.basic_get(QUEUE)
        assert method is not None
        taken.append(body)
    # (a nack is an answer, not a confirm: a leader whose sync was slow resigns)
    publisher = ConfirmingPublisher(nodes[leader].url, QUEUE, "k", past_nacks=True)
    publisher.start()
    wait_for(lambda: len(publisher.confirmed) >= 100, "100 confirms while the leader lives")
    killed_at = time.monotonic()
    nodes[leader].stop(signal.SIGKILL)  # (the publisher's connection dies with it)
    publisher.stopping.set()
    publisher.join(timeout=10)
    assert not publisher.is_alive()
    successor = wait_for(
        lambda: leader_other_than(etcd.url, QUEUE, leader),
        "a surviving node leads",
        timeout=FAILOVER_BOUND,
    )
    deadline = killed_at + FAILOVER_BOUND
    while True:  # publishing resumes on the new leader: the first confirm after the kill
        try:
            publish(nodes[successor], [b"after"])
            break
        except pika.exceptions.AMQPError:
            assert time.monotonic() < deadline, "no confirm on the new leader in time"
            time.sleep(0.1)
    print(f"failover: {time.monotonic() - killed_at:.2f} s from SIGKILL to the first confirm")
    received = dict(drain_deliveries(nodes[successor].url, QUEUE))  # body: redelivered
    lost = [b for b in [*first, *publisher.confirmed, b"after"] if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)}"
    assert all(received[b] for b in taken), "delivered-unacked messages come back redelivered"
    assert not received[first[-1]]  # never delivered: not redelivered
    # the old leader restarts: it catches up as a mirror and rejoins the in-sync set; its own
    # recovered copy of the queue serves nobody
    data_dir = nodes[leader].data_dir
    assert data_dir is not None
    nodes[leader] = start_node(data_dir, leader, etcd, cluster_settings=INSYNC_SETTINGS)
    wait_for(
        lambda: leader in in_sync_of(etcd.url, QUEUE), "the old leader back in sync", timeout=30
    )
    assert leader_of(etcd.url, QUEUE) == (successor, 2)
    wait_for(lambda: leader_seen(nodes[leader], successor), "the old leader naming the new one")


def test_a_paused_mirror_leaves_the_in_sync_set_and_catches_up_after_sigcont(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, nodes)
    publish(nodes[leader], [b"before"])
    paused = next(n for n in nodes if n != leader)
    wait_for(lambda: leader_seen(nodes[paused], leader), "a mirror naming the leader")
    publish(nodes[paused], [b"to-a-mirror"])  # forwarded to the leader
    assert nodes[paused].proc is not None
    nodes[paused].proc.send_signal(signal.SIGSTOP)
    done = threading.Event()
    in_sync_at_first_confirm: list[tuple[str, ...]] = []

    def publish_while_paused() -> None:
        publish(nodes[leader], [b"p0"])
        in_sync_at_first_confirm.append(in_sync_of(etcd.url, QUEUE))
        publish(nodes[leader], [f"p{i}".encode() for i in range(1, 20)])
        done.set()

    threading.Thread(target=publish_while_paused, daemon=True).start()
    # confirms resume once the mirror is out of the in-sync set (bound: the in-sync timeout)
    wait_for(done.is_set, "20 confirms with a mirror paused", timeout=15)
    # the leader confirmed without the mirror only after etcd no longer held it in sync
    assert paused not in in_sync_at_first_confirm[0]
    nodes[paused].proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: paused in in_sync_of(etcd.url, QUEUE), "the resumed mirror back in sync", timeout=30
    )


def test_a_paused_leader_that_comes_back_is_fenced_and_loses_no_confirmed_message(
    etcd: EtcdProcess, nodes: dict[str, BrokerProcess]
) -> None:
    leader = declare_mirrored(etcd, nodes)
    # to the old leader, through its pause and after it (nacks are answers, not confirms)
    publisher = ConfirmingPublisher(nodes[leader].url, QUEUE, "k", past_nacks=True)
    publisher.start()
    wait_for(lambda: len(publisher.confirmed) >= 50, "50 confirms before the pause")
    proc = nodes[leader].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # its lease runs out; a member takes the queue over

    successor = wait_for(
        lambda: leader_other_than(etcd.url, QUEUE, leader),
        "another node leads while the leader is paused",
    )
    proc.send_signal(signal.SIGCONT)
    # it learns it no longer leads
    wait_for(lambda: leader_seen(nodes[leader], successor), "the old leader naming the new one")
    publisher.stopping.set()
    received = set(drain(nodes[successor].url, QUEUE))
    # (its last publish may wait for a confirm the fenced term never gives: it ends with the node)
    confirmed = list(publisher.confirmed)
    lost = [b for b in confirmed if b not in received]
    assert lost == [], f"confirmed lost: {len(lost)} of {len(confirmed)}"


def test_a_leader_whose_disk_hangs_gives_up_and_a_mirror_confirms_instead(
    etcd: EtcdProcess, stalling_nodes: dict[str, BrokerProcess], tmp_path: Path
) -> None:
    nodes = stalling_nodes
    leader = declare_mirrored(etcd, nodes)
    before = [f"b{i}".encode() for i in range(10)]
    publish(nodes[leader], before)
    (tmp_path / f"stall-{leader}").touch()  # its queue journal's next sync hangs

    stuck_outcome: list[str] = []

    def publish_stuck() -> None:
        try:
            publish(nodes[leader], [b"stuck"])
            stuck_outcome.append("ack")
        except pika.exceptions.NackError:
            stuck_outcome.append("nack")
        except pika.exceptions.AMQPError:
            stuck_outcome.append("closed")

    stuck = threading.Thread(target=publish_stuck, daemon=True)
    stuck.start()

    # (the old leader may be back in the in-sync set already: its mirror copy is apart)
    successor = wait_for(
        lambda: leader_other_than(etcd.url, QUEUE, leader),
        "the leader with a hung disk replaced",
        timeout=30,
    )
    publish(nodes[successor], [b"after"])
    received = set(drain(nodes[successor].url, QUEUE))
    assert [b for b in [*before, b"after"] if b not in received] == []
    # the hung leader never confirmed it: once it stepped down, it nacked it (never left hanging)
    wait_for(lambda: stuck_outcome, "the stuck publish answered", timeout=15)
    assert stuck_outcome == ["nack"]
