"""Publishes read in a row dispatch each queue once, yet every client sees per-publish order."""

from __future__ import annotations

from typing import Any

import pytest
from session_helpers import Client, guest_broker

from amqplite.broker.broker import Broker
from amqplite.broker.publishing import make_message
from amqplite.broker.queue import Queue
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.methods import BasicAck, BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.properties import decode_properties, encode_properties
from amqplite.protocol.writers import encode_content
from amqplite.session.connection import Session


@pytest.fixture
def broker() -> Broker:
    return guest_broker()


def publish(
    channel: int,
    routing_key: str,
    body: bytes,
    *,
    mandatory: bool = False,
    exchange: str = "",
    properties: Any = None,
) -> bytes:
    """One basic.publish with its content, as a client writes it."""
    props = b"\x00\x00" if properties is None else encode_properties(properties)
    return encode_method(channel, BasicPublish(exchange, routing_key, mandatory, False)) + (
        encode_content(channel, 60, props, body, 131072)
    )


def method(channel: int, m: Any) -> bytes:
    return encode_method(channel, m)


def connect(broker: Broker, *channels: int) -> Client:
    client = Client(Session(broker))
    client.handshake()
    for channel in channels:
        client.open_channel(channel)
    return client


def consume(
    client: Client, channel: int, queue: str, prefetch: int = 0, arguments: Any = None
) -> None:
    """Declare the queue and consume from it with manual acks (prefetch 0: unlimited)."""
    client.send(channel, build(spec.Queue.Declare, queue=queue, arguments=arguments or {}))
    client.send(channel, build(spec.Basic.Qos, prefetch_count=prefetch))
    client.send(channel, build(spec.Basic.Consume, queue=queue, consumer_tag=f"c{channel}"))
    assert [type(c.method) for c in client.received()] == [
        spec.Queue.DeclareOk,
        spec.Basic.QosOk,
        spec.Basic.ConsumeOk,
    ]


def bodies(commands: list[Command]) -> list[bytes]:
    return [c.body or b"" for c in commands if isinstance(c.method, spec.Basic.Deliver)]


def kinds(commands: list[Command]) -> list[tuple[type, int]]:
    return [(type(c.method), c.channel) for c in commands]


def queue_of(broker: Broker, name: str = "q") -> Queue:
    return broker.vhosts["/"].queues[name]


def test_a_read_of_publishes_dispatches_their_queue_once_and_delivers_them_in_order(
    broker: Broker,
) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q")
    publisher = connect(broker, 1)
    queue = queue_of(broker)
    passes = queue.dispatch_passes
    publisher.session.receive_data(b"".join(publish(1, "q", b"%d" % i) for i in range(20)))
    assert queue.dispatch_passes == passes + 1
    delivered = consumer.received()
    assert bodies(delivered) == [b"%d" % i for i in range(20)]
    assert [c.method.delivery_tag for c in delivered] == list(range(1, 21))
    assert queue.message_count == 0
    assert queue.unacked_count == 20
    queue._check()


def test_publishes_to_two_queues_in_one_read_dispatch_each_once(broker: Broker) -> None:
    consumer = connect(broker, 1, 2)
    consume(consumer, 1, "a")
    consume(consumer, 2, "b")
    publisher = connect(broker, 1)
    a, b = queue_of(broker, "a"), queue_of(broker, "b")
    before = (a.dispatch_passes, b.dispatch_passes)
    publisher.session.receive_data(b"".join(publish(1, "ab"[i % 2], b"%d" % i) for i in range(10)))
    assert (a.dispatch_passes, b.dispatch_passes) == (before[0] + 1, before[1] + 1)
    delivered = consumer.received()
    assert [c.body for c in delivered if c.channel == 1] == [b"0", b"2", b"4", b"6", b"8"]
    assert [c.body for c in delivered if c.channel == 2] == [b"1", b"3", b"5", b"7", b"9"]


