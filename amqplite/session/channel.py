"""Per-channel session state: open/closing, confirm sequence numbers, tx buffer, last queue."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.durability import CommitMark
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException


class ChannelState(enum.Enum):
    """Lifecycle of one channel as the server sees it."""

    OPEN = "open"
    CLOSING = "closing"  # we sent channel.close and wait for close-ok


class ConfirmMode(enum.Enum):
    """Publisher-side mode of a channel: plain, confirms, or transactional (exclusive)."""

    NONE = "none"
    CONFIRM = "confirm"
    TX = "tx"


@attrs.define(eq=False)
class ChannelSession:
    """One open channel of a connection."""

    channel_id: int
    delivery: DeliveryChannel
    state: ChannelState = ChannelState.OPEN
    mode: ConfirmMode = ConfirmMode.NONE
    publish_seq: int = 0
    # seq, ack?, the commits it waits for (None: nothing)
    pending_confirms: list[tuple[int, bool, CommitMark | None]] = attrs.field(factory=list)
    tx_ops: list[tuple[Any, ...]] = attrs.field(factory=list)
    tx_bytes: int = 0  # what tx_ops hold, as session.limits.hold_in_tx counts it
    last_queue: str = ""
    durable_mark: CommitMark | None = None  # records this channel wrote: its replies wait for them
    held_cancels: list[bytes] | None = None  # basic.cancel frames held while it deletes a queue

    def next_publish_seq(self) -> int:
        """The confirm sequence number of the next publish (1-based)."""
        self.publish_seq += 1
        return self.publish_seq

    def queue_name(self, name: str) -> str:
        """An empty queue name means the channel's last declared queue (spec rule), else 404."""
        if name:
            return name
        if not self.last_queue:
            raise ChannelException(ReplyCode.NOT_FOUND, "no previously declared queue")
        return self.last_queue
