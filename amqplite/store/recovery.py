"""Recovery of one queue directory: snapshot, then journal replay with torn or corrupt tails cut off."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs

from amqplite.store.journal import cut_tail, list_segments, read_segment
from amqplite.store.records import (
    FILE_HEADER,
    RecordType,
    StoredMessage,
    decode_delivered,
    decode_enqueue,
    decode_seq,
)
from amqplite.store.snapshot import read_snapshot, remove_temp_files

log = logging.getLogger("amqplite.store")


@attrs.frozen
class RecoveredQueue:
    """The live messages of a queue after recovery, in queue order, and where its journal stands."""

    messages: list[StoredMessage]
    sizes: list[int]  # record bytes of each message (what the journal counts as live)
    next_seq: int
    last_segment: int
    segment_sizes: dict[int, int]
    live_bytes: int
    problems: list[str]


class _State:
    def __init__(self) -> None:
        self.live: dict[int, tuple[StoredMessage, int]] = {}  # seq -> (message, record size)
        self.counts: dict[int, int] = {}
        self.max_seq = -1

    def apply(self, record_type: int, payload: memoryview) -> None:
        if record_type == RecordType.ENQUEUE:
            message = decode_enqueue(payload)
            self.live[message.seq] = (message, len(payload) + 9)
            self.counts.pop(message.seq, None)
            self.max_seq = max(self.max_seq, message.seq)
        elif record_type == RecordType.REMOVE:
            seq = decode_seq(payload)
            self.live.pop(seq, None)
            self.counts.pop(seq, None)
        elif record_type == RecordType.DELIVERED:
            seq, count = decode_delivered(payload)
            if seq in self.live:
                self.counts[seq] = max(count, self.counts.get(seq, 0))


def recover_queue(directory: Path) -> RecoveredQueue:
    """Rebuild a queue's live messages from its snapshot and segments, repairing the files."""
    problems: list[str] = []
    state = _State()
    if not directory.is_dir():
        return RecoveredQueue([], [], 0, 0, {}, 0, problems)
    remove_temp_files(directory)
    covers = 0
    snapshot = read_snapshot(directory)
    if snapshot is not None:
        covers = snapshot.covers_through
        for record_type, payload, _ in snapshot.records:
            state.apply(record_type, payload)
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
        for record_type, payload, _ in found.records:
            state.apply(record_type, payload)
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
    for seq, count in state.counts.items():
        message, size = state.live[seq]
        state.live[seq] = (attrs.evolve(message, delivery_count=count), size)
    ordered = sorted(state.live.values(), key=lambda item: item[0].seq)
    return RecoveredQueue(
        [message for message, _ in ordered],
        [size for _, size in ordered],
        state.max_seq + 1,
        last,
        sizes,
        sum(size for _, size in ordered),
        problems,
    )