def test_a_get_after_publishes_in_one_read_finds_what_their_dispatch_left(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q", prefetch=1)  # takes the first message, not the second
    publisher = connect(broker, 1)
    publisher.session.receive_data(
        publish(1, "q", b"m1")
        + publish(1, "q", b"m2")
        + method(1, build(spec.Basic.Get, queue="q"))
    )
    replies = publisher.received()
    assert kinds(replies) == [(spec.Basic.GetOk, 1)]
    assert replies[0].body == b"m2"
    assert replies[0].method.message_count == 0
    assert bodies(consumer.received()) == [b"m1"]


def test_a_cancel_after_a_publish_in_one_read_comes_after_its_delivery(broker: Broker) -> None:
    client = connect(broker, 1, 2)
    consume(client, 2, "q")
    client.session.receive_data(
        publish(1, "q", b"m1") + method(2, build(spec.Basic.Cancel, consumer_tag="c2"))
    )
    replies = client.received()
    assert kinds(replies) == [(spec.Basic.Deliver, 2), (spec.Basic.CancelOk, 2)]
    assert replies[0].body == b"m1"
    queue = queue_of(broker)
    assert (queue.message_count, queue.unacked_count) == (0, 1)


@pytest.mark.parametrize(
    ("command", "reply"),
    [(spec.Queue.Delete, spec.Queue.DeleteOk), (spec.Queue.Purge, spec.Queue.PurgeOk)],
)
def test_a_delete_or_purge_after_a_publish_in_one_read_finds_it_delivered(
    broker: Broker, command: Any, reply: Any
) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q")
    publisher = connect(broker, 1)
    publisher.session.receive_data(publish(1, "q", b"m1") + method(1, build(command, queue="q")))
    replies = publisher.received()
    assert kinds(replies) == [(reply, 1)]
    assert replies[0].method.message_count == 0
    assert bodies(consumer.received()) == [b"m1"]
    assert ("q" in broker.vhosts["/"].queues) is (command is spec.Queue.Purge)


def test_an_ack_after_a_publish_in_one_read_settles_what_it_delivered(broker: Broker) -> None:
    client = connect(broker, 1, 2)
    consume(client, 2, "q")
    client.session.receive_data(publish(1, "q", b"m1") + method(2, BasicAck(1, False)))
    assert kinds(client.received()) == [(spec.Basic.Deliver, 2)]  # no channel.close: tag known
    queue = queue_of(broker)
    assert (queue.message_count, queue.unacked_count) == (0, 0)


def test_a_channel_error_after_publishes_in_one_read_comes_after_their_deliveries(
    broker: Broker,
) -> None:
    client = connect(broker, 1, 2)
    consume(client, 2, "q")
    client.session.receive_data(publish(1, "q", b"m1") + publish(1, "", b"m2", exchange="nope"))
    replies = client.received()
    assert kinds(replies) == [(spec.Basic.Deliver, 2), (spec.Channel.Close, 1)]
    assert replies[1].method.reply_code == ReplyCode.NOT_FOUND


def test_a_return_after_publishes_in_one_read_comes_after_their_deliveries(
    broker: Broker,
) -> None:
    client = connect(broker, 1, 2)
    consume(client, 2, "q")
    client.session.receive_data(
        publish(1, "q", b"m1", mandatory=True) + publish(1, "nowhere", b"m2", mandatory=True)
    )
    replies = client.received()
    assert kinds(replies) == [(spec.Basic.Deliver, 2), (spec.Basic.Return, 1)]
    assert [r.body for r in replies] == [b"m1", b"m2"]


def test_a_direct_reply_after_publishes_in_one_read_comes_after_their_deliveries(
    broker: Broker,
) -> None:
    requester = connect(broker, 1, 2)
    consume(requester, 2, "q")
    requester.send(
        1, build(spec.Basic.Consume, queue="amq.rabbitmq.reply-to", consumer_tag="r", no_ack=True)
    )
    requester.send(1, build(spec.Queue.Declare, queue="requests"))
    requester.session.receive_data(
        publish(
            1,
            "requests",
            b"ask",
            properties=spec.Basic.Properties(reply_to="amq.rabbitmq.reply-to"),
        )
    )
    requester.received()
    server = connect(broker, 1)
    server.send(1, build(spec.Basic.Get, queue="requests", no_ack=True))
    request = server.received()[0]
    reply_to = decode_properties(request.properties_bin or b"").reply_to
    assert reply_to is not None
    assert reply_to.startswith("amq.rabbitmq.reply-to.")
    server.session.receive_data(publish(1, "q", b"m1") + publish(1, reply_to, b"answer"))
    replies = requester.received()
    assert kinds(replies) == [(spec.Basic.Deliver, 2), (spec.Basic.Deliver, 1)]
    assert [r.body for r in replies] == [b"m1", b"answer"]


def test_messages_with_ttl_0_read_together_are_each_offered_at_once(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q")
    publisher = connect(broker, 1)
    ttl_0 = spec.Basic.Properties(expiration="0")
    publisher.session.receive_data(
        b"".join(publish(1, "q", b"%d" % i, properties=ttl_0) for i in range(3))
    )
    assert bodies(consumer.received()) == [b"0", b"1", b"2"]
    assert queue_of(broker).stats.expired == 0


def test_a_queue_with_message_ttl_0_delivers_a_read_of_publishes_it_can(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q", prefetch=2, arguments={"x-message-ttl": 0})
    publisher = connect(broker, 1)
    publisher.session.receive_data(b"".join(publish(1, "q", b"%d" % i) for i in range(3)))
    assert bodies(consumer.received()) == [b"0", b"1"]  # the third found no credit: expired
    queue = queue_of(broker)
    assert (queue.stats.expired, queue.message_count) == (1, 0)


def test_a_length_limited_queue_drops_nothing_its_consumer_takes_at_once(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q", arguments={"x-max-length": 1})
    publisher = connect(broker, 1)
    publisher.session.receive_data(b"".join(publish(1, "q", b"%d" % i) for i in range(3)))
    assert bodies(consumer.received()) == [b"0", b"1", b"2"]
    assert queue_of(broker).stats.dropped == 0


def test_a_priority_queue_delivers_a_read_of_publishes_as_they_came(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q", arguments={"x-max-priority": 5})
    publisher = connect(broker, 1)
    publisher.session.receive_data(
        publish(1, "q", b"low", properties=spec.Basic.Properties(priority=0))
        + publish(1, "q", b"high", properties=spec.Basic.Properties(priority=5))
    )
    assert bodies(consumer.received()) == [b"low", b"high"]


def test_pacing_notes_a_queue_behind_after_the_dispatch_of_a_read(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q", prefetch=1)
    publisher = connect(broker, 1)
    publisher.session.receive_data(publish(1, "q", b"m0"))
    consumer.received()
    consumer.session.receive_data(method(1, BasicAck(1, False)))  # its credit returns
    broker.flow.take_touched()
    publisher.session.receive_data(b"".join(publish(1, "q", b"%d" % i) for i in range(3)))
    queue = queue_of(broker)
    assert queue.behind  # one delivered, two wait for the credit the consumer's acks return
    assert broker.flow.take_touched() == [queue]
    assert bodies(consumer.received()) == [b"0"]


def test_a_publish_after_a_read_is_dispatched_at_once(broker: Broker) -> None:
    consumer = connect(broker, 1)
    consume(consumer, 1, "q")
    publisher = connect(broker, 1)
    publisher.session.receive_data(publish(1, "q", b"m1") + publish(1, "", b"x", exchange="nope"))
    assert bodies(consumer.received()) == [b"m1"]
    # e.g. the management API's publish, between reads: no read will come to dispatch it
    broker.publish(broker.vhosts["/"], "", make_message("", "q", b"\x00\x00", b"m2"))
    assert bodies(consumer.received()) == [b"m2"]
    assert not broker.batch.pending
