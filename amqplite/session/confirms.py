"""Publisher confirms of one connection: which channels wait, and sending those now on disk."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.broker.durability import is_durable, is_refused
from amqplite.protocol.writers import encode_ack, encode_nack
from amqplite.session.channel import ChannelSession


class PublisherConfirms:
    """The channels of a connection with publisher confirms not yet sent."""

    def __init__(self) -> None:
        self._waiting: dict[int, ChannelSession] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def track(self, channel: ChannelSession) -> None:
        """The channel queued a confirm (in `channel.pending_confirms`)."""
        self._waiting[channel.channel_id] = channel

    def forget(self, channel_id: int) -> None:
        """The channel closed: its pending confirms are never sent."""
        self._waiting.pop(channel_id, None)

    def clear(self) -> None:
        """The connection closed."""
        self._waiting.clear()

    def flush(self, write: Callable[[bytes], None]) -> None:
        """Write the confirms whose records are on disk, in order; runs of acks as one ack(multiple)."""
        done: list[int] = []
        for channel_id, channel in self._waiting.items():
            pending = channel.pending_confirms
            ready = 0
            while ready < len(pending) and is_durable(pending[ready][2]):  # in order per channel
                ready += 1
            for k in range(ready):  # a record refused after routing (cluster mode) is a nack too
                seq, ok, mark = pending[k]
                if ok and mark is not None and is_refused(mark):
                    pending[k] = (seq, False, mark)
            i = 0
            while i < ready:
                seq, ok, _ = pending[i]
                if not ok:
                    write(encode_nack(channel_id, seq, False, False))
                    i += 1
                    continue
                j = i
                while j + 1 < ready and pending[j + 1][1]:
                    j += 1
                write(encode_ack(channel_id, pending[j][0], j > i))
                i = j + 1
            del pending[:ready]
            if not pending:
                done.append(channel_id)
        for channel_id in done:
            del self._waiting[channel_id]
