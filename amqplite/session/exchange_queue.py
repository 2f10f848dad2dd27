"""exchange.* and queue.* commands on an open channel."""

from __future__ import annotations

from typing import cast

from amqplite.broker.plugin_api import Destination
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId
from amqplite.protocol.methods import build_method, spec
from amqplite.session import direct_reply
from amqplite.session.channel import ChannelSession
from amqplite.session.context import SessionContext


def exchange_declare(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Declare, command.method)
    if not m.passive:
        ctx.allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 10)
        alternate = (m.arguments or {}).get("alternate-exchange")
        if isinstance(alternate, str):
            ctx.allow("write", "exchange", alternate, ClassId.EXCHANGE, 10)
            ctx.allow("read", "exchange", m.exchange, ClassId.EXCHANGE, 10)
    mark = ctx.write_mark()
    ctx.open_vhost.declare_exchange(
        m.exchange,
        m.exchange_type,
        passive=m.passive,
        durable=m.durable,
        auto_delete=m.auto_delete,
        internal=m.internal,
        arguments=dict(m.arguments or {}),
    )
    ctx.reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeclareOk())


def exchange_delete(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Delete, command.method)
    ctx.allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 20)
    mark = ctx.write_mark()
    ctx.open_vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
    ctx.reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeleteOk())


def exchange_bind(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Bind, command.method)
    ctx.allow("write", "exchange", m.destination, ClassId.EXCHANGE, 30)
    ctx.allow("read", "exchange", m.source, ClassId.EXCHANGE, 30)
    mark = ctx.write_mark()
    ctx.open_vhost.bind(
        m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
    )
    ctx.reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.BindOk())


def exchange_unbind(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Unbind, command.method)
    ctx.allow("write", "exchange", m.destination, ClassId.EXCHANGE, 40)
    ctx.allow("read", "exchange", m.source, ClassId.EXCHANGE, 40)
    mark = ctx.write_mark()
    ctx.open_vhost.unbind(
        m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
    )
    ctx.reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.UnbindOk())


def queue_declare(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Declare, command.method)
    name = m.queue if m.queue or not m.passive else channel.queue_name(m.queue)
    if m.passive and direct_reply.is_reply_queue(name):
        ctx.send(channel.channel_id, direct_reply.declare_passive(ctx, name))
        return
    if not m.passive:
        ctx.allow("configure", "queue", name or "amq.gen", ClassId.QUEUE, 10)
        dlx = (m.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str):
            ctx.allow("write", "exchange", dlx, ClassId.QUEUE, 10)
            ctx.allow("read", "queue", name or "amq.gen", ClassId.QUEUE, 10)
    mark = ctx.write_mark()
    queue = ctx.open_vhost.declare_queue(
        name,
        passive=m.passive,
        durable=m.durable,
        exclusive=m.exclusive,
        auto_delete=m.auto_delete,
        arguments=dict(m.arguments or {}),
        owner=ctx.owner,
    )
    channel.last_queue = queue.name
    reply = None
    if not m.nowait:
        reply = build_method(
            spec.Queue.DeclareOk,
            queue=queue.name,
            message_count=queue.message_count,
            consumer_count=len(queue.consumers),
        )
    ctx.reply_when_durable(channel, mark, reply)


def queue_bind(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Bind, command.method)
    queue = channel.queue_name(m.queue)
    routing_key = m.routing_key if (m.queue or m.routing_key) else queue
    ctx.allow("write", "queue", queue, ClassId.QUEUE, 20)
    ctx.allow("read", "exchange", m.exchange, ClassId.QUEUE, 20)
    mark = ctx.write_mark()
    ctx.open_vhost.bind(
        m.exchange,
        Destination("queue", queue),
        routing_key,
        dict(m.arguments or {}),
        owner=ctx.owner,
    )
    ctx.reply_when_durable(channel, mark, None if m.nowait else spec.Queue.BindOk())


def queue_unbind(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Unbind, command.method)
    queue = channel.queue_name(m.queue)
    ctx.allow("write", "queue", queue, ClassId.QUEUE, 50)
    ctx.allow("read", "exchange", m.exchange, ClassId.QUEUE, 50)
    mark = ctx.write_mark()
    ctx.open_vhost.unbind(
        m.exchange,
        Destination("queue", queue),
        m.routing_key,
        dict(m.arguments or {}),
        owner=ctx.owner,
    )
    ctx.reply_when_durable(channel, mark, spec.Queue.UnbindOk())


def queue_purge(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Purge, command.method)
    ctx.allow("read", "queue", channel.queue_name(m.queue), ClassId.QUEUE, 30)
    mark = ctx.write_mark()
    count = ctx.open_vhost.queue(channel.queue_name(m.queue), ctx.owner).purge()
    reply = None if m.nowait else build_method(spec.Queue.PurgeOk, message_count=count)
    ctx.reply_when_durable(channel, mark, reply)  # after the removals are on disk


def queue_delete(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Delete, command.method)
    ctx.allow("configure", "queue", channel.queue_name(m.queue), ClassId.QUEUE, 40)
    mark = ctx.write_mark()
    # This channel's own consumers hear basic.cancel after delete-ok, as from RabbitMQ (kombu
    # fails on the reverse order); other channels hear it at once.
    channel.held_cancels = []
    try:
        count = ctx.open_vhost.delete_queue(
            channel.queue_name(m.queue),
            if_unused=m.if_unused,
            if_empty=m.if_empty,
            owner=ctx.owner,
        )
    finally:
        cancels, channel.held_cancels = channel.held_cancels, None
    reply = None if m.nowait else build_method(spec.Queue.DeleteOk, message_count=count)
    ctx.reply_when_durable(channel, mark, reply, b"".join(cancels))
