"""Held messages on disk: append-only segment files of one exchange, written by the metadata commit.

A plugin that holds messages back (delayed_message) keeps only (due time, handle) in memory; the
record (due time and the encoded message) is appended here and read back when it is released.
Records reach the disk in the metadata domain's commit job (the committer's worker thread), so a
publish that spooled a durable record is confirmed only once that record is on disk. A record
is forgotten by overwriting its flag byte in place; that write waits until the records its
release produced (the queue journals' enqueues) are committed, so a crash can repeat a release
but never lose one. A segment with no live record left is deleted; the next boot starts a new
segment and keeps the live durable records of the old ones (transient records are dropped).

Record: flag (1 durable, 2 transient, 0 gone), payload length, crc32 of due+payload, due (POSIX
ms), payload. A handle is segment number << 40 | offset, so handles sort in append order.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

from amqplite.store.journal import SyncJob, fsync_dir

log = logging.getLogger("amqplite.store")

SPOOL_DIR: Final = "spool"
SEGMENT_BYTES: Final = 64 * 1024 * 1024
HEAD: Final = struct.Struct(">BIIq")  # flag, payload length, crc32(due + payload), due ms
DURABLE, TRANSIENT, GONE = 1, 2, 0
SHIFT: Final = 40
SUFFIX: Final = ".spool"
TRASH: Final = ".deleted-"

Mark = tuple[tuple[Any, int], ...]
"""(commit domain, ticket) pairs, as store.commits hands them out."""


class SpoolOwner(Protocol):
    """What a spool needs of its store: commit tickets and the domains records went to."""

    def appended(self, journal: None) -> None:
        """A metadata-domain record was appended (confirms wait for it)."""

    def touched(self, journal: None) -> None:
        """Something needs writing at the next commit."""

    def watch(self) -> Any:
        """Start noting the domains appended to."""

    def watched(self, outer: Any) -> Mark | None:
        """What the records appended since watch() need."""


def _durable(mark: Mark | None) -> bool:
    return mark is None or all(domain.committed >= ticket for domain, ticket in mark)


def spool_directory(root: Path, vhost: str, exchange: str, durable: bool) -> Path:
    """The directory of one exchange's spool (a hash of its names; "t-" for transient ones)."""
    digest = hashlib.sha1(f"{vhost}\0{exchange}".encode()).hexdigest()[:20]
    return root / SPOOL_DIR / (("d-" if durable else "t-") + digest)


def remove_transient_spools(root: Path) -> None:
    """At boot: the spools of transient exchanges hold nothing that outlives the process."""
    base = root / SPOOL_DIR
    if base.is_dir():
        for path in base.iterdir():
            if path.name.startswith("t-") or TRASH in path.name:
                shutil.rmtree(path, ignore_errors=True)


