"""The journal of one durable queue: its records, paged-out bodies and snapshots."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from amqplite.config.models import StoreConfig
from amqplite.store.bodies import BodyFile, BodyRef
from amqplite.store.clean_index import remove_index, write_index
from amqplite.store.interface import JournaledEntry, JournaledMessage, JournaledQueue, Paging
from amqplite.store.journal import SegmentWriter, SyncJob, SyncTask, segment_path
from amqplite.store.records import (
    FILE_HEADER,
    LateEnqueue,
    append_enqueue,
    encode_delivered,
    encode_delivered_once,
    encode_enqueue,
    encode_expires,
    encode_remove,
)
from amqplite.store.recovery import RecoveredQueue
from amqplite.store.snapshot import SNAPSHOT_NAME, write_snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

    from amqplite.store.domains import CommitDomain

log = logging.getLogger("amqplite.store")


class JournalOwner(Protocol):
    """What a queue journal needs of its store: the settings, memory accounting and commits."""

    config: StoreConfig
    resident_bytes: int
    paged_out: int
    paging: Paging | None
    retired_fds: list[int]

    def new_domain(self, name: str) -> CommitDomain:
        """A commit sequence for a queue journal."""

    def appended(self, journal: QueueStore | None) -> None:
        """A record was appended: take a ticket and wake the committer."""

    def touched(self, journal: QueueStore | None) -> None:
        """Something needs writing at the next commit."""


_INTS: dict[int, int] = {}

FINISH_CHUNK = 512
"""Entries a commit's completion work (page-outs, repointing after a snapshot) handles per event-loop step."""


def shared_int(value: int) -> int:
    """One object per distinct size: paged messages keep millions of equal lengths."""
    if len(_INTS) < 4096:
        return _INTS.setdefault(value, value)
    return _INTS.get(value, value)


def encode_entry(seq: int, delivery_count: int, message: JournaledMessage) -> bytes:
    """The ENQUEUE record of a message."""
    return encode_enqueue(
        seq,
        delivery_count,
        message.priority,
        message.expiration_ms,
        message.exchange,
        message.routing_key,
        message.properties_bin,
        message.body,
    )


class SnapshotTask(SyncTask):
    """Write one queue's snapshot after a commit's fsync, in the worker thread."""

    def __init__(
        self,
        journal: QueueStore,
        covers_through: int,
        live: list[JournaledEntry],
    ) -> None:
        self.journal = journal
        self.live = live  # the queue's live entries when the snapshot was taken
        self.to_wall = 0.0  # add to a monotonic deadline (ms) for POSIX ms
        self.deadlines: dict[int, float] = {}  # seq -> TTL deadline, POSIX ms
        self.covers_through = covers_through
        self.items: list[tuple[int, int, JournaledMessage]] = []
        self.ok = False
        self.body_offsets: list[int] = []  # where each item's body starts in the snapshot file
        self.record_sizes: list[int] = []  # bytes of each item's ENQUEUE record
        self.body_file: BodyFile | None = None  # opened when paged bodies must move to the snapshot
        self.index = False  # also write the clean-shutdown index (graceful shutdown)

    def _records(self) -> Iterator[bytes]:
        position = FILE_HEADER.size
        offsets = self.body_offsets
        sizes = self.record_sizes
        deadlines = self.deadlines
        for seq, count, message in self.items:
            record = encode_entry(seq, count, message)
            position += len(record)
            sizes.append(len(record))
            offsets.append(position - message.size)  # the body ends the record
            yield record
            if deadlines and seq in deadlines:
                record = encode_expires(seq, deadlines[seq])
                position += len(record)
                yield record

    def run(self, fsync: bool) -> None:
        """Write the snapshot; a failure is logged and the segments stay."""
        directory = self.journal.directory
        # prepared here, off the event loop: a later delivery count or a paged copy of the same
        # message is harmless (the records after covers_through replay on top of it)
        self.items = [(e.seq, e.delivery_count, e.message) for e in self.live]
        to_wall = self.to_wall
        self.deadlines = {
            e.seq: e.expires_at * 1000 + to_wall for e in self.live if e.expires_at is not None
        }
        self.live = []
        try:
            write_snapshot(directory, self.covers_through, self._records(), fsync=fsync)
            if self.index:
                write_index(
                    directory,
                    self.covers_through,
                    self.items,
                    self.body_offsets,
                    self.record_sizes,
                    self.deadlines,
                    fsync,
                )
            else:
                remove_index(directory)  # it described the snapshot just replaced
            if self.journal.store.paging is not None:  # paged bodies move to the snapshot
                self.body_file = BodyFile(directory / SNAPSHOT_NAME, self.journal.store.retired_fds)
            self.ok = True
        except OSError:
            log.exception("snapshot of %s failed; its journal stays", directory)


