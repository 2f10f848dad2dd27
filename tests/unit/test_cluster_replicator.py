"""The leader's hook on a real store (no sockets): a mirrored queue's confirms wait for its mirrors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.message import Message
from amqplite.cluster.election import InSync, Leadership
from amqplite.cluster.link import QueueRef
from amqplite.cluster.replicator import QueueLeader
from amqplite.server.restore import recover_into
from amqplite.store.queue_store import QueueStore
from amqplite.store.records import scan
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"
pytestmark = pytest.mark.trio


def leading(tmp_path: Path) -> tuple[Broker, Store, QueueLeader]:
    """Queue q on a real store, led here with mirror b in sync."""
    broker = Broker()
    broker.add_vhost("/")
    store = Store(tmp_path)
    recover_into(broker, store)
    queue = broker.vhost("/").declare_queue("q", durable=True)
    store.commit()
    journal = queue.journal
    assert isinstance(journal, QueueStore)
    term = Leadership("a", 1, token=7, lease=1)
    election: Any = None  # not asked anything here: no in-sync changes in these tests
    leader = QueueLeader(
        QueueRef("/", "q"), queue, journal, term, election, ("a", "b"), InSync(1, ("a", "b"), 3)
    )
    return broker, store, leader


def publish(broker: Broker, body: bytes) -> Any:
    """Publish to q; the mark its confirm waits for."""
    commits = broker.commits
    outer = commits.watch()
    message = Message("", "q", PERSISTENT_PROPS, body, persistent=True)
    broker.vhost("/").publish("", message)
    return commits.watched(outer)


async def test_a_confirm_waits_for_the_local_sync_and_the_in_sync_mirrors_ack(
    tmp_path: Path,
) -> None:
    broker, store, leader = leading(tmp_path)
    mark = publish(broker, b"m1")
    assert [kind for kind, _, _ in scan(b"".join(leader.records), 0).records] == [1]
    assert not is_durable(mark)
    store.commit()  # on the leader's disk
    assert not is_durable(mark)  # b has not acked
    leader.replicas.acked("b", leader.replicas.end)
    leader.domain.regate()
    assert is_durable(mark)


async def test_a_mirror_out_of_sync_is_not_waited_for(tmp_path: Path) -> None:
    broker, store, leader = leading(tmp_path)
    leader.replicas.dropped("b")
    mark = publish(broker, b"m1")
    store.commit()
    assert is_durable(mark)


async def test_nothing_is_confirmed_while_the_lease_is_in_doubt_or_after_the_term(
    tmp_path: Path,
) -> None:
    broker, store, leader = leading(tmp_path)
    valid = [False]
    leader.lease_valid = lambda: valid[0]
    mark = publish(broker, b"m1")
    store.commit()
    leader.replicas.acked("b", leader.replicas.end)
    leader.domain.regate()
    assert not is_durable(mark)
    valid[0] = True
    leader.domain.regate()
    assert is_durable(mark)
    leader.stop()
    late = publish(broker, b"m2")
    store.commit()
    leader.replicas.acked("b", leader.replicas.end)
    leader.domain.regate()
    assert not is_durable(late)
