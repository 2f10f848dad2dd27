"""Direct reply-to in the broker core: reply consumers, delivery tags, drops, cleanup."""

from __future__ import annotations

import pytest
from test_broker_core import RecordingClient, msg

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.direct_reply import PREFIX
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException


@pytest.fixture
def broker() -> Broker:
    b = Broker()
    b.add_vhost("/")
    return b


def test_a_reply_goes_to_the_channels_reply_consumer_with_the_channels_next_tag(
    broker: Broker,
) -> None:
    client = RecordingClient()
    channel = DeliveryChannel(3, client)
    channel.next_tag = 7  # deliveries from queues came before
    consumer = broker.consume_replies(channel, "", no_ack=True)
    assert consumer.name.startswith(PREFIX)
    assert broker.direct_replies.deliver(msg(b"answer", routing_key=consumer.name))
    assert client.delivered == [(3, consumer.tag, 7, b"answer", False)]
    assert channel.next_tag == 8
    assert (broker.direct_replies.delivered, broker.direct_replies.dropped) == (1, 0)


def test_each_channel_has_its_own_unguessable_name(broker: Broker) -> None:
    client = RecordingClient()
    names = {
        broker.consume_replies(DeliveryChannel(i, client), "", no_ack=True).name
        for i in range(1, 50)
    }
    assert len(names) == 49


def test_a_reply_after_the_channel_closed_is_dropped_and_counted(broker: Broker) -> None:
    client = RecordingClient()
    channel = DeliveryChannel(1, client)
    name = broker.consume_replies(channel, "r", no_ack=True).name
    broker.close_channel(broker.vhosts["/"], channel)
    assert not broker.direct_replies.exists(name)
    assert not broker.direct_replies.deliver(msg(b"late", routing_key=name))
    assert client.delivered == []
    assert broker.direct_replies.dropped == 1


def test_cancelling_the_reply_consumer_forgets_its_name(broker: Broker) -> None:
    channel = DeliveryChannel(1, RecordingClient())
    name = broker.consume_replies(channel, "r", no_ack=True).name
    assert broker.cancel(broker.vhosts["/"], channel, "r")
    assert not broker.direct_replies.exists(name)
    assert broker.direct_replies.of(channel) is None


def test_a_reply_consumer_must_be_no_ack_and_alone_on_its_channel(broker: Broker) -> None:
    channel = DeliveryChannel(1, RecordingClient())
    with pytest.raises(ChannelException) as info:
        broker.consume_replies(channel, "", no_ack=False)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    broker.consume_replies(channel, "r", no_ack=True)
    with pytest.raises(ChannelException) as info:
        broker.consume_replies(channel, "r2", no_ack=True)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED


def test_a_queue_consumer_cannot_reuse_the_reply_consumers_tag(broker: Broker) -> None:
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    channel = DeliveryChannel(1, RecordingClient())
    broker.consume_replies(channel, "same", no_ack=True)
    with pytest.raises(ConnectionException) as info:
        broker.consume(vhost, channel, "q", "same")
    assert info.value.reply_code == ReplyCode.NOT_ALLOWED
