"""The seams between the pure core and the store: what the core reports, the store persists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqplite.broker.message import QueueEntry
    from amqplite.broker.queue import Queue
    from amqplite.broker.vhost import Binding, Exchange


class QueueJournal(Protocol):
    """The journal of one durable queue; only persistent messages are reported to it."""

    def enqueue(self, entry: QueueEntry) -> None:
        """A persistent message entered the queue."""

    def remove(self, entry: QueueEntry) -> None:
        """A persistent message left the queue for good (acked, dropped, expired, dead-lettered)."""

    def delivered(self, entry: QueueEntry) -> None:
        """A persistent message was taken for delivery (its delivery count is journaled)."""


class MetadataListener(Protocol):
    """Told about durable entities so they come back at boot; transient ones are not reported."""

    def queue_declared(self, queue: Queue) -> None:
        """A durable queue was created (the listener may attach queue.journal)."""

    def queue_deleted(self, queue: Queue) -> None:
        """A durable queue was deleted."""

    def exchange_declared(self, exchange: Exchange) -> None:
        """A durable exchange was created."""

    def exchange_deleted(self, exchange: Exchange) -> None:
        """A durable exchange was deleted."""

    def binding_added(self, binding: Binding) -> None:
        """A binding between durable ends was added."""

    def binding_removed(self, binding: Binding) -> None:
        """A binding between durable ends was removed."""


class CommitTracker(Protocol):
    """Write tickets for publisher confirms: a confirm waits until its ticket is committed."""

    def write_ticket(self) -> int:
        """The ticket of the last record appended (0 when nothing was ever appended)."""

    def committed_ticket(self) -> int:
        """Every record up to this ticket is on disk (fsynced)."""


class NoCommits:
    """The in-memory broker: nothing is ever waiting for a disk."""

    def write_ticket(self) -> int:
        """Always 0: no records."""
        return 0

    def committed_ticket(self) -> int:
        """Always 0: nothing pending."""
        return 0
