"""Direct reply-to on a session: consume the pseudo-queue, stamp reply_to, route replies, declare."""

from __future__ import annotations

from typing import Final

from amqplite.broker.direct_reply import PREFIX as PREFIX
from amqplite.broker.direct_reply import PSEUDO_QUEUE as PSEUDO_QUEUE
from amqplite.broker.message import Message
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.methods import Method, build_method, spec
from amqplite.protocol.properties import decode_properties, encode_properties
from amqplite.session.channel import ChannelSession
from amqplite.session.context import SessionContext

MARK = PSEUDO_QUEUE.encode()  # a cheap test on the raw properties before decoding them
REPLY_TO_BIT: Final = 0x02
"""The reply_to flag in the first byte of a content header's property flags."""


def is_reply_queue(name: str) -> bool:
    """True for the pseudo-queue and for the reply-to names it hands out."""
    return name == PSEUDO_QUEUE or name.startswith(PREFIX)


def consume(
    ctx: SessionContext, channel: ChannelSession, tag: str, no_ack: bool, nowait: bool
) -> None:
    """basic.consume of amq.rabbitmq.reply-to: this channel's reply consumer (no-ack only)."""
    consumer = ctx.broker.consume_replies(channel.delivery, tag, no_ack)
    if not nowait:
        ctx.send(channel.channel_id, build_method(spec.Basic.ConsumeOk, consumer_tag=consumer.tag))


def stamp_reply_to(ctx: SessionContext, channel: ChannelSession, properties_bin: bytes) -> bytes:
    """A request with reply_to=amq.rabbitmq.reply-to gets the channel's reply-to name instead."""
    props = decode_properties(properties_bin)
    if props.reply_to != PSEUDO_QUEUE:
        return properties_bin
    consumer = ctx.broker.direct_replies.of(channel.delivery)
    if consumer is None:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            "fast reply consumer does not exist",
            ClassId.BASIC,
            40,
        )
    props.reply_to = consumer.name
    return encode_properties(props)


def route_reply(ctx: SessionContext, message: Message) -> bool:
    """Deliver a reply published to a reply-to name; False (dropped, counted) if it has gone."""
    return ctx.broker.direct_replies.deliver(message)


def declare_passive(ctx: SessionContext, name: str) -> Method:
    """Passive queue.declare of the pseudo-queue, or of a reply-to name while it still works."""
    if name != PSEUDO_QUEUE and not ctx.broker.direct_replies.exists(name):
        raise ChannelException(
            ReplyCode.NOT_FOUND,
            f"no queue '{name}' in vhost '{ctx.open_vhost.name}'",
            ClassId.QUEUE,
            10,
        )
    reply: Method = build_method(
        spec.Queue.DeclareOk, queue=name, message_count=0, consumer_count=0
    )
    return reply
