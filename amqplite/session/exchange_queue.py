"""exchange.* and queue.* commands on an open channel."""

from __future__ import annotations

from typing import cast

from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.methods import build_method, encode_method, spec
from amqplite.protocol.writers import Part
from amqplite.session import direct_reply
from amqplite.session.access import check_topic
from amqplite.session.channel import ChannelSession
from amqplite.session.context import SessionContext
from amqplite.session.limits import check_new_binding, check_new_exchange, check_new_queue


def exchange_declare(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Declare, command.method)
    if not m.passive:
        ctx.allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 10)
        alternate = (m.arguments or {}).get("alternate-exchange")
        if isinstance(alternate, str):
            ctx.allow("write", "exchange", alternate, ClassId.EXCHANGE, 10)
            ctx.allow("read", "exchange", m.exchange, ClassId.EXCHANGE, 10)
        check_new_exchange(ctx.settings, ctx.open_vhost, m.exchange)
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
    destination = Destination("exchange", m.destination)
    arguments = dict(m.arguments or {})
    check_topic(ctx.broker, ctx.user, ctx.open_vhost.name, m.source, m.routing_key, "read", 40, 30)
    check_new_binding(ctx.settings, ctx.open_vhost, m.source, destination, m.routing_key, arguments)
    mark = ctx.write_mark()
    ctx.open_vhost.bind(m.source, destination, m.routing_key, arguments)
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
        check_new_queue(ctx.settings, ctx.open_vhost, name, ctx.broker)
    existed = bool(name) and name in ctx.open_vhost.queues
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
    if existed and not m.nowait and queue.remote is not None and queue.led_elsewhere is not None:
        _declare_ok_from_leader(ctx, channel, mark, queue)
        return
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
    destination = Destination("queue", queue)
    arguments = dict(m.arguments or {})
    check_topic(ctx.broker, ctx.user, ctx.open_vhost.name, m.exchange, routing_key, "read", 50, 20)
    check_new_binding(ctx.settings, ctx.open_vhost, m.exchange, destination, routing_key, arguments)
    mark = ctx.write_mark()
    ctx.open_vhost.bind(m.exchange, destination, routing_key, arguments, owner=ctx.owner)
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
    queue = ctx.open_vhost.queue(channel.queue_name(m.queue), ctx.owner)
    count = queue.purge()  # a proxied queue: copies held for consumers here, acked on the leader
    if queue.remote is not None and queue.led_elsewhere is not None:
        _purge_on_leader(ctx, channel, mark, queue, count, m.nowait)
        return
    reply = None if m.nowait else build_method(spec.Queue.PurgeOk, message_count=count)
    ctx.reply_when_durable(channel, mark, reply)  # after the removals are on disk


def _declare_ok_from_leader(
    ctx: SessionContext, channel: ChannelSession, mark: object, queue: Queue
) -> None:
    """declare-ok of a queue another node leads: its counts there (here if it cannot answer)."""
    assert queue.remote is not None
    answer = queue.remote.ask("count")

    def finish() -> list[Part]:
        messages, consumers = answer.messages, answer.consumers
        if answer.failed:
            messages, consumers = queue.message_count, len(queue.consumers)
        reply = build_method(
            spec.Queue.DeclareOk, queue=queue.name, message_count=messages, consumer_count=consumers
        )
        return [encode_method(channel.channel_id, reply)]

    ctx.reply_when_answered(channel, mark, answer, finish)


def _purge_on_leader(
    ctx: SessionContext,
    channel: ChannelSession,
    mark: object,
    queue: Queue,
    here: int,
    nowait: bool,
) -> None:
    """queue.purge of a queue another node leads: purged there, purge-ok once it answers."""
    assert queue.remote is not None
    answer = queue.remote.ask("purge")
    if nowait:
        ctx.reply_when_durable(channel, mark, None)
        return

    def finish() -> list[Part]:
        if answer.failed:
            raise ChannelException(
                ReplyCode.NOT_FOUND,
                f"queue '{queue.name}' in vhost '{queue.vhost}': {answer.failed}",
                ClassId.QUEUE,
                30,
            )
        reply = build_method(spec.Queue.PurgeOk, message_count=here + answer.messages)
        return [encode_method(channel.channel_id, reply)]

    ctx.reply_when_answered(channel, mark, answer, finish)


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
