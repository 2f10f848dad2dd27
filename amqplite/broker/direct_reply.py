"""Direct reply-to (RabbitMQ's amq.rabbitmq.reply-to): replies go to a channel's consumer, no queue."""

from __future__ import annotations

import secrets

import attrs

from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, QueueEntry
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

PSEUDO_QUEUE = "amq.rabbitmq.reply-to"
PREFIX = PSEUDO_QUEUE + "."


@attrs.define(eq=False)
class ReplyConsumer:
    """A channel's no-ack consumer of the pseudo-queue and the reply-to name its requests carry."""

    name: str  # PREFIX + a random token: unguessable, so only the requester's peers reply
    tag: str
    channel: DeliveryChannel


class DirectReplies:
    """The reply consumers of a broker, by channel and by reply-to name; delivered/dropped counts."""

    def __init__(self) -> None:
        self._by_name: dict[str, ReplyConsumer] = {}
        self._by_channel: dict[DeliveryChannel, ReplyConsumer] = {}
        self.delivered = 0
        self.dropped = 0  # replies to a consumer that had gone (as RabbitMQ, not an error)

    def consume(self, channel: DeliveryChannel, tag: str, no_ack: bool) -> ReplyConsumer:
        """basic.consume on the pseudo-queue: no-ack only, one per channel (else 406)."""
        if not no_ack:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
                ClassId.BASIC,
                20,
            )
        if channel in self._by_channel:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED, "reply consumer already set", ClassId.BASIC, 20
            )
        consumer = ReplyConsumer(PREFIX + secrets.token_urlsafe(18), tag, channel)
        self._by_name[consumer.name] = consumer
        self._by_channel[channel] = consumer
        return consumer

    def of(self, channel: DeliveryChannel) -> ReplyConsumer | None:
        """The channel's reply consumer, if it has one."""
        return self._by_channel.get(channel)

    def exists(self, name: str) -> bool:
        """True while a reply-to name still reaches its consumer."""
        return name in self._by_name

    def cancel(self, channel: DeliveryChannel, tag: str) -> bool:
        """basic.cancel of the channel's reply consumer; False if `tag` is not it."""
        consumer = self._by_channel.get(channel)
        if consumer is None or consumer.tag != tag:
            return False
        self.forget(channel)
        return True

    def forget(self, channel: DeliveryChannel) -> None:
        """The channel closed: replies to its name are dropped from now on."""
        consumer = self._by_channel.pop(channel, None)
        if consumer is not None:
            self._by_name.pop(consumer.name, None)

    def deliver(self, message: Message) -> bool:
        """Send a reply (routing key = a reply-to name) to its consumer; False if it has gone."""
        consumer = self._by_name.get(message.routing_key)
        if consumer is None:
            self.dropped += 1
            return False
        channel = consumer.channel
        tag = channel.next_tag
        channel.next_tag += 1
        channel.sink.deliver(channel.channel_id, consumer.tag, tag, QueueEntry(0, message))
        self.delivered += 1
        return True
