"""Compaction of a stream's closed segments: only the newest message of each key stays.

Runs in a worker thread, never on the loop and never on the segment appends go to: it scans the
committed stream for the newest offset of every key (a header named by `x-stream-compaction`, or
the routing key), rewrites each closed segment that holds superseded messages (or tombstones, empty
bodies, older than the tombstone age) to temporary files, fsyncs them and renames them over the
originals. A reader that meets a segment mid-swap sees its index disagree and reads it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

from amqplite.protocol.properties import read_facts
from amqplite.store.journal import fsync_dir
from amqplite.store.records import FILE_HEADER, FileKind, file_header
from amqplite.store.stream_reader import read_segment_entries
from amqplite.store.stream_records import (
    IDX,
    INDEX_ENTRY,
    SEG,
    StreamEntry,
    encode_message,
    segment_file,
)

ROUTING_KEY: Final = "routing-key"  # x-stream-compaction value: compact by the routing key


def key_of(entry: StreamEntry, key: str) -> str | None:
    """The compaction key of a message (None: it has none, and is kept)."""
    if key == ROUTING_KEY:
        return entry.routing_key
    headers = read_facts(entry.properties_bin).headers or {}
    value = headers.get(key)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


@attrs.define(eq=False)
class CompactionPlan:
    """One compaction of a stream: what to scan, what to rewrite, and what it did."""

    directory: Path
    parts: list[tuple[int, int]]  # every committed segment: (first offset, end offset)
    closed: list[tuple[int, int]]  # the closed segments it may rewrite
    key: str
    now_ms: int
    tombstone_ms: int
    fsync: bool = True
    sizes: dict[int, int] = attrs.field(factory=dict)  # first offset -> new size, rewritten ones
    removed: int = 0  # messages dropped

    def run(self) -> None:
        """Find the newest offset of each key, then rewrite the closed segments (blocking)."""
        newest: dict[str, int] = {}
        for first, end in self.parts:
            for entry in read_segment_entries(self.directory, first, end, first):
                key = key_of(entry, self.key)
                if key is not None:
                    newest[key] = entry.offset
        expired = self.now_ms - self.tombstone_ms
        for first, end in self.closed:
            kept: list[StreamEntry] = []
            dropped = 0
            for entry in read_segment_entries(self.directory, first, end, first):
                key = key_of(entry, self.key)
                stale = key is not None and newest.get(key) != entry.offset
                dead = key is not None and not entry.body and entry.timestamp_ms < expired
                if stale or dead:
                    dropped += 1
                else:
                    kept.append(entry)
            if dropped:
                self.sizes[first] = self._rewrite(first, kept)
                self.removed += dropped

    def _rewrite(self, first: int, kept: list[StreamEntry]) -> int:
        """Write the kept messages as the segment's new files; the new segment's size."""
        seg, idx = (
            segment_file(self.directory, first, SEG),
            segment_file(self.directory, first, IDX),
        )
        seg_tmp, idx_tmp = seg.with_suffix(".seg.tmp"), idx.with_suffix(".idx.tmp")
        data = bytearray(file_header(FileKind.SEGMENT, first))
        index = bytearray()
        for e in kept:
            index += INDEX_ENTRY.pack(e.offset, e.timestamp_ms, len(data), e.filter_hash)
            data += encode_message(
                e.offset,
                e.timestamp_ms,
                e.filter_hash,
                e.exchange,
                e.routing_key,
                e.properties_bin,
                e.body,
            )
        for path, content in ((seg_tmp, data), (idx_tmp, index)):
            with open(path, "wb") as file:
                file.write(content)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
        os.replace(seg_tmp, seg)
        os.replace(idx_tmp, idx)
        if self.fsync:
            fsync_dir(self.directory)
        return max(len(data), FILE_HEADER.size)
