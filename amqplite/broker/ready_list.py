"""Ready messages of a queue: FIFO blocks by sequence number (whole ones paged out), one per level."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Final

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

    def ready_entries(self) -> list[QueueEntry]:
        """The block's ready entries, in order."""
        return [e for e in islice(self.entries, self.head, None) if e is not None and e.ready]


class PagedBlock:
    """A block whose ready entries are on disk: how many, their body bytes, where, when due."""

    __slots__ = ("count", "deadline", "loading", "size", "where")

    def __init__(self, count: int, size: int, where: Any, deadline: float | None) -> None:
        self.count = count
        self.size = size  # body bytes (the queue's ready_bytes still counts them)
        self.where = where  # the store's handle of the written run (opaque here)
        self.deadline = deadline  # the earliest TTL deadline among the entries, if any
        self.loading = False  # a read back is under way


class ReadyList:
    """One level's ready entries: fresh ones in blocks by sequence number, requeued ones sorted.

    Fresh entries are appended in sequence order into blocks of up to 1,024 sequence numbers, so
    an entry leaving from the middle (expiry) only marks its block: a block that empties is
    dropped at once and one mostly dead is compacted on its own, so no removal ever costs a pass
    over the whole queue (which stalled every connection for ~100 ms per million messages).
    Requeued entries precede every fresh one (they were taken from the head) and go back into
    place in a sorted list.

    Paging (the queue's tail as a whole, as RabbitMQ's queue index): a full block past the head
    may be written out by the tail pager (`take_for_page_out`, then `paged_out`) and is then kept
    only as a PagedBlock, a few bytes per message. Blocks near the head are read back ahead of
    consumers (`take_for_page_in`, then `paged_in`); `popleft` reaching a block still on disk
    returns None and calls `watcher`, which asks for it. Paged entries are not iterated.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._paged: dict[int, PagedBlock] = {}
        self._writing: set[int] = set()  # keys of blocks being written out
        self._keys: deque[int] = deque()  # block keys in order; some may have been dropped
        self._stale = 0  # keys in _keys whose block was dropped
        self._tail_key = -1
        self._requeued: SortedKeyList[QueueEntry] = SortedKeyList(key=_entry_seq)
        self._requeued_count = 0  # len(_requeued), whose __len__ is a Python call
        self.count = 0  # entries ready, in memory or paged (len(); read as is on hot paths)
        self.paged_count = 0  # entries on disk
        self.paged_bytes = 0  # their body bytes
        self.paged_deadlines = 0  # paged blocks holding an entry with a TTL deadline
        self.watcher: Callable[[], None] | None = None  # told when paged blocks near the head

    def __len__(self) -> int:
        return self.count

    def append(self, entry: QueueEntry) -> None:
        """Add a newly published entry at the tail (sequence numbers only grow)."""
        entry.ready = True
        self.count += 1
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
        self.count += 1
        self._requeued.add(entry)
        self._requeued_count += 1

    def popleft(self) -> QueueEntry | None:
        """Take the entry at the head, or None if empty."""
        if not self.count:
            return None
        if self._requeued_count:
            entry: QueueEntry = self._requeued.pop(0)
            self._requeued_count -= 1
        else:
            keys = self._keys
            blocks = self._blocks
            while True:
                key = keys[0]
                block = blocks.get(key)
                if block is None:
                    if key in self._paged:  # the head is still on disk: wait for it
                        self._want_page_in()
                        return None
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
        self.count -= 1
        return entry

    def _drop_block(self, key: int, block: _Block) -> None:
        """A block holds nothing ready: forget it (the tail block is only emptied)."""
        if key == self._tail_key:
            block.entries.clear()
            block.head = 0
            block.live = 0
            return
        del self._blocks[key]
        if self._paged:
            self._want_page_in()  # the head moved on towards the paged blocks
        if self._keys[0] == key:
            self._keys.popleft()
            return
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > len(self._keys):
            blocks, paged = self._blocks, self._paged
            self._keys = deque(k for k in self._keys if k in blocks or k in paged)
            self._stale = 0

    def _want_page_in(self) -> None:
        watcher = self.watcher
        if watcher is not None:
            watcher()

    def remove(self, entry: QueueEntry) -> None:
        """Take a ready entry out from anywhere (expiry): O(log n + block size)."""
        entry.ready = False
        self.count -= 1
        requeued = self._requeued
        if self._requeued_count and entry.seq <= requeued[-1].seq:
            requeued.remove(entry)
            self._requeued_count -= 1
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
        """Remove every ready entry; return those in memory in queue order (paged ones just go)."""
        entries = list(self)
        for entry in entries:
            entry.ready = False
        self._requeued.clear()
        self._requeued_count = 0
        self._blocks.clear()
        self._paged.clear()  # their runs on disk are freed with the last handle
        self._writing.clear()
        self._keys.clear()
        self._stale = 0
        self._tail_key = -1
        self.count = 0
        self.paged_count = 0
        self.paged_bytes = 0
        self.paged_deadlines = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        """The ready entries in memory, in order (paged blocks are skipped)."""
        yield from self._requeued
        blocks = self._blocks
        for key in self._keys:
            block = blocks.get(key)
            if block is not None:
                for entry in islice(block.entries, block.head, None):
                    if entry is not None and entry.ready:
                        yield entry

    # -- paging the tail ------------------------------------------------------------------

    def take_for_page_out(self, keep: int) -> list[tuple[int, list[QueueEntry]]]:
        """Full blocks past the first `keep` to write out now: (key, its ready entries) each.

        The block still filling at the tail, blocks already on disk or being written, and the
        first `keep` blocks (the head, which consumers take next) are left in memory.
        """
        out: list[tuple[int, list[QueueEntry]]] = []
        blocks, writing = self._blocks, self._writing
        position = 0
        for key in self._keys:
            block = blocks.get(key)
            if block is None:
                if key in self._paged:
                    position += 1
                continue
            position += 1
            if position <= keep or key == self._tail_key or key in writing or not block.live:
                continue
            writing.add(key)
            out.append((key, block.ready_entries()))
        return out

    def paged_out(
        self, key: int, count: int, size: int, where: object, deadline: float | None
    ) -> bool:
        """A block's `count` entries were written at `where`: drop them from memory.

        False (the block stays in memory) when it changed meanwhile: entries taken, expired or
        purged, or the head came close enough to need it.
        """
        self._writing.discard(key)
        block = self._blocks.get(key)
        if block is None or block.live != count or key == self._tail_key:
            return False
        for entry in islice(block.entries, block.head, None):
            if entry is not None:
                entry.ready = False  # the object may live on elsewhere (a delivered copy)
        del self._blocks[key]
        self._paged[key] = PagedBlock(count, size, where, deadline)
        self.paged_count += count
        self.paged_bytes += size
        if deadline is not None:
            self.paged_deadlines += 1
        return True

    def abandon_page_out(self, key: int) -> None:
        """Writing a block out failed: it stays in memory."""
        self._writing.discard(key)

    def take_for_page_in(
        self, ahead: int, now: float | None = None
    ) -> list[tuple[int, PagedBlock]]:
        """Paged blocks to read back now: those among the first `ahead` blocks, and with `now`,
        those holding a deadline already due (TTL); each is marked loading."""
        out: list[tuple[int, PagedBlock]] = []
        paged = self._paged
        if not paged:
            return out
        blocks = self._blocks
        position = 0
        for key in self._keys:
            if position >= ahead:
                break
            block = paged.get(key)
            if block is None:
                if key in blocks:
                    position += 1
                continue
            position += 1
            if not block.loading:
                block.loading = True
                out.append((key, block))
        if now is not None and self.paged_deadlines:
            for key, block in paged.items():
                if not block.loading and block.deadline is not None and block.deadline <= now:
                    block.loading = True
                    out.append((key, block))
        return out

    def paged_in(self, key: int, block: PagedBlock, entries: list[QueueEntry]) -> bool:
        """A paged block was read back (entries as written): it is in memory again.

        False when the block went meanwhile (purge, delete): the entries are not ready.
        """
        if self._paged.get(key) is not block:
            return False
        del self._paged[key]
        self.paged_count -= block.count
        self.paged_bytes -= block.size
        if block.deadline is not None:
            self.paged_deadlines -= 1
        resident = _Block()
        resident.entries = list(entries)
        resident.live = len(entries)
        for entry in entries:
            entry.ready = True
        self._blocks[key] = resident
        return True

    def failed_page_in(self, block: PagedBlock) -> None:
        """Reading a block back failed: it may be asked for again."""
        block.loading = False

    @property
    def paged_blocks(self) -> int:
        """Blocks on disk."""
        return len(self._paged)

    @property
    def levels(self) -> list[ReadyList]:
        """As ReadyMessages': a queue without priorities keeps its one level as its ready list."""
        return [self]


