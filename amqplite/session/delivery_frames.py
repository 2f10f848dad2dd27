"""basic.deliver for a queue entry, its shared part encoded once per message (writers.py)."""

from __future__ import annotations

from amqplite.broker.message import QueueEntry
from amqplite.protocol.writers import (
    Deliver,
    Part,
    deliver_parts,
    deliver_parts_with_tail,
    deliver_tail,
)


def deliver_frames(
    channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry, frame_max: int
) -> list[Part]:
    """The frames of one delivery as parts; the body among them uncopied."""
    message = entry.message
    body = message.body
    tail = message.deliver_tail
    if tail is None or tail.channel != channel_id or tail.frame_max != frame_max:
        tail = deliver_tail(channel_id, message, len(body), frame_max)
        message.deliver_tail = tail  # the message's other queues deliver from it
    if tail is not None:  # the usual case: one body frame
        return deliver_parts_with_tail(
            consumer_tag, delivery_tag, entry.delivery_count > 0, tail, body
        )
    deliver = Deliver(channel_id, consumer_tag, delivery_tag, entry.redelivered)
    return deliver_parts(deliver, message, frame_max)
