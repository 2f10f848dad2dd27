"""What a queue reports about its messages: the durable journal and the transient spill."""

from __future__ import annotations

from typing import Protocol

from amqplite.broker.message import QueueEntry


class QueueJournal(Protocol):
    """The journal of one durable queue; only persistent messages are reported to it."""

    def enqueue(self, entry: QueueEntry) -> None:
        """A persistent message entered the queue."""

    def remove(self, entry: QueueEntry) -> None:
        """A persistent message left the queue for good (acked, dropped, expired, dead-lettered)."""

    def delivered(self, entry: QueueEntry) -> None:
        """A persistent message was taken for delivery (its delivery count is journaled)."""


class TransientSpill(Protocol):
    """Pages transient message bodies out to disk beyond a memory threshold (set by the store)."""

    def enqueue(self, entry: QueueEntry) -> None:
        """A transient message entered a queue (the spill may page its body out later)."""
