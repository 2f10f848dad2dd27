"""Reading a stream in a worker thread: the committed part of its segments, by offset,
timestamp and filter; a segment swapped by compaction mid-read is read again."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import attrs

from amqplite.store.records import RECORD_HEAD, RecordType
from amqplite.store.stream_records import (
    IDX,
    READ_CHUNK,
    SEG,
    Segment,
    StreamEntry,
    decode_message,
    filter_hash,
    search_index,
    segment_file,
)


@attrs.frozen
class ReadResult:
    """Messages read from a stream and where the next read starts."""

    entries: list[StreamEntry]
    next_offset: int


@attrs.frozen
class StreamView:
    """The committed part of a stream, as a worker thread reads it."""

    directory: Path
    parts: tuple[tuple[int, int, Segment], ...]  # (first, readable end, summary)
    bound: int

    @property
    def first(self) -> int:
        """The first readable offset."""
        return self.parts[0][0] if self.parts else self.bound

    def offset_at(self, timestamp_ms: int) -> int:
        """The first offset stamped at or after timestamp_ms (bound when none)."""
        for first, end, segment in self.parts:
            if segment.last_ts < timestamp_ms or end <= first:
                continue
            found = search_index(segment_file(self.directory, first, IDX), timestamp_ms, 1)
            if found is not None and found[0] < end:
                return int(found[0])
        return self.bound

    def read(
        self,
        start: int,
        max_count: int,
        filters: frozenset[str] | None = None,
        unfiltered: bool = False,
    ) -> ReadResult:
        """Up to max_count messages from offset start (filtered: only these filter values)."""
        found: list[StreamEntry] = []
        hashes = None if filters is None else frozenset(filter_hash(v) for v in filters)
        position = max(start, self.first)
        for first, end, segment in self.parts:
            if end <= position or len(found) >= max_count:
                continue
            if hashes is not None and not segment.may_hold(hashes, unfiltered):
                position = end  # the summary says nothing here is for this consumer
                continue
            try:
                for entry in _read_retrying(self.directory, first, end, position):
                    position = entry.offset + 1
                    if hashes is not None and not (
                        entry.filter_hash in hashes or (unfiltered and not entry.filter_hash)
                    ):
                        continue
                    found.append(entry)
                    if len(found) >= max_count:
                        break
                else:
                    position = max(position, end)
            except (FileNotFoundError, StaleIndex):  # deleted or swapped meanwhile: go on after it
                position = max(position, end)
        return ReadResult(found, min(max(position, start), self.bound))


def _read_retrying(directory: Path, first: int, end: int, start: int) -> Iterator[StreamEntry]:
    """read_segment_entries, read again when compaction swapped the segment mid-read."""
    for attempt in range(3):
        try:
            yield from read_segment_entries(directory, first, end, start)
            return
        except StaleIndex:
            if attempt == 2:
                raise


class StaleIndex(Exception):
    """A segment's index and data disagree: it was swapped by compaction meanwhile."""


def read_segment_entries(
    directory: Path, first: int, end: int, start: int
) -> Iterator[StreamEntry]:
    """The messages of one segment from offset start up to (not including) end.

    StaleIndex when the first record read is not the one the index promised (nothing yielded).
    """
    found = search_index(segment_file(directory, first, IDX), start, 0)
    if found is None or found[0] >= end:
        return
    expected, _, position, _ = found
    with open(segment_file(directory, first, SEG), "rb") as file:
        file.seek(position)
        buffer = b""
        at = 0
        yielded = False
        while True:
            if len(buffer) - at < 8:
                more = file.read(READ_CHUNK)
                if not more:
                    break
                buffer, at = buffer[at:] + more, 0
                continue
            length, crc = RECORD_HEAD.unpack_from(buffer, at)
            need = 8 + length
            if len(buffer) - at < need:
                more = file.read(max(READ_CHUNK, need))
                if not more:
                    break
                buffer, at = buffer[at:] + more, 0
                continue
            record = memoryview(buffer)[at + 8 : at + need]
            if zlib.crc32(record) != crc:
                break
            at += need
            if record[0] != RecordType.STREAM_MESSAGE:
                continue
            entry = decode_message(record[1:])
            if not yielded and entry.offset != expected:
                break
            if entry.offset >= end:
                return
            if entry.offset >= start:
                yielded = True
                yield entry
        if not yielded:
            raise StaleIndex(f"segment {first} does not hold offset {expected} where indexed")
