"""The seams between the pure core and the store: what the core reports, the store persists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqplite.broker.auth import Permission
    from amqplite.broker.message import QueueEntry
    from amqplite.broker.policy import Policy
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


class ConfigListener(Protocol):
    """Told about vhosts, users, permissions and policies so that run-time changes survive a restart."""

    def vhost_added(self, name: str) -> None:
        """A vhost was created."""

    def vhost_deleted(self, name: str) -> None:
        """A vhost was deleted."""

    def user_set(self, name: str, password_hash: str, tags: tuple[str, ...]) -> None:
        """A user was created or replaced."""

    def user_deleted(self, name: str) -> None:
        """A user was deleted (with its permissions)."""

    def permissions_set(self, user: str, vhost: str, permission: Permission) -> None:
        """A user was granted permissions on a vhost."""

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """A user's permissions on a vhost were taken away."""

    def policy_set(self, policy: Policy) -> None:
        """A policy was created or replaced."""

    def policy_cleared(self, vhost: str, name: str) -> None:
        """A policy was removed."""


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
