"""What a queue holds, as RabbitMQ counts it: bytes unacked, persistent, in memory, paged out."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import attrs

from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.queue import Queue
from amqplite.protocol.errors import AMQPError
from amqplite.protocol.properties import decode_properties


@attrs.frozen
class Contents:
    """One pass over a durable queue's journaled messages (persistent ones, and paged bodies)."""

    persistent: int = 0
    persistent_bytes: int = 0
    paged_ready: int = 0
    paged_unacked: int = 0
    paged_bytes: int = 0


NOTHING = Contents()


def body_size(message: Message) -> int:
    """The body's size without reading a paged body back from disk."""
    if type(message) is PagedMessage:
        return int(message.location.length)
    return len(message.body)


def queue_contents(queue: Queue) -> Contents:
    """Persistent and paged-out messages of the queue (only durable queues journal them).

    Costs one step per persistent message of the queue; a transient queue costs nothing.
    """
    live = getattr(queue.journal, "live", None)  # store.queue_store.QueueStore: seq -> entry
    if not live:
        return NOTHING
    persistent_bytes = paged_ready = paged_unacked = paged_bytes = 0
    for entry in live.values():
        message = entry.message
        size = body_size(message)
        persistent_bytes += size
        if type(message) is PagedMessage:
            paged_bytes += size
            if entry.ready:
                paged_ready += 1
            else:
                paged_unacked += 1
    return Contents(len(live), persistent_bytes, paged_ready, paged_unacked, paged_bytes)


def unacked_bytes_by_queue(channels: Iterable[Any]) -> dict[Queue, int]:
    """Body bytes delivered and not yet acknowledged, per queue, over the given DeliveryChannels."""
    out: dict[Queue, int] = {}
    for channel in channels:
        for unacked in channel.unacked.values():
            queue = unacked.queue
            out[queue] = out.get(queue, 0) + body_size(unacked.entry.message)
    return out


def head_timestamp(queue: Queue) -> int | None:
    """The `timestamp` property of the message at the head of the queue (None without one)."""
    if not len(queue.ready):
        return None
    head: QueueEntry | None = next(iter(queue.ready), None)
    if head is None:
        return None
    try:
        stamp = decode_properties(head.message.properties_bin).timestamp
    except AMQPError:
        return None
    if isinstance(stamp, datetime.datetime):
        return int(stamp.timestamp())
    return int(stamp) if isinstance(stamp, int) else None


_RABBIT_TIMES: dict[float, str] = {}


def rabbit_time(wall: float) -> str:
    """A wall-clock time as RabbitMQ 3.10 writes idle_since: 2024-01-31T12:00:00.000+00:00."""
    text = _RABBIT_TIMES.get(wall)
    if text is None:
        if len(_RABBIT_TIMES) > 100_000:  # idle queues keep their time: a hit almost always
            _RABBIT_TIMES.clear()
        moment = datetime.datetime.fromtimestamp(wall, datetime.UTC)
        millis = moment.microsecond // 1000
        text = _RABBIT_TIMES[wall] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}+00:00"
    return text
