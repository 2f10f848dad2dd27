"""A stream queue's log: numbered segments plus offset indexes, appended, read by offset, retained.

Each segment `<first offset>.seg` holds STREAM_MESSAGE records (offset, timestamp, filter hash,
names, properties, body) and STREAM_TRACK records (a named consumer's offset); beside it,
`<first offset>.idx` holds one fixed-size entry per message (offset, timestamp, position, filter
hash). The loop appends to buffers; the committer's worker thread writes and fsyncs them, and
readers (worker threads too) see only committed offsets. Memory holds one summary per segment,
never the messages. Every new segment starts with the offsets of every named consumer, so the
last segment alone restores them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import attrs

from amqplite.store.journal import SyncJob, SyncTask, cut_tail, fsync_dir, map_file
from amqplite.store.records import (
    FILE_HEADER,
    FileKind,
    RecordType,
    StoreFileError,
    file_header,
    read_header,
    scan,
)
from amqplite.store.stream_reader import StreamView
from amqplite.store.stream_records import (
    DEFAULT_SEGMENT_BYTES,
    IDX,
    INDEX_ENTRY,
    MESSAGE_HEAD,
    SEG,
    Segment,
    decode_track,
    encode_message,
    encode_track,
    filter_hash,
    offset_at,
    read_index,
    segment_file,
)

if TYPE_CHECKING:
    from amqplite.store.domains import CommitDomain

log = logging.getLogger("amqplite.store")


@attrs.define(eq=False)
class _Chunk:
    """Bytes appended to one segment since the last commit."""

    segment: Segment
    data: bytearray = attrs.field(factory=bytearray)
    index: bytearray = attrs.field(factory=bytearray)
    create: bool = False  # the files do not exist yet
    close: bool = False  # the segment is full: close its files after this write


class StreamOwner(Protocol):
    """What a stream log needs of its store: commit domains and the committer's wake-up."""

    def new_domain(self, name: str) -> CommitDomain:
        """A commit sequence."""
        ...

    def appended(self, journal: Any) -> None:
        """A record was appended: take a ticket and wake the committer."""
        ...

    def touched(self, journal: Any) -> None:
        """Something needs writing at the next commit."""
        ...


class StreamCommitted(SyncTask):
    """After a commit: the offsets it wrote become readable (completed on the loop)."""

    def __init__(self, log: StreamLog, next_offset: int) -> None:
        self.log = log
        self.next_offset = next_offset

    def run(self, fsync: bool) -> None:
        """Nothing to do in the worker thread."""

    def completed(self) -> None:
        """On the loop: readers may now read up to next_offset."""
        self.log.committed(self.next_offset)


def _noop() -> None:
    """Nobody listens yet."""


