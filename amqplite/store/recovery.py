"""Recovery of one queue directory: snapshot, then journal replay with torn or corrupt tails cut off."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import attrs

from amqplite.store.clean_index import CleanIndex
from amqplite.store.journal import cut_tail, list_segments, map_file, read_segment
from amqplite.store.records import (
    FILE_HEADER,
    RECORD_HEAD,
    LocatedMessage,
    RecordType,
    StoredMessage,
    decode_delivered,
    decode_enqueue_head,
    decode_expires,
    decode_seq,
    decode_seqs,
    enqueue_seq,
)
from amqplite.store.snapshot import SNAPSHOT_NAME, read_snapshot, remove_temp_files

log = logging.getLogger("amqplite.store")

_LENGTH = struct.Struct(">I")


_SOURCE_SHIFT = 48  # a record's place: source index << 48 | offset of the record in that file
_OFFSET_MASK = (1 << _SOURCE_SHIFT) - 1
_INDEXED = 1 << 47  # in a place of source 0: the rest is an entry number of the clean index


@attrs.frozen
class RecoveredQueue:
    """The live messages of a queue after recovery, in queue order, and where its journal stands.

    Messages are kept as places of their records in the (mapped) source files and decoded one at a
    time by stored(): a backlog of millions never exists twice in memory.
    """

    places: list[int]  # (source << 48 | record offset) of each live message, in queue order
    counts: dict[int, int]  # seq -> delivery count journaled after the message's record
    deadlines: dict[int, float]  # seq -> TTL deadline as POSIX milliseconds
    next_seq: int
    last_segment: int
    segment_sizes: dict[int, int]
    problems: list[str]
    # the files the records are in (StoredMessage.source indexes this)
    sources: list[tuple[Path, bytes | memoryview]] = attrs.field(factory=list)
    index: CleanIndex | None = None  # places flagged _INDEXED are entries of this index

    def located(self) -> Iterator[tuple[LocatedMessage, int, int]]:
        """(message with its body located, its source file, record bytes) in queue order.

        Messages the clean index describes come from its entries (after a crash the index
        seeds the live set): only records of the journal tail are decoded, and no body is read.
        """
        counts = self.counts
        views = [memoryview(data) for _, data in self.sources]
        head = RECORD_HEAD.size
        index = self.index
        for place in self.places:
            source = place >> _SOURCE_SHIFT
            offset = place & _OFFSET_MASK
            if offset & _INDEXED and index is not None:
                located, size, _ = index.entry(offset ^ _INDEXED)
            else:
                view = views[source]
                (length,) = _LENGTH.unpack_from(view, offset)
                at = offset + head + 1
                located = decode_enqueue_head(view[at : offset + head + length], at)
                size = head + length
            count = counts.get(located[0])
            if count is not None and count > located[1]:  # counts only grow
                located = (located[0], count, *located[2:])
            yield located, source, size

    def stored(self) -> Iterator[tuple[StoredMessage, int]]:
        """(message with its body located, not copied; record bytes) in queue order."""
        for (seq, count, prio, exp, ex, rk, props, at, length), source, size in self.located():
            yield StoredMessage(seq, count, prio, exp, ex, rk, props, b"", source, at, length), size

    @property
    def messages(self) -> list[StoredMessage]:
        """The live messages (bodies located, not copied)."""
        return [message for message, _ in self.stored()]

    @property
    def live_bytes(self) -> int:
        """Record bytes of the live messages."""
        return sum(size for _, size in self.stored())


class _State:
    def __init__(self) -> None:
        self.live: dict[int, int] = {}  # seq -> place of its ENQUEUE record
        self.counts: dict[int, int] = {}
        self.deadlines: dict[int, float] = {}  # seq -> TTL deadline, POSIX ms
        self.max_seq = -1

    def seed(self, index: CleanIndex) -> None:
        """Start from a snapshot described by its clean index (source 0)."""
        live, counts, deadlines = self.live, self.counts, self.deadlines
        for number, (seq, count, deadline, _) in enumerate(index.places()):
            live[seq] = _INDEXED | number
            if count:
                counts[seq] = count
            if deadline is not None:
                deadlines[seq] = deadline
            if seq > self.max_seq:
                self.max_seq = seq

    def apply(self, record_type: int, payload: memoryview, source: int, record_at: int) -> None:
        if record_type == RecordType.ENQUEUE:
            seq = enqueue_seq(payload)
            self.live[seq] = source << _SOURCE_SHIFT | record_at
            self.counts.pop(seq, None)
            self.deadlines.pop(seq, None)
            if seq > self.max_seq:
                self.max_seq = seq
        elif record_type == RecordType.REMOVE:
            seq = decode_seq(payload)
            self.live.pop(seq, None)
            self.counts.pop(seq, None)
            self.deadlines.pop(seq, None)
        elif record_type == RecordType.EXPIRES:
            seq, deadline = decode_expires(payload)
            if seq in self.live:
                self.deadlines[seq] = deadline
        elif record_type == RecordType.DELIVERED:
            seq, count = decode_delivered(payload)
            if seq in self.live:
                self.counts[seq] = max(count, self.counts.get(seq, 0))
        elif record_type == RecordType.DELIVERED_ONCE:
            counts = self.counts
            for seq in decode_seqs(payload):
                if seq in self.live and seq not in counts:
                    counts[seq] = 1


def recover_queue(directory: Path, index: CleanIndex | None = None) -> RecoveredQueue:
    """Rebuild a queue's live messages from its snapshot (through its clean index when it has
    one: no record scanned) and segments, repairing the files."""
    problems: list[str] = []
    state = _State()
    if not directory.is_dir():
        return RecoveredQueue([], {}, {}, 0, 0, {}, problems)
    remove_temp_files(directory)
    covers = 0
    sources: list[tuple[Path, bytes | memoryview]] = []
    snapshot = None if index is not None else read_snapshot(directory)
    if index is not None:
        covers = index.covers_through
        path = directory / SNAPSHOT_NAME
        sources.append((path, map_file(path)))
        state.seed(index)
    elif snapshot is not None:
        covers = snapshot.covers_through
        sources.append((directory / SNAPSHOT_NAME, snapshot.data))
        for record_type, payload, offset in snapshot.records:
            state.apply(record_type, payload, 0, offset)
        if snapshot.problem is not None:
            text = f"{directory}: damaged snapshot ({snapshot.problem}); kept what read cleanly"
            log.error("%s", text)
            problems.append(text)
    segments = list_segments(directory)
    sizes: dict[int, int] = {}
    last = covers
    stopped = False
    for number, path in segments:
        last = max(last, number)
        if number <= covers:
            log.info("removing segment %s already covered by the snapshot", path)
            path.unlink()
            continue
        if stopped:
            text = f"{path}: dropped, it follows a corrupt record"
            log.error("%s", text)
            problems.append(text)
            path.unlink()
            continue
        found = read_segment(path)
        source = len(sources)
        sources.append((path, found.data))
        for record_type, payload, offset in found.records:
            state.apply(record_type, payload, source, offset)
        if found.problem is None:
            sizes[number] = found.size
            continue
        offset = found.problem_offset
        text = (
            f"{path}: {found.problem} at offset {offset}; cut off {found.size - offset} bytes, "
            "recovery of this queue stops here"
        )
        log.warning("%s", text)
        problems.append(text)
        stopped = True
        if offset <= FILE_HEADER.size:
            path.unlink()
        else:
            cut_tail(path, offset)
            sizes[number] = offset
    live = state.live
    return RecoveredQueue(
        [live[seq] for seq in sorted(live)],
        state.counts,
        state.deadlines,
        state.max_seq + 1,
        last,
        sizes,
        problems,
        sources,
        index,
    )
