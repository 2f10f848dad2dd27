"""Broker core without sockets: queues, consumers, QoS, acks, routing through the vhost."""

from __future__ import annotations

import random

import attrs
import pytest

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.publishing import make_message
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.methods import spec
from amqplite.protocol.properties import encode_properties


@attrs.define
class RecordingClient:
    """A client connection as the core sees it: records what it was sent."""

    delivered: list[tuple[int, str, int, bytes, bool]] = attrs.field(factory=list)
    cancelled: list[tuple[int, str]] = attrs.field(factory=list)
    room: bool = True
    moving: bool = True

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        self.delivered.append(
            (channel_id, consumer_tag, delivery_tag, entry.message.body, entry.redelivered)
        )

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        self.cancelled.append((channel_id, consumer_tag))

    def has_capacity(self) -> bool:
        return self.room

    def output_moving(self) -> bool:
        return self.moving

    def bodies(self) -> list[bytes]:
        return [d[3] for d in self.delivered]


def msg(body: bytes, routing_key: str = "", headers: dict | None = None) -> Message:
    return Message("", routing_key, b"\x00\x00", body, headers=headers)


@pytest.fixture
def broker() -> Broker:
    b = Broker()
    b.add_vhost("/")
    return b


@pytest.fixture
def vhost(broker: Broker) -> VHost:
    return broker.vhosts["/"]


def publish_n(vhost: VHost, queue: str, n: int) -> None:
    for i in range(n):
        vhost.publish("", msg(str(i).encode(), queue))