class ReadyMessages:
    """Ready entries of a queue: one ReadyList per priority level, served highest first."""

    def __init__(self, levels: int = 1) -> None:
        self.levels = [ReadyList() for _ in range(max(1, levels))]
        self.count = 0  # entries ready over all levels (len(); read as is on hot paths)
        self._top = 0  # no level above this one holds entries

    def __len__(self) -> int:
        return self.count

    def append(self, entry: QueueEntry) -> None:
        """Add a fresh entry at the tail of its level."""
        self.levels[entry.level].append(entry)
        self.count += 1
        if entry.level > self._top:
            self._top = entry.level

    def requeue(self, entry: QueueEntry) -> None:
        """Return an entry to its original place in its level."""
        self.levels[entry.level].requeue(entry)
        self.count += 1
        if entry.level > self._top:
            self._top = entry.level

    def popleft(self) -> QueueEntry | None:
        """Take the next entry: the head of the highest non-empty level."""
        if not self.count:
            return None
        levels = self.levels
        top = self._top
        while not levels[top].count:
            top -= 1
        self._top = top
        entry = levels[top].popleft()
        if entry is not None:  # None: the head is paged out and being read back
            self.count -= 1
        return entry

    def remove(self, entry: QueueEntry) -> None:
        """Take out an entry that is ready (expiry)."""
        self.levels[entry.level].remove(entry)
        self.count -= 1

    @property
    def paged_count(self) -> int:
        """Entries on disk, over all levels."""
        return sum(level.paged_count for level in self.levels)

    @property
    def paged_bytes(self) -> int:
        """Body bytes of the entries on disk, over all levels."""
        return sum(level.paged_bytes for level in self.levels)

    def clear(self) -> list[QueueEntry]:
        """Remove every entry, highest level first; return those in memory (paged ones go)."""
        entries: list[QueueEntry] = []
        for level in reversed(self.levels):
            entries.extend(level.clear())
        self.count = 0
        self._top = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        for level in reversed(self.levels):
            yield from level