class StreamLog:
    """One stream's segmented log (a commit domain of its own; see the module docstring)."""

    def __init__(self, owner: StreamOwner, name: str, directory: Path) -> None:
        self.owner = owner
        self.directory = directory
        self.domain = owner.new_domain(name)
        self.segments: list[Segment] = []
        self.tracked: dict[str, int] = {}  # named consumer -> last acked offset
        self.next_offset = 0
        self.committed_next = 0  # readers see offsets below this
        self.max_segment_bytes = DEFAULT_SEGMENT_BYTES
        self.max_bytes: int | None = None  # retention by size (x-max-length-bytes)
        self.max_age_ms: int | None = None  # retention by age (x-max-age)
        self.on_committed: Callable[[], None] = _noop
        self.compaction_key: str | None = None  # x-stream-compaction: header name or routing-key
        self.tombstone_ms = 86_400_000  # tombstones (empty bodies) go after this age
        self.compacting = False  # a compaction runs: retention waits for it
        self.compacted = 0  # messages removed by compaction since the stream opened
        self.dead = False
        self.deleted_segments = 0
        self.writer = self  # the store closes a deleted queue's files through `writer.rotate`
        self._pending: list[_Chunk] = []
        self._tracks_dirty: dict[str, int] = {}
        self._doomed: list[Segment] = []
        self._files: dict[int, tuple[BinaryIO, BinaryIO]] = {}  # worker thread only

    # -- reading the state ------------------------------------------------------------------

    @property
    def first_offset(self) -> int:
        """The oldest offset still held (next_offset when empty)."""
        return self.segments[0].first if self.segments else self.next_offset

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of every segment (index files not counted)."""
        return sum(s.size for s in self.segments)

    @property
    def length(self) -> int:
        """Messages held."""
        return self.next_offset - self.first_offset

    def configure(
        self, max_segment_bytes: int | None, max_bytes: int | None, max_age_ms: int | None
    ) -> None:
        """The stream's retention settings (from its arguments and policy)."""
        self.max_segment_bytes = max_segment_bytes or DEFAULT_SEGMENT_BYTES
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms

    # -- the queue journal handle (QueueJournalHandle) ---------------------------------------

    def enqueue(self, entry: Any) -> None:
        """Unused: stream queues append through append()."""

    def remove(self, entry: Any) -> None:
        """Nothing leaves a stream by consumption."""

    def delivered(self, entry: Any) -> None:
        """Deliveries are not recorded."""

    # -- appending (event loop) -------------------------------------------------------------

    def append(
        self,
        exchange: str,
        routing_key: str,
        properties_bin: bytes,
        body: bytes,
        timestamp_ms: int,
        filter_value: str | None = None,
    ) -> int:
        """Buffer one message; its offset (readable once committed)."""
        chunk = self._active_chunk()
        self._flush_tracks(chunk)
        segment = chunk.segment
        offset = self.next_offset
        hashed = filter_hash(filter_value)
        record = encode_message(
            offset, timestamp_ms, hashed, exchange, routing_key, properties_bin, body
        )
        chunk.index += INDEX_ENTRY.pack(offset, timestamp_ms, segment.size, hashed)
        chunk.data += record
        segment.size += len(record)
        segment.note(offset, timestamp_ms, hashed)
        self.next_offset = offset + 1
        self.owner.appended(self)
        return offset

    def track(self, name: str, offset: int) -> None:
        """A named consumer acked up to offset: record it (durable at the next commit)."""
        if self.tracked.get(name, -1) >= offset:
            return
        self.tracked[name] = offset
        self._tracks_dirty[name] = offset
        self.owner.appended(self)

    def _active_chunk(self) -> _Chunk:
        """The chunk of the segment appends go to (rolling to a new segment when full)."""
        active = self.segments[-1] if self.segments else None
        if active is None or (active.size >= self.max_segment_bytes and active.next > active.first):
            chunk = self._chunk_of(active) if active is not None else None
            if chunk is not None:
                chunk.close = True
                active.closed = True  # type: ignore[union-attr]
            segment = Segment(self.next_offset, self.next_offset)
            self.segments.append(segment)
            new = _Chunk(segment, create=True)
            self._pending.append(new)
            for name, offset in self.tracked.items():  # every segment starts with the offsets
                record = encode_track(name, offset)
                new.data += record
                segment.size += len(record)
            self._tracks_dirty.clear()
            return new
        return self._chunk_of(active)

    def _chunk_of(self, segment: Segment) -> _Chunk:
        pending = self._pending
        if pending and pending[-1].segment is segment:
            return pending[-1]
        chunk = _Chunk(segment)
        pending.append(chunk)
        return chunk

    def _flush_tracks(self, chunk: _Chunk) -> None:
        if not self._tracks_dirty:
            return
        for name, offset in self._tracks_dirty.items():
            record = encode_track(name, offset)
            chunk.data += record
            chunk.segment.size += len(record)
        self._tracks_dirty.clear()

    # -- retention (event loop decides, the job deletes) -------------------------------------

    def retain(self, now_ms: int) -> int:
        """Drop whole closed segments beyond the age or size limit; how many."""
        dropped = 0
        while len(self.segments) > 1 and self.segments[0].closed and not self.compacting:
            oldest = self.segments[0]
            too_old = self.max_age_ms is not None and oldest.last_ts < now_ms - self.max_age_ms
            too_big = self.max_bytes is not None and self.bytes_on_disk > self.max_bytes
            if not (too_old or too_big):
                break
            self.segments.pop(0)
            self._doomed.append(oldest)
            dropped += 1
        if dropped:
            self.deleted_segments += dropped
            self.owner.touched(self)
        return dropped

    # -- committing (the loop builds the job; the worker thread runs its ops) ---------------

    def write(self, job: SyncJob) -> None:
        """Hand the buffered records, index entries and deletions to the job."""
        if self._tracks_dirty:
            self._flush_tracks(self._active_chunk())
        for chunk in self._pending:
            first = chunk.segment.first
            if chunk.create:
                job.ops.append(partial(self._open_op, first))
                job.dirs.add(self.directory)
            data, index = bytes(chunk.data), bytes(chunk.index)
            job.ops.append(partial(self._write_op, first, data, index))
            job.bytes_written += len(data) + len(index)
            if chunk.close:
                job.ops.append(partial(self._close_op, first))
        self._pending = []
        for segment in self._doomed:
            job.ops.append(partial(self._delete_op, segment.first))
            job.dirs.add(self.directory)
        self._doomed = []
        job.after_sync.append(StreamCommitted(self, self.next_offset))

    def start_compaction(self, now_ms: int, fsync: bool = True) -> Any:
        """A CompactionPlan of the closed, committed segments for a worker thread (None: none)."""
        from amqplite.store.stream_compaction import CompactionPlan

        key = self.compaction_key
        bound = self.committed_next
        closed = [(s.first, s.next) for s in self.segments if s.closed and s.next <= bound]
        if key is None or self.compacting or not closed or self._pending_closes():
            return None
        self.compacting = True
        parts = [(s.first, min(s.next, bound)) for s in self.segments if s.first < bound]
        return CompactionPlan(self.directory, parts, closed, key, now_ms, self.tombstone_ms, fsync)

    def _pending_closes(self) -> bool:
        """True while a closed segment's files are still open for its last write."""
        return any(chunk.close for chunk in self._pending)

    def compaction_done(self, sizes: dict[int, int], removed: int) -> None:
        """Back on the loop: the rewritten segments' new sizes."""
        self.compacting = False
        self.compacted += removed
        for segment in self.segments:
            if segment.first in sizes:
                segment.size = sizes[segment.first]

    def committed(self, next_offset: int) -> None:
        """Offsets below next_offset are on disk: wake the readers."""
        if next_offset > self.committed_next:
            self.committed_next = next_offset
            self.on_committed()

    def rotate(self, job: SyncJob) -> int:
        """Close every open file in the job (queue deleted, or store closing)."""
        job.ops.append(self._close_all_op)
        return 0

    # -- in the worker thread ---------------------------------------------------------------

    def _open_op(self, first: int, job: SyncJob) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        seg = open(segment_file(self.directory, first, SEG), "xb", buffering=0)  # noqa: SIM115
        seg.write(file_header(FileKind.SEGMENT, first))
        idx = open(segment_file(self.directory, first, IDX), "xb", buffering=0)  # noqa: SIM115
        self._files[first] = (seg, idx)

    def _files_of(self, first: int) -> tuple[BinaryIO, BinaryIO]:
        files = self._files.get(first)
        if files is None:  # reopened after a restart
            seg = open(segment_file(self.directory, first, SEG), "ab", buffering=0)  # noqa: SIM115
            idx = open(segment_file(self.directory, first, IDX), "ab", buffering=0)  # noqa: SIM115
            files = self._files[first] = (seg, idx)
        return files

    def _write_op(self, first: int, data: bytes, index: bytes, job: SyncJob) -> None:
        seg, idx = self._files_of(first)
        if data:
            seg.write(data)
            job.add_file(seg)
        if index:
            idx.write(index)
            job.add_file(idx)

    def _close_op(self, first: int, job: SyncJob) -> None:
        files = self._files.pop(first, None)
        if files is not None:
            for file in files:
                job.add_file(file)
                job.close_after.append(file)

    def _close_all_op(self, job: SyncJob) -> None:
        for first in list(self._files):
            self._close_op(first, job)

    def _delete_op(self, first: int, job: SyncJob) -> None:
        for suffix in (SEG, IDX):
            segment_file(self.directory, first, suffix).unlink(missing_ok=True)

    # -- reading (the loop takes a view; a worker thread reads) ------------------------------

    def view(self) -> StreamView:
        """What a reader may read now: committed offsets of the segments held."""
        bound = self.committed_next
        parts = tuple((s.first, min(s.next, bound), s) for s in self.segments if s.first < bound)
        return StreamView(self.directory, parts, bound)

    # -- recovery ---------------------------------------------------------------------------

    @classmethod
    def open(cls, owner: StreamOwner, name: str, directory: Path) -> StreamLog:
        """Recover a stream from its directory (a torn tail of the last segment is cut)."""
        stream = cls(owner, name, directory)
        firsts = (
            sorted(int(p.stem) for p in directory.glob(f"*{SEG}") if p.stem.isdigit())
            if directory.is_dir()
            else []
        )
        for n, first in enumerate(firsts):
            last = n == len(firsts) - 1
            segment = stream._recover_segment(first, last)
            if segment is None:
                continue
            if not last:
                segment.closed = True
            stream.segments.append(segment)
        if stream.segments:
            stream.next_offset = stream.segments[-1].next
        stream.committed_next = stream.next_offset
        return stream

    def _recover_segment(self, first: int, last: bool) -> Segment | None:
        """Rebuild a segment's summary (and its index, when it does not match the segment)."""
        seg_path = segment_file(self.directory, first, SEG)
        idx_path = segment_file(self.directory, first, IDX)
        data = map_file(seg_path)
        try:
            read_header(data, FileKind.SEGMENT)
        except StoreFileError as exc:
            log.error("stream segment %s unreadable (%s): skipped", seg_path, exc)
            return None
        segment = Segment(first, first, size=len(data))
        entries = read_index(idx_path)
        if not last and entries and offset_at(data, entries[-1][2]) == entries[-1][0]:
            for offset, timestamp, _, hashed in entries:
                segment.note(offset, timestamp, hashed)
            return segment
        result = scan(data, FILE_HEADER.size)  # the last segment: offsets and tracks, checked
        index = bytearray()
        for kind, payload, position in result.records:
            if kind == RecordType.STREAM_MESSAGE:
                offset, timestamp, hashed = MESSAGE_HEAD.unpack_from(payload, 0)
                index += INDEX_ENTRY.pack(offset, timestamp, position, hashed)
                segment.note(offset, timestamp, hashed)
            elif kind == RecordType.STREAM_TRACK:
                track_name, offset = decode_track(payload)
                self.tracked[track_name] = max(offset, self.tracked.get(track_name, -1))
        if result.problem is not None:
            log.warning("stream segment %s: %s at %d, cut", seg_path, result.problem, result.end)
            cut_tail(seg_path, result.end)
        segment.size = result.end
        if bytes(index) != b"".join(INDEX_ENTRY.pack(*e) for e in entries):
            tmp = idx_path.with_suffix(".tmp")
            with open(tmp, "wb") as file:
                file.write(index)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, idx_path)
            fsync_dir(self.directory)
        return segment
