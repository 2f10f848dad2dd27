"""Single acks read together: each queue's, consumer's and channel's counts, and the store, as one at a time."""

from __future__ import annotations

from pathlib import Path

from session_helpers import Client, guest_broker

from amqplite.broker.broker import Broker
from amqplite.config.models import StoreConfig
from amqplite.protocol.methods import BasicAck, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.server.restore import recover_into
from amqplite.session.connection import Session
from amqplite.store.store import Store


def acks(*tags: int) -> bytes:
    return b"".join(encode_method(1, BasicAck(tag, False)) for tag in tags)


def consuming(broker: Broker, queues: list[str], prefetch: int) -> Client:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Basic.Qos, prefetch_count=prefetch))
    for name in queues:
        client.send(1, build(spec.Queue.Declare, queue=name, durable=True))
        client.send(1, build(spec.Basic.Consume, queue=name, consumer_tag=name))
    client.received()
    return client


def deliveries(client: Client) -> dict[int, tuple[str, bytes]]:
    return {
        c.method.delivery_tag: (c.method.consumer_tag, c.body)
        for c in client.received()
        if isinstance(c.method, spec.Basic.Deliver)
    }


def test_acks_to_two_consumers_and_a_get_interleaved_count_each_one_once() -> None:
    broker = guest_broker()
    client = consuming(broker, ["a", "b"], prefetch=2)
    client.send(1, build(spec.Queue.Declare, queue="g"))
    client.publish(1, "g", b"got")
    client.send(1, build(spec.Basic.Get, queue="g"))
    for i in range(4):
        client.publish(1, "a", b"a%d" % i)
        client.publish(1, "b", b"b%d" % i)
    first = deliveries(client)  # tag 1 is basic.get's, then a0 b0 a1 b1
    assert sorted(first.values()) == [("a", b"a0"), ("a", b"a1"), ("b", b"b0"), ("b", b"b1")]
    channel = client.session.channels[1].delivery
    assert channel.global_unacked == 4
    client.session.receive_data(acks(2, 4, 1, 3, 5))  # two of a, the get's, two of b
    again = deliveries(client)
    assert sorted(again.values()) == [("a", b"a2"), ("a", b"a3"), ("b", b"b2"), ("b", b"b3")]
    queues = broker.vhosts["/"].queues
    assert [(queues[n].unacked_count, queues[n].stats.ack) for n in "abg"] == [
        (2, 2),
        (2, 2),
        (0, 1),
    ]
    assert [c.unacked for c in channel.consumers.values()] == [2, 2]
    assert channel.global_unacked == 4
    assert broker.totals.ack == 5


def test_acks_of_persistent_messages_read_together_leave_the_store_each(tmp_path: Path) -> None:
    broker = guest_broker()
    store = Store(tmp_path / "data", StoreConfig(fsync=False))
    recover_into(broker, store)
    client = consuming(broker, ["d"], prefetch=10)
    store.commit()
    client.session.on_commit()
    for i in range(5):
        client.publish(1, "d", b"m%d" % i)
    store.commit()
    client.session.on_commit()
    assert [body for _, body in deliveries(client).values()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    client.session.receive_data(acks(1, 2, 4))
    store.commit()
    reopened = Broker()
    recover_into(reopened, Store(store.directory))  # what a crash right now would leave
    left = reopened.vhost("/").queues["d"]
    assert [entry.message.body for entry in left.ready] == [b"m2", b"m4"]


def test_a_publish_refused_by_a_queue_behind_on_delivery_waits_for_it_too() -> None:
    broker = guest_broker()
    consumer = Client(Session(broker))
    consumer.handshake()
    consumer.open_channel(1)
    limit = {"x-max-length": 1, "x-overflow": "reject-publish"}
    consumer.send(1, build(spec.Queue.Declare, queue="q", arguments=limit))
    consumer.send(1, build(spec.Basic.Qos, prefetch_count=1))
    consumer.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c"))
    publisher = Client(Session(broker))
    publisher.handshake()
    publisher.open_channel(1)
    publisher.publish(1, "q", b"m1")
    publisher.publish(1, "q", b"m2")
    consumer.session.receive_data(acks(1))  # its credit returns: m2 goes, m3 waits for it
    publisher.publish(1, "q", b"m3")
    queue = broker.vhosts["/"].queues["q"]
    assert queue.behind
    broker.flow.take_touched()
    publisher.publish(1, "q", b"m4")  # refused: the queue is full
    assert queue.message_count == 1
    assert broker.flow.take_touched() == [queue]
