"""Replies held until the metadata records they announce are on disk, one per channel at most."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from amqplite.broker.broker import Broker
from amqplite.protocol.assembler import Command
from amqplite.protocol.errors import ChannelException
from amqplite.session.channel import ChannelSession


@attrs.define(eq=False)
class HeldReply:
    """A channel's reply waiting for the commit of the metadata record it announces."""

    ticket: int
    reply: bytes
    deferred: list[Command | ChannelException]  # the channel's later input, run after the reply


class DurableReplies:
    """The held replies of one connection, by channel id; a channel's later input waits behind."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker  # its commit tracker is read at each use: the store may set it late
        self._held: dict[int, HeldReply] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, channel_id: int) -> bool:
        return channel_id in self._held

    def get(self, channel_id: int) -> HeldReply | None:
        """The reply the channel waits on, if any."""
        return self._held.get(channel_id)

    def mark(self, records_metadata: bool) -> int:
        """The write ticket before a metadata change (-1 when no store records metadata)."""
        return self._broker.commits.write_ticket() if records_metadata else -1

    def hold(self, channel: ChannelSession, mark: int, frame: bytes | None) -> bool:
        """Note what the channel wrote since `mark`; True if `frame` must wait for a commit."""
        if mark >= 0:
            written = self._broker.commits.write_ticket()
            if written != mark:
                channel.metadata_ticket = written
        if frame is None:
            return False
        ticket = channel.metadata_ticket
        if ticket and ticket > self._broker.commits.committed_ticket():
            self._held[channel.channel_id] = HeldReply(ticket, frame, [])
            return True
        return False

    def take_committed(self) -> Iterator[tuple[int, HeldReply]]:
        """Remove and yield the held replies the commits now cover (the dict may change meanwhile)."""
        committed = self._broker.commits.committed_ticket()
        for channel_id, held in list(self._held.items()):
            if held.ticket > committed or self._held.get(channel_id) is not held:
                continue
            del self._held[channel_id]
            yield channel_id, held

    def forget(self, channel_id: int) -> None:
        """The channel is gone: so is its held reply."""
        self._held.pop(channel_id, None)

    def clear(self) -> None:
        """The connection closed."""
        self._held.clear()
