"""Paging queue tails as a whole: blocks of ready entries written out, read back ahead of consumers.

Beyond the transient paging threshold, the full blocks of a non-durable queue past its head
(past `KEEP_HEAD` blocks of 1,024 sequence numbers per priority level) are encoded with everything
needed to deliver them (`broker/entry_codec.py`) and appended to unlinked spill files in a
worker thread (`store/tail_spill.py`); the queue then keeps a PagedBlock handle per block, a
few bytes per message. Blocks within `READ_AHEAD` of the head are read back and decoded in a
worker thread before consumers reach them; a block holding a due TTL deadline is read back
too, so its entries expire (and are dead-lettered) on time. Durable queues keep their
journal's per-message paging (their bodies are already on disk), and their transient
messages page their bodies out as before (`store/transient.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from amqplite.broker.entry_codec import decode_entries, encode_entries
from amqplite.broker.message import QueueEntry
from amqplite.broker.queue import Queue
from amqplite.broker.ready_list import PagedBlock, ReadyList
from amqplite.store.bodies import BodyRef
from amqplite.store.tail_spill import TailFiles
from amqplite.store.transient import MemoryBudget, TransientPager

log = logging.getLogger("amqplite.server")

READ_AHEAD: Final = 4  # blocks from the head that are read back before consumers need them
KEEP_HEAD: Final = READ_AHEAD + 2  # blocks at the head of each level that never page out


class PageOut:
    """Blocks of one queue level to write out: encoded and appended in a worker thread."""

    def __init__(
        self, queue: Queue, level: ReadyList, blocks: list[tuple[int, list[QueueEntry]]]
    ) -> None:
        self.queue = queue
        self.level = level
        self.blocks = blocks
        self.placed: list[BodyRef] = []
        self.ok = False

    def run(self, files: TailFiles) -> None:
        """Encode and write the blocks (worker thread); a failure leaves them in memory."""
        try:
            self.placed = files.write([encode_entries(entries) for _, entries in self.blocks])
            self.ok = True
        except OSError:
            log.exception("cannot page a queue tail out to %s", files.directory)


class PageIn:
    """Paged blocks of one queue level to read back and decode in a worker thread."""

    def __init__(self, queue: Queue, level: ReadyList, blocks: list[tuple[int, PagedBlock]]):
        self.queue = queue
        self.level = level
        self.blocks = blocks
        self.entries: list[list[QueueEntry]] = []
        self.ok = False

    def run(self) -> None:
        """Read and decode the blocks (worker thread)."""
        try:
            self.entries = [decode_entries(block.where.read()) for _, block in self.blocks]
        except (OSError, ValueError, UnicodeDecodeError):
            log.exception("cannot read a paged queue tail back")
            return
        for (_, block), entries in zip(self.blocks, self.entries, strict=True):
            if len(entries) != block.count:
                log.error("a paged block read back %d of its %d entries", len(entries), block.count)
                return
        self.ok = True


class TailPager:
    """Decides which queue tails page out and which blocks come back (a broker TransientSpill).

    Sans-I/O: `take_page_outs` / `take_page_ins` hand out jobs whose `run` belongs in a worker
    thread, `page_out_done` / `page_in_done` apply them on the event loop (server/spill.py).
    """

    def __init__(self, bodies: TransientPager, files: TailFiles, now: Callable[[], float]) -> None:
        self.bodies = bodies  # memory figures, and body paging for durable queues
        self.budget: MemoryBudget = bodies.budget  # what queues count transient messages against
        self.files = files
        self.now = now
        self.growing: dict[Queue, None] = {}  # queues that took messages while over
        self.paged: dict[Queue, None] = {}  # queues with blocks on disk
        self.wanted: dict[Queue, None] = {}  # queues whose head nears a paged block
        self.wake: Callable[[], None] = lambda: None  # set by the task: work is waiting
        self.paged_out_bytes = 0  # body bytes of entries paged out, all time

    def observe(self, memory_used: int) -> None:
        """The process's memory was measured (the alarms' timer)."""
        self.bodies.observe(memory_used)

    @property
    def over(self) -> bool:
        """True while transient messages go to disk."""
        return self.bodies.over

    def enqueue(self, queue: Queue, entry: QueueEntry) -> None:
        """A transient message entered a queue past the threshold (counted): its tail pages out."""
        if queue.journal is not None:
            self.bodies.counted(entry)  # a durable queue: its journal pages per message
            return
        if queue not in self.growing:
            if not self.growing:
                self.wake()  # the pager task may be idle
            self.growing[queue] = None

    def take_page_outs(self) -> list[PageOut]:
        """The blocks to write out now (only while over the threshold)."""
        growing = self.growing
        if not growing:
            return []
        if not self.over:
            growing.clear()
            return []
        self.growing = {}
        jobs: list[PageOut] = []
        for queue in growing:
            if queue.deleted:
                continue
            for level in queue.ready.levels:
                blocks = level.take_for_page_out(KEEP_HEAD)
                if blocks:
                    jobs.append(PageOut(queue, level, blocks))
        return jobs

    def page_out_done(self, job: PageOut) -> int:
        """Drop the written blocks from memory where they are unchanged; body bytes freed."""
        level, queue = job.level, job.queue
        if not job.ok:
            for key, _ in job.blocks:
                level.abandon_page_out(key)
            return 0
        freed = 0
        for (key, entries), where in zip(job.blocks, job.placed, strict=True):
            size = sum(e.message.size for e in entries)
            deadlines = [e.expires_at for e in entries if e.expires_at is not None]
            deadline = min(deadlines) if deadlines else None
            if queue.deleted or not level.paged_out(key, len(entries), size, where, deadline):
                continue
            queue.paging_out(entries)
            freed += size
        if freed:
            if level.watcher is None:
                level.watcher = lambda: self._want(queue)
            self.paged[queue] = None
            self.bodies.freed(freed)
            self.paged_out_bytes += freed
        return freed

    def _want(self, queue: Queue) -> None:
        if queue not in self.wanted:
            self.wanted[queue] = None
            self.wake()

    def take_page_ins(self) -> list[PageIn]:
        """Paged blocks to read back now: near a head, or holding a due TTL deadline."""
        wanted = self.wanted
        self.wanted = {}
        jobs: list[PageIn] = []
        now = self.now()
        for queue in list(self.paged):
            if queue.deleted or not queue.ready.paged_count:
                del self.paged[queue]
                continue
            if queue not in wanted and not _has_paged_deadlines(queue):
                continue
            for level in queue.ready.levels:
                blocks = level.take_for_page_in(READ_AHEAD, now)
                if blocks:
                    jobs.append(PageIn(queue, level, blocks))
        return jobs

    def page_in_done(self, job: PageIn) -> None:
        """Put the read blocks back in their queue and let it deliver."""
        level, queue = job.level, job.queue
        if not job.ok:
            for _, block in job.blocks:
                level.failed_page_in(block)
            return
        for (key, block), entries in zip(job.blocks, job.entries, strict=True):
            if not queue.deleted and level.paged_in(key, block, entries):
                queue.paged_in(entries)
        if not queue.deleted:
            queue.dispatch()


def _has_paged_deadlines(queue: Queue) -> bool:
    return any(level.paged_deadlines for level in queue.ready.levels)
