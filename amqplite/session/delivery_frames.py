"""basic.deliver for a queue entry; a message delivered again reuses its shared part (writers.py)."""

from __future__ import annotations

from typing import Final

from amqplite.broker.message import QueueEntry
from amqplite.protocol.writers import (
    DeliverTail,
    Part,
    deliver_parts_of,
    deliver_parts_with_tail,
    deliver_tail,
)

DELIVERED_ONCE: Final = DeliverTail(-1, 0, 0, b"")
"""Marks a message delivered once: a second delivery (fanout, requeue) builds its shared tail."""


def deliver_frames(
    channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry, frame_max: int
) -> list[Part]:
    """The frames of one delivery as parts; the body among them uncopied."""
    message = entry.message
    tail = message.deliver_tail
    if tail is not None and tail.channel == channel_id and tail.frame_max == frame_max:
        return deliver_parts_with_tail(
            consumer_tag, delivery_tag, entry.delivery_count > 0, tail, message.body
        )
    if tail is None:  # most messages are delivered once: encoded whole, nothing kept
        message.deliver_tail = DELIVERED_ONCE
    else:
        body = message.body
        tail = message.deliver_tail = deliver_tail(channel_id, message, len(body), frame_max)
        if tail is not None:  # one body frame: its other queues deliver from the shared tail
            return deliver_parts_with_tail(
                consumer_tag, delivery_tag, entry.delivery_count > 0, tail, body
            )
    return deliver_parts_of(
        channel_id, consumer_tag, delivery_tag, entry.delivery_count > 0, message, frame_max
    )
