"""Queue: ready messages in FIFO order (requeues go back to their place), consumers and counts."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
from sortedcontainers import SortedKeyList

from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.stats import MessageStats

if TYPE_CHECKING:
    from amqplite.broker.consumer import Consumer
    from amqplite.broker.durability import QueueJournal


def _entry_seq(entry: QueueEntry) -> int:
    """Sort key of requeued entries: their original position."""
    return entry.seq


class ReadyList:
    """Ready entries: fresh ones in a deque, requeued ones sorted back into their original place."""

    def __init__(self) -> None:
        self._fresh: deque[QueueEntry] = deque()
        self._requeued: SortedKeyList[QueueEntry] = SortedKeyList(key=_entry_seq)

    def __len__(self) -> int:
        return len(self._fresh) + len(self._requeued)

    def append(self, entry: QueueEntry) -> None:
        """Add a newly published entry at the tail."""
        self._fresh.append(entry)

    def requeue(self, entry: QueueEntry) -> None:
        """Put a delivered entry back at its original position."""
        self._requeued.add(entry)

    def popleft(self) -> QueueEntry | None:
        """Take the entry at the head, or None if empty."""
        # Requeued entries were delivered from the head, so they precede every fresh one.
        if self._requeued:
            entry: QueueEntry = self._requeued.pop(0)
            return entry
        if self._fresh:
            return self._fresh.popleft()
        return None

    def clear(self) -> list[QueueEntry]:
        """Remove and return every ready entry in queue order."""
        entries = list(self._requeued) + list(self._fresh)
        self._requeued.clear()
        self._fresh.clear()
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        yield from self._requeued
        yield from self._fresh


@attrs.define(eq=False)
class Queue:
    """One queue of a vhost: its settings, ready messages, unacked count and consumers."""

    name: str
    vhost: str
    durable: bool = False
    exclusive_owner: object | None = None
    auto_delete: bool = False
    arguments: dict[str, Any] = attrs.field(factory=dict)
    ready: ReadyList = attrs.field(factory=ReadyList)
    consumers: deque[Consumer] = attrs.field(factory=deque)
    unacked_count: int = 0
    ready_bytes: int = 0
    next_seq: int = 0
    had_consumer: bool = False
    deleted: bool = False
    stats: MessageStats = attrs.field(factory=MessageStats)
    totals: MessageStats = attrs.field(factory=MessageStats)  # the broker's, shared by its queues
    journal: QueueJournal | None = None  # set by the store for durable queues

    @property
    def exclusive(self) -> bool:
        """True when only the declaring connection may use the queue."""
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return len(self.ready)

    def enqueue(self, message: Message) -> QueueEntry:
        """Append a message at the tail and return its entry."""
        entry = QueueEntry(self.next_seq, message)
        self.next_seq += 1
        self.ready.append(entry)
        self.ready_bytes += message.size
        self.stats.publish += 1
        self.totals.publish += 1
        if self.journal is not None and message.persistent:
            self.journal.enqueue(entry)
        return entry

    def settle(self, entry: QueueEntry) -> None:
        """An entry leaves the queue for good (acked, auto-acked, dropped): tell the journal."""
        if self.journal is not None and entry.message.persistent and not self.deleted:
            self.journal.remove(entry)

    def take(self) -> QueueEntry | None:
        """Remove the head entry for delivery; it becomes unacked (or gone if auto-acked)."""
        entry = self.ready.popleft()
        if entry is not None:
            self.ready_bytes -= entry.message.size
        return entry

    def requeue(self, entry: QueueEntry) -> None:
        """Return a delivered entry to its original position, marked redelivered."""
        if self.deleted:
            return
        self.ready.requeue(entry)
        self.ready_bytes += entry.message.size
        self.stats.requeue += 1
        self.totals.requeue += 1

    def purge(self) -> int:
        """Drop every ready message and return how many there were."""
        entries = self.ready.clear()
        self.ready_bytes = 0
        for entry in entries:
            self.settle(entry)
        return len(entries)

    def dispatch(self) -> None:
        """Deliver ready messages round-robin to consumers that have room."""
        consumers = self.consumers
        while len(self.ready) and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.can_take():
                    break
            else:
                return
            entry = self.take()
            assert entry is not None
            consumer.deliver(entry)

    def _check(self) -> None:
        """Assert the queue's invariants (tests call this between operations)."""
        assert self.ready_bytes == sum(e.message.size for e in self.ready)
        assert self.unacked_count >= 0
        seqs = [e.seq for e in self.ready]
        assert seqs == sorted(seqs)
