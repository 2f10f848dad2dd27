"""Replies held until the records they announce are on disk, one per channel at most."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from amqplite.broker.broker import Broker
from amqplite.broker.durability import CommitMark, is_durable, merge_marks
from amqplite.broker.entry_reports import RemoteAnswer
from amqplite.protocol.assembler import Command
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.writers import Part
from amqplite.session.channel import ChannelSession


@attrs.define(eq=False)
class HeldReply:
    """A channel's reply waiting for the commit of the records it announces."""

    mark: CommitMark
    reply: bytes
    deferred: list[Command | ChannelException]  # the channel's later input, run after the reply
    answer: RemoteAnswer | None = None  # cluster mode: the reply also waits for the queue's leader
    finish: Callable[[], list[Part]] | None = None  # builds the reply from the answer


class DurableReplies:
    """The held replies of one connection, by channel id; a channel's later input waits behind."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker  # its commit tracker is read at each use: the store may set it late
        self._held: dict[int, HeldReply] = {}
        self._open: tuple[object] | None = None  # a mark() token not yet closed by hold()

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, channel_id: int) -> bool:
        return channel_id in self._held

    def get(self, channel_id: int) -> HeldReply | None:
        """The reply the channel waits on, if any."""
        return self._held.get(channel_id)

    def mark(self) -> object:
        """Start noting the records a command appends (the token for hold; close it once)."""
        token = self._broker.commits.watch()
        self._open = (token,)
        return token

    def close_open_mark(self) -> None:
        """A command failed between mark() and hold(): stop noting its records."""
        if self._open is not None:
            self._broker.commits.watched(self._open[0])
            self._open = None

    def hold(self, channel: ChannelSession, token: object, frame: bytes | None) -> bool:
        """Note what the channel wrote since mark(); True if `frame` must wait for a commit."""
        self._open = None
        mark = self._broker.commits.watched(token)
        if mark is not None:
            channel.durable_mark = merge_marks(channel.durable_mark, mark)
        if frame is None:
            return False
        if is_durable(channel.durable_mark):
            channel.durable_mark = None
            return False
        assert channel.durable_mark is not None
        self._held[channel.channel_id] = HeldReply(channel.durable_mark, frame, [])
        return True

    def hold_answer(
        self,
        channel: ChannelSession,
        token: object | None,
        answer: RemoteAnswer,
        finish: Callable[[], list[Part]],
    ) -> bool:
        """Hold the channel until the leader answers and what it wrote since mark() is on disk
        (False: both are so already, reply now)."""
        self._open = None
        mark = self._broker.commits.watched(token) if token is not None else None
        channel.durable_mark = merge_marks(channel.durable_mark, mark)
        if answer.done and is_durable(channel.durable_mark):
            channel.durable_mark = None
            return False
        held = HeldReply(channel.durable_mark or (), b"", [], answer, finish)
        self._held[channel.channel_id] = held
        return True

    def take_committed(self) -> Iterator[tuple[int, HeldReply]]:
        """Remove and yield the held replies the commits now cover (the dict may change meanwhile)."""
        for channel_id, held in list(self._held.items()):
            if not is_durable(held.mark) or self._held.get(channel_id) is not held:
                continue
            if held.answer is not None and not held.answer.done:
                continue
            del self._held[channel_id]
            yield channel_id, held

    def forget(self, channel_id: int) -> None:
        """The channel is gone: so is its held reply."""
        held = self._held.pop(channel_id, None)
        if held is not None and held.answer is not None:
            held.answer.give_back()

    def clear(self) -> None:
        """The connection closed."""
        for channel_id in list(self._held):
            self.forget(channel_id)
