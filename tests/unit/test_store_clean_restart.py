"""A graceful shutdown leaves each queue as a snapshot with an index; the next boot reads the index."""

from __future__ import annotations

from pathlib import Path

from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage
from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.store.clean_index import INDEX_NAME
from amqplite.store.journal import list_segments
from amqplite.store.snapshot import SNAPSHOT_NAME
from amqplite.store.store import Store

PROPS = b"\x10\x00\x02"  # delivery_mode 2
KEY = b"k-\xff".decode("utf-8", "surrogateescape")


def boot(directory: Path, **config: int) -> tuple[Broker, Store]:
    return recovered(directory, fsync=False, **config)


def queue_dir(directory: Path) -> Path:
    (path,) = list((directory / "queues").iterdir())
    return path


def contents(queue: Queue) -> list[tuple[bytes, str, int, bool]]:
    return [
        (e.message.body, e.message.routing_key, e.message.priority, e.redelivered)
        for e in queue.ready
    ]


def fill(broker: Broker) -> Queue:
    """A priority queue: a non-UTF-8 key, a message delivered and requeued, one acked."""
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q", durable=True, arguments={"x-max-priority": 5})
    vhost.declare_exchange("fx", "fanout", durable=True)
    vhost.bind("fx", Destination("queue", "q"), "", {})
    for i in range(8):
        vhost.publish("", Message("", "q", PROPS, b"m%d" % i, persistent=True, priority=i % 3))
    vhost.publish("fx", Message("fx", KEY, PROPS, b"by-fanout", persistent=True))
    acked = queue.take()
    assert acked is not None
    queue.settle(acked)
    delivered = queue.take()
    assert delivered is not None
    delivered.delivery_count += 1
    queue.requeue(delivered)
    return queue


def test_graceful_close_leaves_snapshot_and_index_and_restart_restores_the_same_queue(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    expected = contents(fill(broker))
    store.close()
    directory = queue_dir(tmp_path)
    assert list_segments(directory) == []
    assert (directory / INDEX_NAME).exists()
    broker, store = boot(tmp_path)
    assert store.journals[("/", "q")].index_current  # read from the index
    assert contents(broker.vhosts["/"].queues["q"]) == expected
    store.close()


def test_restart_from_the_index_pages_bodies_beyond_the_budget(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True)
    for i in range(10):
        vhost.publish("", Message("", "q", PROPS, bytes([i]) * 1000, persistent=True))
    store.close()
    broker, store = boot(tmp_path, memory_budget_bytes=3000)
    queue = broker.vhosts["/"].queues["q"]
    assert [type(e.message) is PagedMessage for e in queue.ready] == [False] * 3 + [True] * 7
    assert store.resident_bytes == 3000
    assert [e.message.body for e in queue.ready] == [bytes([i]) * 1000 for i in range(10)]
    store.close()


def test_after_a_crash_the_index_and_the_journal_tail_give_the_queue_as_committed(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    fill(broker)
    store.close()
    broker, store = boot(tmp_path)
    queue = broker.vhosts["/"].queues["q"]
    entry = queue.take()
    assert entry is not None
    queue.settle(entry)
    broker.vhosts["/"].publish("", Message("", "q", PROPS, b"after", persistent=True))
    expected = [body for body, *_ in contents(queue)]
    store.commit()  # then the crash: the index on disk describes the queue as it was at boot
    broker, store = boot(tmp_path)
    assert not store.journals[("/", "q")].index_current
    assert [body for body, *_ in contents(broker.vhosts["/"].queues["q"])] == expected
    store.close()


def test_after_a_crash_messages_the_index_describes_are_taken_from_it_not_decoded(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True)
    for i in range(5):
        vhost.publish("", Message("", "q", PROPS, b"body %d" % i, persistent=True))
    store.close()
    broker, store = boot(tmp_path)
    broker.vhosts["/"].publish("", Message("", "q", PROPS, b"tail", persistent=True))
    store.commit()  # then the crash: the index describes the snapshot, the segment the tail
    snapshot = queue_dir(tmp_path) / SNAPSHOT_NAME
    data = snapshot.read_bytes()
    assert data.count(b"\x00\x01q") == 5  # each record's routing key, as a shortstr
    snapshot.write_bytes(data.replace(b"\x00\x01q", b"\x00\x01Q"))  # same size: index matches
    broker, store = boot(tmp_path)
    ready = list(broker.vhosts["/"].queues["q"].ready)
    # the five from the index's entries (no record decoded), the tail decoded from its segment
    assert [e.message.routing_key for e in ready] == ["q"] * 6
    assert [e.message.body for e in ready] == [b"body %d" % i for i in range(5)] + [b"tail"]
    store.close()


def test_damaged_index_is_ignored_and_the_snapshot_is_read_instead(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    expected = contents(fill(broker))
    store.close()
    index = queue_dir(tmp_path) / INDEX_NAME
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0x40
    index.write_bytes(bytes(data))
    broker, store = boot(tmp_path)
    assert not store.journals[("/", "q")].index_current
    assert contents(broker.vhosts["/"].queues["q"]) == expected
    store.close()