def test_queue_delivers_in_fifo_order(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q")
    publish_n(vhost, "q", 5)
    client = RecordingClient()
    ch = DeliveryChannel(1, client)
    consumer = broker.consume(vhost, ch, "q", "c1")
    consumer.queue.dispatch()
    assert client.bodies() == [b"0", b"1", b"2", b"3", b"4"]
    assert [d[2] for d in client.delivered] == [1, 2, 3, 4, 5]


def test_requeued_message_returns_to_original_position_with_redelivered(
    broker: Broker, vhost: VHost
) -> None:
    queue = vhost.declare_queue("q")
    publish_n(vhost, "q", 3)
    client = RecordingClient()
    ch = DeliveryChannel(1, client)
    first = ch.get(queue, no_ack=False)
    second = ch.get(queue, no_ack=False)
    assert first is not None
    assert second is not None
    broker.reject(ch, second[0], multiple=False, requeue=True)
    broker.reject(ch, first[0], multiple=False, requeue=True)
    order = []
    while (got := ch.get(queue, no_ack=True)) is not None:
        order.append((got[1].message.body, got[2]))
    assert order == [(b"0", True), (b"1", True), (b"2", False)]
    queue._check()


def test_prefetch_limits_unacked_per_consumer(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    publish_n(vhost, "q", 10)
    client = RecordingClient()
    ch = DeliveryChannel(1, client, prefetch_count=3)
    broker.consume(vhost, ch, "q", "c1")
    queue.dispatch()
    assert client.bodies() == [b"0", b"1", b"2"]
    broker.ack(ch, 2, multiple=True)
    assert client.bodies() == [b"0", b"1", b"2", b"3", b"4"]
    assert queue.unacked_count == 3
    assert queue.message_count == 5


def test_global_prefetch_is_shared_by_consumers_of_a_channel(broker: Broker, vhost: VHost) -> None:
    q1 = vhost.declare_queue("q1")
    q2 = vhost.declare_queue("q2")
    publish_n(vhost, "q1", 5)
    publish_n(vhost, "q2", 5)
    client = RecordingClient()
    ch = DeliveryChannel(1, client, global_prefetch=4)
    broker.consume(vhost, ch, "q1", "a")
    broker.consume(vhost, ch, "q2", "b")
    q1.dispatch()
    q2.dispatch()
    assert len(client.delivered) == 4


def test_round_robin_between_consumers(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    c1, c2 = RecordingClient(), RecordingClient()
    broker.consume(vhost, DeliveryChannel(1, c1), "q", "a")
    broker.consume(vhost, DeliveryChannel(1, c2), "q", "b")
    publish_n(vhost, "q", 6)
    assert c1.bodies() == [b"0", b"2", b"4"]
    assert c2.bodies() == [b"1", b"3", b"5"]
    queue._check()


def test_unknown_delivery_tag_is_precondition_failed(broker: Broker, vhost: VHost) -> None:
    ch = DeliveryChannel(1, RecordingClient())
    with pytest.raises(ChannelException) as info:
        broker.ack(ch, 42, multiple=False)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "unknown delivery tag 42" in info.value.reply_text


def test_closing_channel_requeues_unacked_in_order(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    publish_n(vhost, "q", 4)
    client = RecordingClient()
    ch = DeliveryChannel(1, client)
    broker.consume(vhost, ch, "q", "a")
    queue.dispatch()
    assert queue.unacked_count == 4
    broker.close_channel(vhost, ch)
    assert queue.unacked_count == 0
    assert [e.message.body for e in queue.ready] == [b"0", b"1", b"2", b"3"]
    assert all(e.redelivered for e in queue.ready)


def test_paused_connection_gets_no_deliveries_until_resumed(broker: Broker, vhost: VHost) -> None:
    queue = vhost.declare_queue("q")
    client = RecordingClient(room=False)
    ch = DeliveryChannel(1, client)
    broker.consume(vhost, ch, "q", "a")
    publish_n(vhost, "q", 3)
    assert client.delivered == []
    client.room = True
    broker.resume(ch)
    assert client.bodies() == [b"0", b"1", b"2"]
    queue._check()


def test_exclusive_queue_refuses_other_connections(vhost: VHost) -> None:
    owner, other = object(), object()
    vhost.declare_queue("ex", exclusive=True, owner=owner)
    with pytest.raises(ChannelException) as info:
        vhost.declare_queue("ex", passive=True, owner=other)
    assert info.value.reply_code == ReplyCode.RESOURCE_LOCKED


def test_closing_connection_deletes_its_exclusive_queues(broker: Broker, vhost: VHost) -> None:
    owner = object()
    vhost.declare_queue("ex", exclusive=True, owner=owner)
    broker.close_connection(vhost, owner)
    assert "ex" not in vhost.queues


def test_auto_delete_queue_goes_with_its_last_consumer(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("ad", auto_delete=True)
    ch = DeliveryChannel(1, RecordingClient())
    broker.consume(vhost, ch, "ad", "a")
    broker.consume(vhost, ch, "ad", "b")
    broker.cancel(vhost, ch, "a")
    assert "ad" in vhost.queues
    broker.cancel(vhost, ch, "b")
    assert "ad" not in vhost.queues


def test_deleting_a_queue_cancels_its_consumers(broker: Broker, vhost: VHost) -> None:
    client = RecordingClient()
    vhost.declare_queue("q")
    broker.consume(vhost, DeliveryChannel(7, client), "q", "tag")
    publish_n(vhost, "q", 0)
    assert vhost.delete_queue("q") == 0
    assert client.cancelled == [(7, "tag")]


def test_delete_if_empty_and_if_unused(broker: Broker, vhost: VHost) -> None:
    vhost.declare_queue("q")
    publish_n(vhost, "q", 2)
    with pytest.raises(ChannelException) as info:
        vhost.delete_queue("q", if_empty=True)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    broker.consume(vhost, DeliveryChannel(1, RecordingClient(room=False)), "q", "c")
    with pytest.raises(ChannelException):
        vhost.delete_queue("q", if_unused=True)
    assert vhost.delete_queue("q") == 2


def test_a_queue_declared_again_after_delete_takes_the_default_exchanges_messages(
    vhost: VHost,
) -> None:
    old = vhost.declare_queue("q")
    assert vhost.publish("", msg(b"1", "q")) == [old]
    vhost.delete_queue("q")
    new = vhost.declare_queue("q")
    routed = vhost.publish("", msg(b"2", "q"))
    assert routed == [new]
    assert routed is not vhost.publish("", msg(b"3", "q"))  # each caller gets its own list
    assert (old.message_count, new.message_count) == (0, 2)
    assert vhost.publish("", msg(b"4", "gone")) == []


def test_redeclare_with_other_durability_is_inequivalent(vhost: VHost) -> None:
    vhost.declare_queue("q", durable=True)
    with pytest.raises(ChannelException) as info:
        vhost.declare_queue("q", durable=False)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "inequivalent arg 'durable'" in info.value.reply_text


def test_unknown_exchange_type_is_a_precondition_failed_channel_error(vhost: VHost) -> None:
    with pytest.raises(ChannelException) as info:
        vhost.declare_exchange("x", "nope")
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "x" not in vhost.exchanges


def test_exchange_to_exchange_fan_in_delivers_once(vhost: VHost) -> None:
    vhost.declare_exchange("a", "fanout")
    vhost.declare_exchange("b", "fanout")
    queue = vhost.declare_queue("q")
    vhost.bind("a", Destination("exchange", "b"), "")
    vhost.bind("a", Destination("queue", "q"), "")
    vhost.bind("b", Destination("queue", "q"), "")
    vhost.bind("b", Destination("exchange", "a"), "")  # a cycle must not loop
    assert vhost.publish("a", msg(b"x")) == [queue]
    assert queue.message_count == 1


def test_alternate_exchange_takes_unroutable_messages(vhost: VHost) -> None:
    vhost.declare_exchange("ae", "fanout")
    vhost.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    vhost.declare_queue("lost")
    vhost.bind("ae", Destination("queue", "lost"), "")
    assert [q.name for q in vhost.publish("main", msg(b"x", "nowhere"))] == ["lost"]


def test_auto_delete_exchange_goes_with_its_last_binding(vhost: VHost) -> None:
    vhost.declare_exchange("tmp", "direct", auto_delete=True)
    vhost.declare_queue("q")
    vhost.bind("tmp", Destination("queue", "q"), "k")
    vhost.unbind("tmp", Destination("queue", "q"), "k")
    assert "tmp" not in vhost.exchanges


def test_random_operations_keep_queue_invariants(broker: Broker, vhost: VHost) -> None:
    rng = random.Random(1234)
    queue = vhost.declare_queue("q")
    clients = [RecordingClient() for _ in range(3)]
    channels = [
        DeliveryChannel(i + 1, c, prefetch_count=rng.randint(0, 4)) for i, c in enumerate(clients)
    ]
    for i, ch in enumerate(channels):
        broker.consume(vhost, ch, "q", f"c{i}")
    published = 0
    for _ in range(2000):
        op = rng.random()
        ch = rng.choice(channels)
        if op < 0.4:
            vhost.publish("", msg(str(published).encode(), "q"))
            published += 1
        elif op < 0.7 and ch.unacked:
            tag = rng.choice(list(ch.unacked))
            broker.ack(ch, tag, multiple=rng.random() < 0.3)
        elif op < 0.9 and ch.unacked:
            tag = rng.choice(list(ch.unacked))
            broker.reject(ch, tag, multiple=rng.random() < 0.3, requeue=True)
        else:
            ch.sink.room = not ch.sink.room  # type: ignore[attr-defined]
            broker.resume(ch)
        queue._check()
        assert queue.unacked_count == sum(len(c.unacked) for c in channels)


def test_messages_with_the_same_properties_each_get_their_routing_facts() -> None:
    props = encode_properties(spec.Basic.Properties(delivery_mode=2, priority=3, expiration="1500"))
    for key in ("a", "b"):  # the second from what the first read
        m = make_message("x", key, props, key.encode())
        assert (m.routing_key, m.body, m.persistent, m.priority, m.expiration_ms) == (
            key,
            key.encode(),
            True,
            3,
            1500,
        )
    plain = make_message("x", "k", b"\x00\x00", b"")
    assert (plain.persistent, plain.priority, plain.expiration_ms, plain.headers) == (
        False,
        0,
        None,
        None,
    )


def test_a_bad_expiration_is_refused_every_time() -> None:
    props = encode_properties(spec.Basic.Properties(expiration="soon"))
    for _ in range(2):
        with pytest.raises(ChannelException) as info:
            make_message("", "q", props, b"")
        assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED


def test_messages_with_equal_headers_do_not_share_them() -> None:
    props = encode_properties(spec.Basic.Properties(headers={"k": "v"}))
    first, second = (make_message("", "q", props, b"") for _ in range(2))
    assert first.headers == second.headers == {"k": "v"}
    assert first.headers is not second.headers