class PageOutTask(SyncTask):
    """Open the segment that bodies being paged out were written to, in the worker thread."""

    def __init__(
        self,
        journal: QueueStore,
        number: int,
        base: int,
        entries: list[tuple[JournaledEntry, int]],
    ) -> None:
        self.journal = journal
        self.number = number
        self.base = base
        self.entries = entries  # (entry, end of its record in the written buffer)
        self.body_file: BodyFile | None = None

    def run(self, fsync: bool) -> None:
        """Open (or reuse) the segment's read descriptor; on failure the bodies stay in memory."""
        file = self.journal.body_files.get(self.number)
        try:
            path = segment_path(self.journal.directory, self.number)
            self.body_file = file or BodyFile(path, self.journal.store.retired_fds)
        except OSError:
            log.exception("cannot reopen segment %d of %s", self.number, self.journal.directory)


class QueueStore:
    """The journal of one durable queue (implements broker.entry_reports.QueueJournal)."""

    def __init__(
        self,
        store: JournalOwner,
        queue: JournaledQueue,
        directory: Path,
        recovered: RecoveredQueue | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.directory = directory
        self.domain = store.new_domain(f"{queue.vhost}/{queue.name}")
        next_segment = recovered.last_segment + 1 if recovered else 1
        self.writer = SegmentWriter(directory, next_segment, store.config.segment_bytes)
        if recovered is not None:
            self.writer.sizes.update(recovered.segment_sizes)
        # seq -> entry, and seq -> its record's bytes, negative while the body is paged out (on disk
        # only): two maps, so that no tuple per message adds to the objects the cyclic GC scans
        self.live: dict[int, JournaledEntry] = {}
        self.sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.page_out: list[
            tuple[JournaledEntry, int]
        ] = []  # (entry, end of its record in the buffer)
        self.body_files: dict[int, BodyFile] = {}  # open segments that paged bodies point into
        self.delivered_pending: list[JournaledEntry] = []  # journaled at write() if still live
        self.snapshot_running = False
        self.dead = False
        self.snapshots_taken = 0
        self.index_current = False  # the clean index on disk describes this queue (nothing since)

    # -- QueueJournal --------------------------------------------------------------------

    def enqueue(self, entry: JournaledEntry) -> None:
        """Journal a persistent message that entered the queue; beyond the budget, page it out."""
        message = entry.message
        store = self.store
        paging = store.paging
        writer = self.writer
        paged = paging is not None and paging.is_paged(message)
        if paged:
            assert paging is not None
            # a paged body (a dead-lettered copy): read in the worker thread, never on the loop
            record = LateEnqueue(
                entry.seq,
                entry.delivery_count,
                message.priority,
                message.expiration_ms,
                message.exchange,
                message.routing_key,
                message.properties_bin,
                paging.location(message),
            )
            writer.append_late(record)
            size = record.size
        else:
            size = append_enqueue(  # the body's one copy: straight into the segment buffer
                writer.buffer,
                entry.seq,
                entry.delivery_count,
                message.priority,
                message.expiration_ms,
                message.exchange,
                message.routing_key,
                message.properties_bin,
                message.body,
            )
            if writer.tap is not None:
                writer.appended_in_place(size)
        end = writer.pending  # where the record ends in the buffer (a page-out finds its body)
        self.live_bytes += size
        expiration = message.expiration_ms
        ttl = self.queue.settings.message_ttl
        if expiration is not None and (ttl is None or expiration < ttl):
            ttl = expiration
        if ttl is not None:
            writer.append(encode_expires(entry.seq, self.queue.host.wall_time() * 1000 + ttl))
        self.live[entry.seq] = entry
        if paged:
            self.sizes[entry.seq] = -size
        else:
            self.sizes[entry.seq] = size
            store.resident_bytes += message.size
            if store.resident_bytes > store.config.memory_budget_bytes and paging is not None:
                self.page_out.append((entry, end))
        store.appended(self)

    def remove(self, entry: JournaledEntry) -> None:
        """Journal that a message left the queue for good."""
        live = self.live.pop(entry.seq, None)
        if live is None:
            return
        size = self.sizes.pop(entry.seq)
        if size > 0:
            self.live_bytes -= size
            self.store.resident_bytes -= live.message.size
        else:
            self.live_bytes += size
        self.writer.append(encode_remove(entry.seq))
        self.store.appended(self)

    def delivered(self, entry: JournaledEntry) -> None:
        """A message was handed out: its delivery count is journaled with the next commit."""
        if entry.seq in self.live:
            pending = self.delivered_pending
            if not pending:  # later ones: already dirty until write() takes the list
                self.store.touched(self)
            pending.append(entry)

    # -- commit --------------------------------------------------------------------------

    def write(self, job: SyncJob) -> None:
        """Hand pending records to the job; start a snapshot when the journal outgrew live data."""
        if self.delivered_pending:
            self.write_delivered()
        number, base = self.writer.write(job)
        if self.page_out:
            # bodies are dropped from memory once the job has written them (page_out_done)
            taken, self.page_out = self.page_out, []
            job.after_sync.insert(0, PageOutTask(self, number, base, taken))
        if self.snapshot_running:
            return
        on_disk = self.writer.bytes_on_disk
        threshold = max(
            self.store.config.segment_bytes, self.store.config.snapshot_ratio * self.live_bytes
        )
        if on_disk > threshold:
            self.start_snapshot(job)

    def write_delivered(self) -> None:
        """Journal the delivery counts of messages handed out since the last write (still live)."""
        live = self.live
        once: dict[int, None] = {}
        again: dict[int, int] = {}
        for entry in self.delivered_pending:
            seq = entry.seq
            if live.get(seq) is not entry:
                continue  # acked (or gone) before its delivery reached the journal
            if entry.delivery_count > 1:
                again[seq] = entry.delivery_count
            else:
                once[seq] = None
        self.delivered_pending = []
        if once:
            self.writer.append(encode_delivered_once(list(once)))
        for seq, count in again.items():
            self.writer.append(encode_delivered(seq, count))

    def page_out_done(self, task: PageOutTask) -> Iterator[None]:
        """Drop the bodies the job wrote from memory, a chunk between yields (read from the segment)."""
        file = task.body_file
        if file is None or self.dead:
            return
        self.body_files.setdefault(task.number, file)
        live = self.live
        sizes = self.sizes
        paging = self.store.paging
        assert paging is not None  # nothing is queued for paging out without it
        base = task.base
        entries = task.entries
        for start in range(0, len(entries), FINISH_CHUNK):
            if self.dead:
                return
            freed = 0
            for entry, end in entries[start : start + FINISH_CHUNK]:
                seq = entry.seq
                if live.get(seq) is not entry or sizes[seq] < 0:
                    continue
                message = entry.message
                if paging.is_paged(message):
                    continue
                length = message.size
                location = BodyRef(file, base + end - length, shared_int(length))
                paging.page_out(entry, location)
                sizes[seq] = shared_int(-sizes[seq])
                freed += length
            self.store.resident_bytes -= freed
            self.store.paged_out += freed
            yield

    def start_snapshot(self, job: SyncJob) -> SnapshotTask:
        """Retire the open segment and snapshot the live messages after this commit's fsync."""
        covers = self.writer.rotate(job)
        self.index_current = False  # a new snapshot replaces the one the index describes
        host = self.queue.host
        task = SnapshotTask(self, covers, list(self.live.values()))  # a C-speed copy on the loop
        task.to_wall = (host.wall_time() - host.now()) * 1000
        job.after_sync.append(task)
        self.snapshot_running = True
        return task

    def clean_snapshot(self, job: SyncJob) -> None:
        """At a graceful shutdown: a snapshot with its index, unless the one on disk is current."""
        if self.snapshot_running or (self.index_current and not self.writer.sizes):
            return
        self.start_snapshot(job).index = True

    def snapshot_done(self, task: SnapshotTask) -> Iterator[None]:
        """Forget the segments a finished snapshot replaced; the repointing of paged bodies is returned."""
        self.snapshot_running = False
        if task.ok and not self.dead:
            self.snapshots_taken += 1
            for number in [n for n in self.writer.sizes if n <= task.covers_through]:
                del self.writer.sizes[number]
            for number in [n for n in self.body_files if n <= task.covers_through]:
                del self.body_files[number]
            if task.body_file is not None:
                return self._repoint(task, task.body_file)
        return iter(())

    def _repoint(self, task: SnapshotTask, file: BodyFile) -> Iterator[None]:
        """Paged bodies now read from the snapshot (the segments they were in are deleted)."""
        live = self.live
        paging = self.store.paging
        if paging is None:
            return
        placed = list(zip(task.items, task.body_offsets, strict=True))
        for start in range(0, len(placed), FINISH_CHUNK):
            if self.dead:
                return
            for (seq, _, _message), offset in placed[start : start + FINISH_CHUNK]:
                entry = live.get(seq)
                if entry is None:
                    continue
                current = entry.message
                if paging.is_paged(current):
                    paging.move(current, BodyRef(file, offset, current.size))
            yield

    @property
    def journal_bytes(self) -> int:
        """Bytes of segments on disk (the snapshot excluded)."""
        return self.writer.bytes_on_disk
