"""What a queue reports about its messages: the durable journal and the transient spill."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import attrs

from amqplite.broker.message import Message, QueueEntry

QueueT_contra = TypeVar("QueueT_contra", contravariant=True)


class QueueJournal(Protocol):
    """The journal of one durable queue; only persistent messages are reported to it."""

    def enqueue(self, entry: QueueEntry) -> None:
        """A persistent message entered the queue."""

    def remove(self, entry: QueueEntry) -> None:
        """A persistent message left the queue for good (acked, dropped, expired, dead-lettered)."""

    def delivered(self, entry: QueueEntry) -> None:
        """A persistent message was taken for delivery (its delivery count is journaled)."""


class QueueRemote(Protocol):
    """Cluster mode: a mirrored queue's leader on another node, as this node's queue reaches it."""

    def publish(self, message: Message) -> bool:
        """Forward a message routed to the queue (False: refused, the publisher gets a nack)."""
        ...

    def settled(self, entry: QueueEntry) -> None:
        """An entry left this node's queue for good (a delivery from the leader: ack it there)."""

    def consumers_changed(self) -> None:
        """A consumer of this node's queue came or went (the leader's deliveries follow them)."""

    @property
    def placement(self) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
        """(leader, members, online members) as last seen, for management (None: not known)."""
        ...

    @property
    def replication(self) -> tuple[tuple[str, ...], Mapping[str, int]] | None:
        """(in-sync members, each member's lag in records) where this node leads it, else None."""
        ...

    def ask(self, op: str) -> RemoteAnswer:
        """Ask the leader: "get", "get-no-ack", "purge" or "count"; the answer fills in later."""
        ...

    def returned(self, entry: QueueEntry) -> bool:
        """A requeued entry got from the leader goes back there (True); False: requeue it here."""
        ...


@attrs.define(eq=False)
class RemoteAnswer:
    """The leader's answer to a request forwarded to it (basic.get, queue.purge, declare-ok counts)."""

    done: bool = False
    failed: str = ""  # no leader answered, or it refused: why
    messages: int = 0  # ready messages there (purged ones, for a purge)
    consumers: int = 0
    entry: QueueEntry | None = None  # basic.get: the message got, not in this node's queue
    # the asker is gone (its channel closed): a message got for it goes back to the leader
    give_back: Callable[[], None] = lambda: None


class SpillBudget(Protocol):
    """The bytes transient messages may still take in memory (a TransientSpill's)."""

    room: int  # below 0: over the threshold, every transient message goes to the spill
    entry_bytes: int  # counted per message beside its body


class TransientSpill(Protocol[QueueT_contra]):
    """Pages transient messages out to disk beyond a memory threshold (set by the server).

    A queue counts each transient message it takes against the budget (body bytes and
    `entry_bytes`) and calls enqueue only while the room is below zero: under the threshold
    a publish makes no call. Generic in the queue type (no import of the queue's here).
    """

    @property
    def budget(self) -> SpillBudget:
        """What queues count their transient messages against."""

    def enqueue(self, queue: QueueT_contra, entry: QueueEntry) -> None:
        """A transient message, counted, entered a queue past the threshold: it pages out later."""
