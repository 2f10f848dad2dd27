"""basic.* commands on an open channel: publish/ack fast path, routing, queueing confirms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, cast

from amqplite.broker.message import Message
from amqplite.broker.publishing import make_message
from amqplite.broker.queue import Queue
from amqplite.broker.routing import Routed
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.protocol.methods import (
    BasicAck,
    BasicNack,
    BasicPublish,
    BasicReject,
    build_method,
    encode_method,
    method_ids,
    spec,
)
from amqplite.protocol.writers import GetOk, Part, Return, get_ok_parts, return_parts
from amqplite.session import direct_reply, limits
from amqplite.session.access import USER_ID_BIT, check_topic, check_user_id
from amqplite.session.channel import ChannelSession, ConfirmMode
from amqplite.session.context import SessionContext
from amqplite.session.limits import check_consumers
from amqplite.session.stream_consume import check_consume, check_get

# Module constants: an enum member read off its class costs ~1k instructions on every publish
# (EnumType.__getattr__ keeps that lookup off the interpreter's fast path).
_TX: Final = ConfirmMode.TX
_NONE: Final = ConfirmMode.NONE
_CONFIRM: Final = ConfirmMode.CONFIRM
_BASIC: Final = ClassId.BASIC


def basic_qos(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Qos, command.method)
    if m.prefetch_size:  # as RabbitMQ: a byte limit is not implemented, and said so
        raise ConnectionException(
            ReplyCode.NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", ClassId.BASIC, 10
        )
    if m.global_:
        channel.delivery.global_prefetch = m.prefetch_count
    else:
        channel.delivery.prefetch_count = m.prefetch_count
    ctx.send(channel.channel_id, spec.Basic.QosOk())
    ctx.broker.resume(channel.delivery)


def basic_consume(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Consume, command.method)
    if m.queue == direct_reply.PSEUDO_QUEUE:
        direct_reply.consume(ctx, channel, m.consumer_tag or "", m.no_ack, m.nowait)
        return
    ctx.allow("read", "queue", channel.queue_name(m.queue), ClassId.BASIC, 20)
    check_consumers(ctx.settings, len(channel.delivery.consumers))
    arguments = dict(m.arguments or {})
    queue = ctx.open_vhost.queues.get(channel.queue_name(m.queue))
    check_consume(queue, channel, m.no_ack, arguments)
    consumer = ctx.broker.consume(
        ctx.open_vhost,
        channel.delivery,
        channel.queue_name(m.queue),
        m.consumer_tag or "",
        no_ack=m.no_ack,
        exclusive=m.exclusive,
        arguments=arguments,
        owner=ctx.owner,
    )
    if not m.nowait:
        ctx.send(channel.channel_id, build_method(spec.Basic.ConsumeOk, consumer_tag=consumer.tag))
    consumer.queue.dispatch()


def basic_cancel(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Cancel, command.method)
    ctx.broker.cancel(ctx.open_vhost, channel.delivery, m.consumer_tag or "")
    if not m.nowait:
        ctx.send(channel.channel_id, build_method(spec.Basic.CancelOk, consumer_tag=m.consumer_tag))


def basic_get(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Get, command.method)
    ctx.allow("read", "queue", channel.queue_name(m.queue), ClassId.BASIC, 70)
    queue = ctx.open_vhost.queue(channel.queue_name(m.queue), ctx.owner)
    check_get(queue)
    if queue.remote is not None and queue.led_elsewhere is not None:
        _forward_get(ctx, channel, queue, m.no_ack)
        return
    got = channel.delivery.get(queue, m.no_ack)
    if got is None:
        queue.stats.get_empty += 1
        queue.totals.get_empty += 1
        ctx.send(channel.channel_id, spec.Basic.GetEmpty())
        return
    tag, entry, redelivered = got
    get_ok = GetOk(channel.channel_id, tag, redelivered, queue.message_count)
    ctx.write_get_ok(get_ok, entry.message)


def _forward_get(ctx: SessionContext, channel: ChannelSession, queue: Queue, no_ack: bool) -> None:
    """basic.get of a queue led by another node: answered once the leader answers."""
    assert queue.remote is not None
    answer = queue.remote.ask("get-no-ack" if no_ack else "get")

    def finish() -> list[Part]:
        if answer.failed:
            raise ChannelException(
                ReplyCode.NOT_FOUND,
                f"queue '{queue.name}' in vhost '{queue.vhost}': {answer.failed}",
                ClassId.BASIC,
                70,
            )
        if answer.entry is None:
            queue.stats.get_empty += 1
            queue.totals.get_empty += 1
            return [encode_method(channel.channel_id, spec.Basic.GetEmpty())]
        tag, entry, redelivered = channel.delivery.took(queue, answer.entry, no_ack)
        get_ok = GetOk(channel.channel_id, tag, redelivered, answer.messages)
        return get_ok_parts(get_ok, entry.message, ctx.frame_max)

    ctx.reply_when_answered(channel, None, answer, finish)


def basic_publish(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicPublish, command.method)
    if m.immediate:  # removed in RabbitMQ 3.0, which refuses it so
        raise ConnectionException(ReplyCode.NOT_IMPLEMENTED, "immediate=true", ClassId.BASIC, 40)
    publish(
        ctx,
        channel,
        m.exchange,
        m.routing_key,
        m.mandatory,
        command.properties_bin or b"\x00\x00",
        command.body or b"",
    )


def publish(
    ctx: SessionContext,
    channel: ChannelSession,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    properties_bin: bytes,
    body: bytes,
    allowed: bool = False,
) -> None:
    """basic.publish (fast path or assembled): check access and exchange, then route or buffer.

    `allowed`: the write access to this exchange was checked in this read (the fast path's run).
    """
    vhost = ctx.open_vhost
    ctx.publishing = True
    if not allowed:
        ctx.allow("write", "exchange", exchange, _BASIC, 40)
    if exchange not in vhost.exchanges:
        vhost.exchange(exchange)  # 404 before anything else
    if properties_bin[1] & USER_ID_BIT:
        check_user_id(ctx.user, properties_bin, _BASIC, 40)
    if ctx.broker.topic_permissions:
        check_topic(ctx.broker, ctx.user, vhost.name, exchange, routing_key, "write", _BASIC, 40)
    # `bytes in bytes` first tries the operand as an int (a TypeError raised and cleared):
    # the flag test spares that on every publish without reply_to
    if properties_bin[0] & direct_reply.REPLY_TO_BIT and direct_reply.MARK in properties_bin:
        properties_bin = direct_reply.stamp_reply_to(ctx, channel, properties_bin)
    message = make_message(exchange, routing_key, properties_bin, body)
    mode = channel.mode
    if mode is _NONE and not (exchange == "" and routing_key.startswith(direct_reply.PREFIX)):
        routed = vhost.route_message(exchange, message)  # the usual publish: `route`, inlined
        if mandatory and not (routed.accepted or routed.rejected or routed.held):
            _return(ctx, channel, message)
        return
    if mode is _TX:
        limits.hold_in_tx(ctx.settings, channel, len(body), _BASIC, 40)
        channel.tx_ops.append(("publish", exchange, mandatory, message))
        return
    route(ctx, channel, exchange, mandatory, message)


def route(
    ctx: SessionContext, channel: ChannelSession, exchange: str, mandatory: bool, message: Message
) -> None:
    """Route a message; basic.return when mandatory and unrouted; queue its confirm."""
    confirming = channel.mode is _CONFIRM
    mark = None
    if exchange == "" and message.routing_key.startswith(direct_reply.PREFIX):
        ctx.broker.batch.flush()  # the publishes before it deliver first, as they came
        routed = Routed([], [])
        delivered = direct_reply.route_reply(ctx, message)
    elif confirming:  # the confirm waits for the commit domains its records went to
        commits = ctx.broker.commits
        outer = commits.watch()
        try:
            routed = ctx.open_vhost.route_message(exchange, message)
        finally:
            mark = commits.watched(outer)
        delivered = bool(routed.queues)
    else:
        routed = ctx.open_vhost.route_message(exchange, message)
        delivered = bool(routed.accepted or routed.rejected)
    if not delivered and mandatory and not routed.held:
        _return(ctx, channel, message)
    if confirming:
        # reject-publish: a queue refused it, so the publisher gets basic.nack (as RabbitMQ)
        ok = not routed.rejected
        ctx.broker.totals.confirm += ok
        channel.pending_confirms.append((channel.next_publish_seq(), ok, mark))
        ctx.confirms.track(channel)


def _return(ctx: SessionContext, channel: ChannelSession, message: Message) -> None:
    """basic.return of a mandatory message no queue took (after what came before it)."""
    ctx.broker.batch.flush()  # the publishes before it deliver first, as they came
    ctx.broker.totals.returned += 1
    returned = Return(channel.channel_id, int(ReplyCode.NO_ROUTE), "NO_ROUTE")
    ctx.write_parts(return_parts(returned, message, ctx.frame_max))


def basic_ack(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicAck, command.method)
    ack(ctx, channel, m.delivery_tag, m.multiple)


def ack_each(ctx: SessionContext, channel: ChannelSession, tags: Sequence[int]) -> None:
    """basic.acks of single tags read together (fast path); the caller runs broker.flush_acks."""
    if channel.mode is ConfirmMode.TX:
        for tag in tags:
            ack(ctx, channel, tag, False)
    else:
        ctx.broker.ack_each(channel.delivery, tags)


def ack(
    ctx: SessionContext,
    channel: ChannelSession,
    delivery_tag: int,
    multiple: bool,
    deferred: bool = False,
) -> None:
    """basic.ack (fast path or assembled), buffered while the channel is transactional.

    `deferred`: the caller runs broker.flush_acks after a run of acks, to deliver once.
    """
    if channel.mode is _TX:
        limits.hold_in_tx(ctx.settings, channel, 0, ClassId.BASIC, 80)
        channel.tx_ops.append(("ack", delivery_tag, multiple))
    elif deferred:
        ctx.broker.ack_deferred(channel.delivery, delivery_tag, multiple)
    else:
        ctx.broker.ack(channel.delivery, delivery_tag, multiple)


def basic_nack(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicNack, command.method)
    if channel.mode is ConfirmMode.TX:
        limits.hold_in_tx(ctx.settings, channel, 0, ClassId.BASIC, 120)
        channel.tx_ops.append(("reject", m.delivery_tag, m.multiple, m.requeue))
        return
    ctx.broker.reject(channel.delivery, m.delivery_tag, m.multiple, m.requeue)


def basic_reject(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicReject, command.method)
    if channel.mode is ConfirmMode.TX:
        limits.hold_in_tx(ctx.settings, channel, 0, ClassId.BASIC, 90)
        channel.tx_ops.append(("reject", m.delivery_tag, False, m.requeue))
        return
    ctx.broker.reject(channel.delivery, m.delivery_tag, False, m.requeue)


def basic_recover(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    if not cast(spec.Basic.Recover, command.method).requeue:  # as RabbitMQ
        raise ConnectionException(
            ReplyCode.NOT_IMPLEMENTED,
            "requeue=false",
            *method_ids(command.method),
        )
    ctx.broker.recover(channel.delivery)
    if isinstance(command.method, spec.Basic.Recover):
        ctx.send(channel.channel_id, spec.Basic.RecoverOk())
