"""basic.consume and basic.get on a stream queue: what RabbitMQ refuses, refused in its words."""

from __future__ import annotations

from typing import Any

from amqplite.broker.queue import Queue
from amqplite.broker.stream_arguments import parse_offset
from amqplite.broker.stream_queue import StreamQueue
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.session.channel import ChannelSession


def _named(queue: Queue) -> str:
    return f"queue '{queue.name}' in vhost '{queue.vhost}'"


def check_consume(
    queue: Queue | None, channel: ChannelSession, no_ack: bool, arguments: dict[str, Any]
) -> None:
    """A stream consumer must ack (540), have a prefetch (406) and a valid x-stream-offset (406)."""
    if not isinstance(queue, StreamQueue):
        return
    if no_ack:
        raise ConnectionException(
            ReplyCode.NOT_IMPLEMENTED,
            f"automatic acknowledgement not supported by stream queues {_named(queue)}",
            ClassId.BASIC,
            20,
        )
    delivery = channel.delivery
    if not delivery.prefetch_count and not delivery.global_prefetch:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"consumer prefetch count is not set for '{_named(queue)}'",
            ClassId.BASIC,
            20,
        )
    offset = arguments.get("x-stream-offset")
    if offset is not None and parse_offset(offset) is None:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid x-stream-offset {arguments['x-stream-offset']!r} for {_named(queue)}: "
            "first, last, next, an offset, a timestamp or an interval such as 30m",
            ClassId.BASIC,
            20,
        )


def check_get(queue: Queue) -> None:
    """basic.get is not supported by stream queues (540, as RabbitMQ)."""
    if isinstance(queue, StreamQueue):
        raise ConnectionException(
            ReplyCode.NOT_IMPLEMENTED,
            f"basic.get not supported by stream queues {_named(queue)}",
            ClassId.BASIC,
            70,
        )
