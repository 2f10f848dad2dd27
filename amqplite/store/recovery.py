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
    RecordType,
    StoredMessage,
    decode_delivered,
    decode_enqueue,
    decode_expires,
    decode_seq,
    enqueue_seq,
)
from amqplite.store.snapshot import SNAPSHOT_NAME, read_snapshot, remove_temp_files

log = logging.getLogger("amqplite.store")

_LENGTH = struct.Struct(">I")


_SOURCE_SHIFT = 48  # a record's place: source index << 48 | offset of the record in that file


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

    def stored(self) -> Iterator[tuple[StoredMessage, int]]:
        """(message with its body located, not copied; record bytes) in queue order."""
        counts = self.counts
        views = [memoryview(data) for _, data in self.sources]
        head = RECORD_HEAD.size
        for place in self.places:
            source = place >> _SOURCE_SHIFT
            offset = place & ((1 << _SOURCE_SHIFT) - 1)
            view = views[source]
            (length,) = _LENGTH.unpack_from(view, offset)
            message = decode_enqueue(
                view[offset + head + 1 : offset + head + length], source, offset + head + 1
            )
            count = counts.get(message.seq)
            if count is not None:
                message = attrs.evolve(message, delivery_count=count)
            yield message, head + length

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
        for seq, count, deadline, record_at in index.places():
            live[seq] = record_at
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
    )
