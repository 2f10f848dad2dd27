"""basic.* commands on an open channel: publish/ack fast path, routing, publisher confirms."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from amqplite.broker.durability import is_durable
from amqplite.broker.message import Message
from amqplite.broker.publishing import make_message
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.frames import encode_ack, encode_get_ok, encode_nack, encode_return
from amqplite.protocol.methods import BasicAck, BasicNack, BasicPublish, BasicReject, spec
from amqplite.session.channel import ChannelSession, ConfirmMode
from amqplite.session.replies import _m

if TYPE_CHECKING:
    from amqplite.session.connection import Session


def basic_qos(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Qos, command.method)
    if m.global_:
        channel.delivery.global_prefetch = m.prefetch_count
    else:
        channel.delivery.prefetch_count = m.prefetch_count
    session._send(channel.channel_id, spec.Basic.QosOk())
    session.broker.resume(channel.delivery)


def basic_consume(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Consume, command.method)
    session._allow("read", "queue", session._queue_name(channel, m.queue), ClassId.BASIC, 20)
    consumer = session.broker.consume(
        session._vh,
        channel.delivery,
        session._queue_name(channel, m.queue),
        m.consumer_tag or "",
        no_ack=m.no_ack,
        exclusive=m.exclusive,
        arguments=dict(m.arguments or {}),
        owner=session,
    )
    if not m.nowait:
        session._send(channel.channel_id, _m(spec.Basic.ConsumeOk, consumer_tag=consumer.tag))
    consumer.queue.dispatch()


def basic_cancel(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Cancel, command.method)
    session.broker.cancel(session._vh, channel.delivery, m.consumer_tag or "")
    if not m.nowait:
        session._send(channel.channel_id, _m(spec.Basic.CancelOk, consumer_tag=m.consumer_tag))


def basic_get(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Basic.Get, command.method)
    session._allow("read", "queue", session._queue_name(channel, m.queue), ClassId.BASIC, 70)
    queue = session._vh.queue(session._queue_name(channel, m.queue), session)
    got = channel.delivery.get(queue, m.no_ack)
    if got is None:
        session._send(channel.channel_id, spec.Basic.GetEmpty())
        return
    tag, entry, redelivered = got
    msg = entry.message
    session._write(
        encode_get_ok(
            channel.channel_id,
            tag,
            redelivered,
            msg.exchange,
            msg.routing_key,
            queue.message_count,
            msg.properties_bin,
            msg.body,
            session.frame_max,
        )
    )


def basic_publish(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicPublish, command.method)
    publish(
        session,
        channel,
        m.exchange,
        m.routing_key,
        m.mandatory,
        command.properties_bin or b"\x00\x00",
        command.body or b"",
    )


def publish(
    session: Session,
    channel: ChannelSession,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    properties_bin: bytes,
    body: bytes,
) -> None:
    """basic.publish (fast path or assembled): check access and exchange, then route or buffer."""
    vhost = session._vh
    session._allow("write", "exchange", exchange, ClassId.BASIC, 40)
    vhost.exchange(exchange)  # 404 before anything else
    message = make_message(exchange, routing_key, properties_bin, body)
    if channel.mode is ConfirmMode.TX:
        channel.tx_ops.append(("publish", exchange, mandatory, message))
        return
    route(session, channel, exchange, mandatory, message)


def route(
    session: Session, channel: ChannelSession, exchange: str, mandatory: bool, message: Message
) -> None:
    """Route a message; basic.return when mandatory and unrouted; queue its confirm."""
    confirming = channel.mode is ConfirmMode.CONFIRM
    mark = None
    if confirming:  # the confirm waits for the commit domains its records went to
        commits = session.broker.commits
        outer = commits.watch()
        try:
            routed = session.broker.route(session._vh, exchange, message)
        finally:
            mark = commits.watched(outer)
    else:
        routed = session.broker.route(session._vh, exchange, message)
    queues = routed.queues
    if not queues and mandatory:
        session._write(
            encode_return(
                channel.channel_id,
                int(ReplyCode.NO_ROUTE),
                "NO_ROUTE",
                exchange,
                message.routing_key,
                message.properties_bin,
                message.body,
                session.frame_max,
            )
        )
    if confirming:
        # reject-publish: a queue refused it, so the publisher gets basic.nack (as RabbitMQ)
        ok = not routed.rejected
        channel.pending_confirms.append((channel.next_publish_seq(), ok, mark))
        session._confirming[channel.channel_id] = channel


def flush_confirms(session: Session) -> None:
    """Send the confirms whose records are on disk, in order; runs of acks as one ack(multiple)."""
    if not session._confirming:
        return
    done: list[int] = []
    for channel_id, channel in session._confirming.items():
        pending = channel.pending_confirms
        ready = 0
        while ready < len(pending) and is_durable(pending[ready][2]):  # in order per channel
            ready += 1
        i = 0
        while i < ready:
            seq, ok, _ = pending[i]
            if not ok:
                session._write(encode_nack(channel_id, seq, False, False))
                i += 1
                continue
            j = i
            while j + 1 < ready and pending[j + 1][1]:
                j += 1
            session._write(encode_ack(channel_id, pending[j][0], j > i))
            i = j + 1
        del pending[:ready]
        if not pending:
            done.append(channel_id)
    for channel_id in done:
        del session._confirming[channel_id]


def basic_ack(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicAck, command.method)
    ack(session, channel, m.delivery_tag, m.multiple)


def ack(session: Session, channel: ChannelSession, delivery_tag: int, multiple: bool) -> None:
    """basic.ack (fast path or assembled), buffered while the channel is transactional."""
    if channel.mode is ConfirmMode.TX:
        channel.tx_ops.append(("ack", delivery_tag, multiple))
        return
    session.broker.ack(channel.delivery, delivery_tag, multiple)


def basic_nack(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicNack, command.method)
    if channel.mode is ConfirmMode.TX:
        channel.tx_ops.append(("reject", m.delivery_tag, m.multiple, m.requeue))
        return
    session.broker.reject(channel.delivery, m.delivery_tag, m.multiple, m.requeue)


def basic_reject(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(BasicReject, command.method)
    if channel.mode is ConfirmMode.TX:
        channel.tx_ops.append(("reject", m.delivery_tag, False, m.requeue))
        return
    session.broker.reject(channel.delivery, m.delivery_tag, False, m.requeue)


def basic_recover(session: Session, channel: ChannelSession, command: Command) -> None:
    session.broker.recover(channel.delivery)
    if isinstance(command.method, spec.Basic.Recover):
        session._send(channel.channel_id, spec.Basic.RecoverOk())
