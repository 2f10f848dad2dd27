"""A stream's records and files: message and offset-tracking records, index entries, segments.

Shared by the stream log (store/stream_log.py), its readers (store/stream_reader.py) and
compaction (store/stream_compaction.py).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from amqplite.store.records import FILE_HEADER, RECORD_HEAD, RecordType, frame

SEG: Final = ".seg"
IDX: Final = ".idx"
INDEX_ENTRY: Final = struct.Struct(">QqQI")  # offset, timestamp ms, record position, filter hash
MESSAGE_HEAD = struct.Struct(">QqI")  # offset, timestamp ms, filter hash
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
MAX_SUMMARY: Final = 4096  # distinct filter hashes kept per segment (beyond: "may hold anything")
READ_CHUNK: Final = 1 << 20
DEFAULT_SEGMENT_BYTES: Final = 500_000_000  # RabbitMQ's x-stream-max-segment-size-bytes default


def is_stream(arguments: Mapping[str, Any]) -> bool:
    """True when queue arguments declare a stream queue."""
    return arguments.get("x-queue-type") == "stream"


def filter_hash(value: str | None) -> int:
    """The 32-bit summary of a filter value (0: the message has none)."""
    if not value:
        return 0
    return zlib.crc32(value.encode()) or 1


@attrs.frozen
class StreamEntry:
    """One message read back from a stream."""

    offset: int
    timestamp_ms: int
    exchange: str
    routing_key: str
    properties_bin: bytes
    body: bytes
    filter_hash: int


def encode_message(
    offset: int,
    timestamp_ms: int,
    hashed: int,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    body: bytes,
) -> bytes:
    """A STREAM_MESSAGE record."""
    ex, rk = exchange.encode(), routing_key.encode()
    payload = b"".join(
        (
            MESSAGE_HEAD.pack(offset, timestamp_ms, hashed),
            _U16.pack(len(ex)),
            ex,
            _U16.pack(len(rk)),
            rk,
            _U32.pack(len(properties_bin)),
            properties_bin,
            body,
        )
    )
    return frame(RecordType.STREAM_MESSAGE, payload)


def decode_message(payload: memoryview) -> StreamEntry:
    """A STREAM_MESSAGE record's fields."""
    offset, timestamp, hashed = MESSAGE_HEAD.unpack_from(payload, 0)
    at = MESSAGE_HEAD.size
    (n,) = _U16.unpack_from(payload, at)
    exchange = bytes(payload[at + 2 : at + 2 + n]).decode()
    at += 2 + n
    (n,) = _U16.unpack_from(payload, at)
    routing_key = bytes(payload[at + 2 : at + 2 + n]).decode()
    at += 2 + n
    (n,) = _U32.unpack_from(payload, at)
    props = bytes(payload[at + 4 : at + 4 + n])
    body = bytes(payload[at + 4 + n :])
    return StreamEntry(offset, timestamp, exchange, routing_key, props, body, hashed)


def encode_track(name: str, offset: int) -> bytes:
    """A STREAM_TRACK record: a named consumer's last acked offset."""
    return frame(RecordType.STREAM_TRACK, _U64.pack(offset) + name.encode())


def decode_track(payload: memoryview) -> tuple[str, int]:
    """A STREAM_TRACK record's (name, offset)."""
    return bytes(payload[8:]).decode(), _U64.unpack_from(payload, 0)[0]


def segment_file(directory: Path, first: int, suffix: str) -> Path:
    """The segment (or index) file whose first offset is `first`."""
    return directory / f"{first:020d}{suffix}"


@attrs.define(eq=False)
class Segment:
    """What memory keeps of one segment: its offsets, times, size and filter summary."""

    first: int  # the first offset it may hold (its name)
    next: int  # one past its last message
    first_ts: int = 0
    last_ts: int = 0
    size: int = FILE_HEADER.size
    closed: bool = False
    hashes: set[int] | None = attrs.field(factory=set)  # None: too many to summarise
    unfiltered: bool = False  # holds messages without a filter value

    def note(self, offset: int, timestamp: int, hashed: int) -> None:
        """A message joined the segment."""
        if self.next == self.first:
            self.first_ts = timestamp
        self.last_ts = max(self.last_ts, timestamp)
        self.next = offset + 1
        if not hashed:
            self.unfiltered = True
        elif self.hashes is not None:
            self.hashes.add(hashed)
            if len(self.hashes) > MAX_SUMMARY:
                self.hashes = None

    def may_hold(self, hashes: frozenset[int], unfiltered: bool) -> bool:
        """False when the summary proves no message of the segment matches the filter."""
        if unfiltered and self.unfiltered:
            return True
        return self.hashes is None or not self.hashes.isdisjoint(hashes)


def offset_at(data: bytes | memoryview, position: int) -> int | None:
    """The offset of the intact message record at a position of a segment (None: none there)."""
    if position + RECORD_HEAD.size + 1 + MESSAGE_HEAD.size > len(data):
        return None
    length, crc = RECORD_HEAD.unpack_from(data, position)
    body = data[position + RECORD_HEAD.size : position + RECORD_HEAD.size + length]
    if len(body) != length or zlib.crc32(body) != crc or body[0] != RecordType.STREAM_MESSAGE:
        return None
    return int(_U64.unpack_from(body, 1)[0])


def search_index(path: Path, value: int, field: int) -> tuple[int, int, int, int] | None:
    """The first index entry whose field (0: offset, 1: timestamp) is >= value: a binary
    search with one small read per step, never the whole index in memory."""
    size = INDEX_ENTRY.size
    with open(path, "rb") as file:
        count = os.fstat(file.fileno()).st_size // size
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            entry = INDEX_ENTRY.unpack(os.pread(file.fileno(), size, middle * size))
            if entry[field] < value:
                low = middle + 1
            else:
                high = middle
        if low >= count:
            return None
        found: tuple[int, int, int, int] = INDEX_ENTRY.unpack(
            os.pread(file.fileno(), size, low * size)
        )
        return found


def read_index(path: Path) -> list[tuple[int, int, int, int]]:
    """Every entry of an index file (a torn last entry is ignored)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    usable = len(data) - len(data) % INDEX_ENTRY.size
    return list(INDEX_ENTRY.iter_unpack(data[:usable]))
