"""The TTL index of a queue: its ready entries that have a deadline, earliest first."""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedKeyList

from amqplite.broker.message import QueueEntry


def _entry_deadline(entry: QueueEntry) -> tuple[float, int]:
    """Sort key of the TTL index: deadline, then position."""
    assert entry.expires_at is not None
    return entry.expires_at, entry.seq


class TtlIndex:
    """Ready entries with a deadline, so one expires on time wherever it is in the queue."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: SortedKeyList[QueueEntry] = SortedKeyList(key=_entry_deadline)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[QueueEntry]:
        return iter(self._entries)

    def add(self, entry: QueueEntry, deadline: float) -> bool:
        """Index an entry at `deadline`; True if it is now the earliest."""
        entry.expires_at = deadline
        entries = self._entries
        entries.add(entry)
        return entries[0] is entry

    def remove(self, entry: QueueEntry) -> None:
        """Take out an indexed entry (delivered, or expired lazily at the head)."""
        self._entries.remove(entry)

    def clear(self) -> None:
        """Forget every entry (purge)."""
        self._entries.clear()

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None if nothing is indexed."""
        entries = self._entries
        return entries[0].expires_at if entries else None

    def pop_due(self, now: float) -> QueueEntry | None:
        """Take out and return the earliest entry if its deadline is at or before `now`."""
        entries = self._entries
        if not entries:
            return None
        entry: QueueEntry = entries[0]
        assert entry.expires_at is not None
        if entry.expires_at > now:
            return None
        del entries[0]
        return entry

    def has_due(self, now: float) -> bool:
        """True if some entry's deadline is at or before `now`."""
        due = self.next_deadline()
        return due is not None and due <= now
