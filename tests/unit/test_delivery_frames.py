"""A message delivered many times (fanout, requeue) gives each delivery its own exact frames."""

from __future__ import annotations

from amqplite.broker.message import Message, QueueEntry
from amqplite.protocol.writers import Deliver, encode_deliver
from amqplite.session.delivery_frames import deliver_frames


def test_every_delivery_of_a_shared_message_equals_its_own_full_encoding() -> None:
    message = Message("amq.fanout", "key", b"\x10\x00\x02", b"body" * 100)
    cases = [  # (channel, consumer tag, delivery tag, delivery count, frame max)
        (1, "c1", 1, 0, 131072),
        (1, "c2", 2, 0, 131072),  # the second delivery builds the shared tail
        (1, "consumer-3", 3, 1, 131072),  # redelivered, from the tail
        (2, "c1", 7, 0, 131072),  # another channel number: a tail of its own
        (2, "c1", 8, 0, 200),  # a smaller frame_max: the body spans frames
        (1, "c1", 9, 2, 131072),
    ]
    for channel, consumer_tag, delivery_tag, count, frame_max in cases:
        entry = QueueEntry(0, message, delivery_count=count)
        got = b"".join(deliver_frames(channel, consumer_tag, delivery_tag, entry, frame_max))
        deliver = Deliver(channel, consumer_tag, delivery_tag, count > 0)
        assert got == encode_deliver(deliver, message, frame_max), (channel, delivery_tag)
