"""Ready messages of a queue: FIFO blocks by sequence number, requeued ones sorted, one per level."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Final

from sortedcontainers import SortedKeyList

from amqplite.broker.message import QueueEntry


def _entry_seq(entry: QueueEntry) -> int:
    """Sort key of requeued entries: their original position."""
    return entry.seq


_BLOCK_SHIFT: Final = 10  # fresh entries are kept in blocks of 1,024 sequence numbers


class _Block:
    """Fresh entries of one range of sequence numbers, in order; taken ones before `head`.

    Entries removed from the middle stay as tombstones (`ready` False) until passed or until
    they outnumber the block's live ones, when the block alone is compacted.
    """

    __slots__ = ("entries", "head", "live")

    def __init__(self) -> None:
        self.entries: list[QueueEntry | None] = []
        self.head = 0
        self.live = 0


class ReadyList:
    """One level's ready entries: fresh ones in blocks by sequence number, requeued ones sorted.

    Fresh entries are appended in sequence order into blocks of up to 1,024 sequence numbers, so
    an entry leaving from the middle (expiry) only marks its block: a block that empties is
    dropped at once and one mostly dead is compacted on its own, so no removal ever costs a pass
    over the whole queue (which stalled every connection for ~100 ms per million messages). Requeued entries precede every fresh one (they were taken from
    the head) and go back into place in a sorted list.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._keys: deque[int] = deque()  # block keys in order; some may have been dropped
        self._stale = 0  # keys in _keys whose block was dropped
        self._tail_key = -1
        self._requeued: SortedKeyList[QueueEntry] = SortedKeyList(key=_entry_seq)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, entry: QueueEntry) -> None:
        """Add a newly published entry at the tail (sequence numbers only grow)."""
        entry.ready = True
        self._count += 1
        key = entry.seq >> _BLOCK_SHIFT
        if key == self._tail_key:
            block = self._blocks[key]
            block.entries.append(entry)
            block.live += 1
            return
        block = _Block()
        block.entries.append(entry)
        block.live = 1
        self._blocks[key] = block
        self._keys.append(key)
        self._tail_key = key

    def requeue(self, entry: QueueEntry) -> None:
        """Put a delivered entry back at its original position."""
        entry.ready = True
        self._count += 1
        self._requeued.add(entry)

    def popleft(self) -> QueueEntry | None:
        """Take the entry at the head, or None if empty."""
        if not self._count:
            return None
        requeued = self._requeued
        if requeued:
            entry: QueueEntry = requeued.pop(0)
        else:
            keys = self._keys
            blocks = self._blocks
            while True:
                key = keys[0]
                block = blocks.get(key)
                if block is None:
                    keys.popleft()
                    self._stale -= 1
                    continue
                if block.live:
                    entries = block.entries
                    head = block.head
                    while True:
                        found = entries[head]
                        entries[head] = None  # the block must not keep the message alive
                        head += 1
                        assert found is not None
                        if found.ready:
                            break
                    block.head = head
                    block.live -= 1
                    entry = found
                    break
                self._drop_block(key, block)
        entry.ready = False
        self._count -= 1
        return entry

    def _drop_block(self, key: int, block: _Block) -> None:
        """A block holds nothing ready: forget it (the tail block is only emptied)."""
        if key == self._tail_key:
            block.entries.clear()
            block.head = 0
            block.live = 0
            return
        del self._blocks[key]
        if self._keys[0] == key:
            self._keys.popleft()
            return
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > len(self._keys):
            self._keys = deque(k for k in self._keys if k in self._blocks)
            self._stale = 0

    def remove(self, entry: QueueEntry) -> None:
        """Take a ready entry out from anywhere (expiry): O(log n + block size)."""
        entry.ready = False
        self._count -= 1
        requeued = self._requeued
        if requeued and entry.seq <= requeued[-1].seq:
            requeued.remove(entry)
            return
        key = entry.seq >> _BLOCK_SHIFT
        block = self._blocks[key]
        live = block.live - 1
        block.live = live
        if not live:
            self._drop_block(key, block)
            return
        entries = block.entries
        dead = len(entries) - block.head - live
        if dead > live and dead >= 64:
            block.entries = [
                e for e in islice(entries, block.head, None) if e is not None and e.ready
            ]
            block.head = 0

    def clear(self) -> list[QueueEntry]:
        """Remove and return every ready entry in queue order."""
        entries = list(self)
        for entry in entries:
            entry.ready = False
        self._requeued.clear()
        self._blocks.clear()
        self._keys.clear()
        self._stale = 0
        self._tail_key = -1
        self._count = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        yield from self._requeued
        blocks = self._blocks
        for key in self._keys:
            block = blocks.get(key)
            if block is not None:
                for entry in islice(block.entries, block.head, None):
                    if entry is not None and entry.ready:
                        yield entry


class ReadyMessages:
    """Ready entries of a queue: one ReadyList per priority level, served highest first."""

    def __init__(self, levels: int = 1) -> None:
        self.levels = [ReadyList() for _ in range(max(1, levels))]
        self._count = 0
        self._top = 0  # no level above this one holds entries

    def __len__(self) -> int:
        return self._count

    def append(self, entry: QueueEntry) -> None:
        """Add a fresh entry at the tail of its level."""
        self.levels[entry.level].append(entry)
        self._count += 1
        if entry.level > self._top:
            self._top = entry.level

    def requeue(self, entry: QueueEntry) -> None:
        """Return an entry to its original place in its level."""
        self.levels[entry.level].requeue(entry)
        self._count += 1
        if entry.level > self._top:
            self._top = entry.level

    def popleft(self) -> QueueEntry | None:
        """Take the next entry: the head of the highest non-empty level."""
        if not self._count:
            return None
        levels = self.levels
        while not len(levels[self._top]):
            self._top -= 1
        entry = levels[self._top].popleft()
        self._count -= 1
        return entry

    def remove(self, entry: QueueEntry) -> None:
        """Take out an entry that is ready (expiry)."""
        self.levels[entry.level].remove(entry)
        self._count -= 1

    def clear(self) -> list[QueueEntry]:
        """Remove every entry, highest level first."""
        entries: list[QueueEntry] = []
        for level in reversed(self.levels):
            entries.extend(level.clear())
        self._count = 0
        self._top = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        for level in reversed(self.levels):
            yield from level