def _segments(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(
        int(p.stem) for p in directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit()
    )


class Spool:
    """One exchange's held messages on disk (implements broker.durability.HeldSpool)."""

    def __init__(self, directory: Path, owner: SpoolOwner, durable: bool) -> None:
        self.directory = directory
        self.owner = owner
        self.durable = durable
        self.live: dict[int, int] = {}  # segment -> live records
        self.restored: list[tuple[int, int]] = []  # (handle, due ms) found at open
        self.closed = False
        self._readers: dict[int, int] = {}  # segment -> read-only descriptor
        self._chunks: list[tuple[int, int, bytearray]] = []  # (segment, offset, bytes) unwritten
        self._inflight: list[tuple[int, int, bytearray]] = []  # handed to the running job
        self._waiting: list[
            tuple[Mark | None, int]
        ] = []  # releases whose records may not be on disk
        found = _segments(directory) if durable else []
        if not durable and directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        for number in found:
            self._scan(number)
        self.number = (found[-1] + 1) if found else 0
        self.size = 0

    # -- the event loop's side --------------------------------------------------------------

    def append(self, due_ms: int, payload: bytes, durable: bool) -> int:
        """Spool one record; a durable one takes a metadata ticket (its confirm waits for it)."""
        if self.size >= SEGMENT_BYTES:
            self.number += 1
            self.size = 0
        crc = zlib.crc32(payload, zlib.crc32(struct.pack(">q", due_ms)))
        flag = DURABLE if durable and self.durable else TRANSIENT
        record = HEAD.pack(flag, len(payload), crc, due_ms) + payload
        handle = self.number << SHIFT | self.size
        chunks = self._chunks
        if chunks and chunks[-1][0] == self.number:
            chunks[-1][2].extend(record)
        else:
            chunks.append((self.number, self.size, bytearray(record)))
        self.size += len(record)
        self.live[self.number] = self.live.get(self.number, 0) + 1
        if flag == DURABLE:
            self.owner.appended(None)
        else:
            self.owner.touched(None)
        return handle

    def read(self, handle: int) -> tuple[int, bytes]:
        """(due ms, payload) of a record (from memory while it is not written yet)."""
        number, offset = handle >> SHIFT, handle & ((1 << SHIFT) - 1)
        for chunks in (self._chunks, self._inflight):
            for segment, base, data in chunks:
                if segment == number and base <= offset < base + len(data):
                    at = offset - base
                    _, length, _, due = HEAD.unpack_from(data, at)
                    return due, bytes(data[at + HEAD.size : at + HEAD.size + length])
        fd = self._reader(number)
        head = os.pread(fd, HEAD.size, offset)
        _, length, _, due = HEAD.unpack(head)
        return due, os.pread(fd, length, offset + HEAD.size)

    def release(self, handle: int, route: Callable[[], None]) -> None:
        """Run route() (it enqueues the message); forget the record once that is on disk."""
        outer = self.owner.watch()
        try:
            route()
        finally:
            mark = self.owner.watched(outer)
        self._forget(handle, mark)

    def cancel(self, handle: int) -> None:
        """Forget a record at the next commit."""
        self._forget(handle, None)

    def _forget(self, handle: int, mark: Mark | None) -> None:
        number = handle >> SHIFT
        self.live[number] -= 1
        self._waiting.append((mark, handle))
        self.owner.touched(None)

    @property
    def waiting(self) -> bool:
        """True while a release waits for its records to commit before it is forgotten."""
        return bool(self._waiting)

    @property
    def dirty(self) -> bool:
        """True when the next commit has something to write for this spool."""
        if self._chunks or any(count == 0 for count in self.live.values()):
            return True
        return any(_durable(mark) for mark, _ in self._waiting)

    def clear(self) -> Path | None:
        """The exchange is gone: forget everything; the directory moves aside (returned) at once,
        so an exchange declared again under the name starts empty, and goes at the next commit."""
        self.closed = True
        self._chunks.clear()
        self._waiting.clear()
        self.live.clear()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if not self.directory.exists():
            return None
        trash = self.directory.with_name(f"{self.directory.name}{TRASH}{id(self):x}")
        self.directory.rename(trash)
        return trash

    def write(self, job: SyncJob) -> None:
        """Hand the unwritten records, forgotten handles and empty segments to a commit job."""
        self._inflight = self._chunks
        self._chunks = []
        for segment, _offset, data in self._inflight:
            job.ops.append(partial(self._append_op, segment, data))
            job.bytes_written += len(data)
        keep: list[tuple[Mark | None, int]] = []
        flips: dict[int, list[int]] = {}
        for mark, handle in self._waiting:
            if _durable(mark):
                flips.setdefault(handle >> SHIFT, []).append(handle & ((1 << SHIFT) - 1))
            else:
                keep.append((mark, handle))
        self._waiting = keep
        waiting_segments = {handle >> SHIFT for _, handle in keep}
        unlinked = False
        for segment, count in list(self.live.items()):
            if count == 0 and segment not in waiting_segments:
                del self.live[segment]
                flips.pop(segment, None)
                fd = self._readers.pop(segment, None)
                if fd is not None:
                    os.close(fd)
                job.ops.append(partial(self._unlink_op, segment))
                unlinked = True
                if segment == self.number:  # appends go on in a new segment
                    self.number += 1
                    self.size = 0
        for segment, offsets in flips.items():
            job.ops.append(partial(self._flip_op, segment, offsets))
        if self._inflight or unlinked:
            job.dirs.add(self.directory)
            job.dirs.add(self.directory.parent)

    # -- the worker thread's side -------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}{SUFFIX}"

    def _append_op(self, segment: int, data: bytearray, job: SyncJob) -> None:
        if self.closed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._path(segment), "ab", buffering=0) as file:
            file.write(data)
            if job.fsync:
                os.fsync(file.fileno())
                job.fsync_calls += 1

    def _flip_op(self, segment: int, offsets: Sequence[int], job: SyncJob) -> None:
        if self.closed:
            return
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self._path(segment), os.O_WRONLY)
            try:
                for offset in offsets:
                    os.pwrite(fd, b"\0", offset)
                if job.fsync:
                    os.fsync(fd)
                    job.fsync_calls += 1
            finally:
                os.close(fd)

    def _unlink_op(self, segment: int, job: SyncJob) -> None:
        if self.closed:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(segment).unlink()

    # -- open --------------------------------------------------------------------------------

    def _reader(self, segment: int) -> int:
        fd = self._readers.get(segment)
        if fd is None:
            fd = self._readers[segment] = os.open(self._path(segment), os.O_RDONLY)
        return fd

    def _scan(self, number: int) -> None:
        """Keep the live durable records of a segment from before; delete it if none is left."""
        path = self._path(number)
        data = path.read_bytes()
        offset, live = 0, 0
        while offset + HEAD.size <= len(data):
            flag, length, crc, due = HEAD.unpack_from(data, offset)
            end = offset + HEAD.size + length
            if end > len(data) or flag not in (DURABLE, TRANSIENT, GONE):
                break  # a torn tail: never confirmed
            payload = data[offset + HEAD.size : end]
            if zlib.crc32(payload, zlib.crc32(struct.pack(">q", due))) != crc:
                log.warning(
                    "%s: bad record at %d, the rest of the segment is dropped", path, offset
                )
                break
            if flag == DURABLE:
                self.restored.append((number << SHIFT | offset, due))
                live += 1
            offset = end
        if live:
            self.live[number] = live
        else:
            path.unlink()
            fsync_dir(self.directory)
