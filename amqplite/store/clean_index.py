"""The clean-shutdown index of a queue snapshot: every live message as one fixed-size entry.

Written at a graceful shutdown beside the snapshot it describes, so that the next boot rebuilds a
queue without scanning and decoding the snapshot's records; bodies stay in the snapshot and are read
when needed. Used only after a clean shutdown, and only when it matches the snapshot exactly.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import attrs

from amqplite.store.bodies import BodyFile, BodyRef
from amqplite.store.interface import JournaledMessage, RecoveredMessage
from amqplite.store.journal import fsync_dir, list_segments
from amqplite.store.records import LocatedMessage
from amqplite.store.snapshot import SNAPSHOT_NAME

INDEX_NAME = "snapshot.idx"
_MAGIC = b"AQLTIDX1"
_HEADER = struct.Struct(
    ">8sQQQI"
)  # magic, snapshot covers_through, snapshot size, entries, strings
_ENTRY = struct.Struct(">QIBqdQIIIII")
# seq, delivery count, priority, expiration ms (-1: none), TTL deadline (POSIX ms, NaN: none),
# body offset in the snapshot, body length, record bytes, exchange, routing key, properties (strings)
_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")


@attrs.frozen(slots=False)
class CleanIndex:
    """A loaded index: its entries (still packed) and the string table they point into."""

    covers_through: int
    entries: bytes
    strings: list[bytes]

    def __len__(self) -> int:
        return len(self.entries) // _ENTRY.size

    @property
    def next_seq(self) -> int:
        """One past the highest sequence number in the index."""
        if not self.entries:
            return 0
        return int(_ENTRY.unpack_from(self.entries, len(self.entries) - _ENTRY.size)[0]) + 1

    def places(self) -> Iterator[tuple[int, int, float | None, int]]:
        """(seq, delivery count, TTL deadline or None, where its ENQUEUE record starts in the
        snapshot) in queue order: what journal replay needs to start from the snapshot."""
        for seq, count, _, _, deadline, offset, length, size, _, _, _ in _ENTRY.iter_unpack(
            self.entries
        ):
            yield seq, count, None if deadline != deadline else deadline, offset + length - size

    def entry(self, number: int) -> tuple[LocatedMessage, int, float | None]:
        """Entry `number`: the message with its body located in the snapshot, its record bytes
        and TTL deadline (what crash recovery takes instead of decoding the record)."""
        seq, count, prio, exp, deadline, offset, length, size, ex, rk, props = _ENTRY.unpack_from(
            self.entries, number * _ENTRY.size
        )
        strings = self.strings
        located = (
            seq,
            count,
            prio,
            None if exp < 0 else exp,
            self.names[ex],
            self.names[rk],
            strings[props],
            offset,
            length,
        )
        return located, size, None if deadline != deadline else deadline

    @functools.cached_property
    def names(self) -> list[str]:
        """The string table as text (exchange names and routing keys, lossless)."""
        return [s.decode("utf-8", "surrogateescape") for s in self.strings]

    def messages(
        self, file: BodyFile, data: bytes | memoryview, crashed: bool, room: int
    ) -> Iterator[RecoveredMessage]:
        """The messages in queue order: bodies copied from the snapshot (data) while they fit in
        room bytes, then only located in it (file)."""
        raw = self.strings
        names = [s.decode("utf-8", "surrogateescape") for s in raw]
        small: dict[int, int] = {}  # one object per distinct length (millions of them alike)
        nan = math.isnan
        for (
            seq,
            count,
            prio,
            exp,
            deadline,
            offset,
            length,
            size,
            ex,
            rk,
            props,
        ) in _ENTRY.iter_unpack(self.entries):
            if crashed and not count:
                count = 1  # may have been delivered before the crash
            body: bytes | BodyRef
            if length <= room:
                room -= length
                body = bytes(data[offset : offset + length])
            else:
                body = BodyRef(file, offset, small.setdefault(length, length))
                size = -small.setdefault(size, size)
            yield (
                seq,
                count,
                prio,
                None if exp < 0 else exp,
                None if nan(deadline) else deadline,
                names[ex],
                names[rk],
                raw[props],
                body,
                size,
            )


def write_index(
    directory: Path,
    covers_through: int,
    items: list[tuple[int, int, JournaledMessage]],
    body_offsets: list[int],
    record_sizes: list[int],
    deadlines: dict[int, float],
    fsync: bool,
) -> None:
    """Describe the snapshot just written in directory (tmp, fsync, rename, fsync the directory)."""
    snapshot_size = (directory / SNAPSHOT_NAME).stat().st_size
    strings: dict[bytes, int] = {}
    entries = bytearray()
    pack = _ENTRY.pack
    for (seq, count, message), offset, size in zip(items, body_offsets, record_sizes, strict=True):
        ex = message.exchange.encode("utf-8", "surrogateescape")
        rk = message.routing_key.encode("utf-8", "surrogateescape")
        props = message.properties_bin
        expiration = message.expiration_ms
        entries += pack(
            seq,
            count,
            message.priority & 0xFF,
            -1 if expiration is None else expiration,
            deadlines.get(seq, math.nan),
            offset,
            message.size,
            size,
            strings.setdefault(ex, len(strings)),
            strings.setdefault(rk, len(strings)),
            strings.setdefault(props, len(strings)),
        )
    parts = [_HEADER.pack(_MAGIC, covers_through, snapshot_size, len(items), len(strings))]
    parts.extend(_LENGTH.pack(len(s)) + s for s in strings)
    parts.append(bytes(entries))
    data = b"".join(parts)
    tmp = directory / (INDEX_NAME + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.write(_CRC.pack(zlib.crc32(data)))
        file.flush()
        if fsync:
            os.fsync(file.fileno())
    os.replace(tmp, directory / INDEX_NAME)
    if fsync:
        fsync_dir(directory)


def read_index(directory: Path, *, with_segments: bool = False) -> CleanIndex | None:
    """The index, if it describes the snapshot exactly and (unless with_segments) no segment
    followed it; else None."""
    path = directory / INDEX_NAME
    snapshot = directory / SNAPSHOT_NAME
    if not path.exists() or not snapshot.exists():
        return None
    if not with_segments and list_segments(directory):
        return None
    data = path.read_bytes()
    if len(data) < _HEADER.size + _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    body = memoryview(data)[: len(data) - _CRC.size]
    if zlib.crc32(body) != crc:
        return None
    magic, covers, snapshot_size, count, string_count = _HEADER.unpack_from(body, 0)
    if magic != _MAGIC or snapshot.stat().st_size != snapshot_size:
        return None
    offset = _HEADER.size
    strings: list[bytes] = []
    for _ in range(string_count):
        (length,) = _LENGTH.unpack_from(body, offset)
        strings.append(bytes(body[offset + 4 : offset + 4 + length]))
        offset += 4 + length
    entries = bytes(body[offset:])
    if len(entries) != count * _ENTRY.size:
        return None
    return CleanIndex(covers, entries, strings)


def remove_index(directory: Path) -> None:
    """Forget the index (the queue's state moves on from the snapshot it describes)."""
    path = directory / INDEX_NAME
    if path.exists():
        path.unlink()
