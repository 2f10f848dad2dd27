"""Names that are not UTF-8 are journaled losslessly; a message the journal refuses stays out of memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.store.records import decode_enqueue, encode_enqueue
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"
KEY = b"rk-\xff\xfe-\xc3".decode("utf-8", "surrogateescape")  # as the codec decodes a shortstr
EXCHANGE = b"ex-\x80".decode("utf-8", "surrogateescape")


def boot(directory: Path) -> tuple[Broker, Store]:
    return recovered(directory, fsync=False)


def test_enqueue_record_keeps_names_that_are_not_utf8_byte_for_byte() -> None:
    record = encode_enqueue(7, 0, 0, None, EXCHANGE, KEY, PERSISTENT_PROPS, b"body")
    stored = decode_enqueue(memoryview(record)[9:])
    assert stored.exchange.encode("utf-8", "surrogateescape") == b"ex-\x80"
    assert stored.routing_key.encode("utf-8", "surrogateescape") == b"rk-\xff\xfe-\xc3"


def test_message_with_non_utf8_exchange_and_routing_key_comes_back_after_restart(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_exchange(EXCHANGE, "fanout", durable=True)
    vhost.declare_queue("q", durable=True)
    vhost.bind(EXCHANGE, Destination("queue", "q"), "", {})
    message = Message(EXCHANGE, KEY, PERSISTENT_PROPS, b"body", persistent=True)
    assert [q.name for q in vhost.publish(EXCHANGE, message)] == ["q"]
    store.commit()
    store.close()
    broker, store = boot(tmp_path)
    (entry,) = list(broker.vhosts["/"].queues["q"].ready)
    assert (entry.message.exchange, entry.message.routing_key) == (EXCHANGE, KEY)
    assert entry.message.body == b"body"
    store.close()


class RefusingJournal:
    """A journal whose disk write fails (what a record it cannot encode used to do)."""

    def enqueue(self, entry: QueueEntry) -> None:
        raise OSError("journal refused the record")

    def remove(self, entry: QueueEntry) -> None:
        raise AssertionError("nothing was journaled")

    def delivered(self, entry: QueueEntry) -> None:
        raise AssertionError("nothing was journaled")


def test_message_the_journal_refuses_is_not_left_in_the_queue() -> None:
    queue = Queue("q", "/", durable=True)
    queue.journal = RefusingJournal()
    with pytest.raises(OSError, match="refused"):
        queue.enqueue(Message("", "q", PERSISTENT_PROPS, b"body", persistent=True))
    assert len(queue.ready) == 0
    assert queue.ready_bytes == 0
    assert queue.take() is None
