"""exchange.* and queue.* commands on an open channel."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from amqplite.broker.plugin_api import Destination
from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId
from amqplite.protocol.methods import spec
from amqplite.session.channel import ChannelSession
from amqplite.session.replies import _m

if TYPE_CHECKING:
    from amqplite.session.connection import Session


def exchange_declare(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Declare, command.method)
    if not m.passive:
        session._allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 10)
        alternate = (m.arguments or {}).get("alternate-exchange")
        if isinstance(alternate, str):
            session._allow("write", "exchange", alternate, ClassId.EXCHANGE, 10)
            session._allow("read", "exchange", m.exchange, ClassId.EXCHANGE, 10)
    mark = session._write_mark()
    session._vh.declare_exchange(
        m.exchange,
        m.exchange_type,
        passive=m.passive,
        durable=m.durable,
        auto_delete=m.auto_delete,
        internal=m.internal,
        arguments=dict(m.arguments or {}),
    )
    session._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeclareOk())


def exchange_delete(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Delete, command.method)
    session._allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 20)
    mark = session._write_mark()
    session._vh.delete_exchange(m.exchange, if_unused=m.if_unused)
    session._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeleteOk())


def exchange_bind(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Bind, command.method)
    session._allow("write", "exchange", m.destination, ClassId.EXCHANGE, 30)
    session._allow("read", "exchange", m.source, ClassId.EXCHANGE, 30)
    mark = session._write_mark()
    session._vh.bind(
        m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
    )
    session._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.BindOk())


def exchange_unbind(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Exchange.Unbind, command.method)
    session._allow("write", "exchange", m.destination, ClassId.EXCHANGE, 40)
    session._allow("read", "exchange", m.source, ClassId.EXCHANGE, 40)
    mark = session._write_mark()
    session._vh.unbind(
        m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
    )
    session._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.UnbindOk())


def queue_declare(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Declare, command.method)
    name = m.queue if m.queue or not m.passive else session._queue_name(channel, m.queue)
    if not m.passive:
        session._allow("configure", "queue", name or "amq.gen", ClassId.QUEUE, 10)
        dlx = (m.arguments or {}).get("x-dead-letter-exchange")
        if isinstance(dlx, str):
            session._allow("write", "exchange", dlx, ClassId.QUEUE, 10)
            session._allow("read", "queue", name or "amq.gen", ClassId.QUEUE, 10)
    mark = session._write_mark()
    queue = session._vh.declare_queue(
        name,
        passive=m.passive,
        durable=m.durable,
        exclusive=m.exclusive,
        auto_delete=m.auto_delete,
        arguments=dict(m.arguments or {}),
        owner=session,
    )
    channel.last_queue = queue.name
    reply = None
    if not m.nowait:
        reply = _m(
            spec.Queue.DeclareOk,
            queue=queue.name,
            message_count=queue.message_count,
            consumer_count=len(queue.consumers),
        )
    session._reply_when_durable(channel, mark, reply)


def queue_bind(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Bind, command.method)
    queue = session._queue_name(channel, m.queue)
    routing_key = m.routing_key if (m.queue or m.routing_key) else queue
    session._allow("write", "queue", queue, ClassId.QUEUE, 20)
    session._allow("read", "exchange", m.exchange, ClassId.QUEUE, 20)
    mark = session._write_mark()
    session._vh.bind(
        m.exchange,
        Destination("queue", queue),
        routing_key,
        dict(m.arguments or {}),
        owner=session,
    )
    session._reply_when_durable(channel, mark, None if m.nowait else spec.Queue.BindOk())


def queue_unbind(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Unbind, command.method)
    queue = session._queue_name(channel, m.queue)
    session._allow("write", "queue", queue, ClassId.QUEUE, 50)
    session._allow("read", "exchange", m.exchange, ClassId.QUEUE, 50)
    mark = session._write_mark()
    session._vh.unbind(
        m.exchange,
        Destination("queue", queue),
        m.routing_key,
        dict(m.arguments or {}),
        owner=session,
    )
    session._reply_when_durable(channel, mark, spec.Queue.UnbindOk())


def queue_purge(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Purge, command.method)
    session._allow("read", "queue", session._queue_name(channel, m.queue), ClassId.QUEUE, 30)
    mark = session._write_mark()
    count = session._vh.queue(session._queue_name(channel, m.queue), session).purge()
    reply = None if m.nowait else _m(spec.Queue.PurgeOk, message_count=count)
    session._reply_when_durable(channel, mark, reply)  # after the removals are on disk


def queue_delete(session: Session, channel: ChannelSession, command: Command) -> None:
    m = cast(spec.Queue.Delete, command.method)
    session._allow("configure", "queue", session._queue_name(channel, m.queue), ClassId.QUEUE, 40)
    mark = session._write_mark()
    count = session._vh.delete_queue(
        session._queue_name(channel, m.queue),
        if_unused=m.if_unused,
        if_empty=m.if_empty,
        owner=session,
    )
    reply = None if m.nowait else _m(spec.Queue.DeleteOk, message_count=count)
    session._reply_when_durable(channel, mark, reply)
