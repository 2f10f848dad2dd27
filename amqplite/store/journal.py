"""Append-only segment files of one queue: buffered appends, written and synced by the committer."""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from amqplite.store.records import (
    FILE_HEADER,
    FileKind,
    LateEnqueue,
    StoreFileError,
    file_header,
    read_header,
    scan,
)

log = logging.getLogger("amqplite.store")

SEGMENT_SUFFIX = ".seg"


def segment_path(directory: Path, number: int) -> Path:
    """The file of segment `number`."""
    return directory / f"{number:010d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(number, path) of every segment file in the directory, oldest first."""
    found: list[tuple[int, Path]] = []
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        if path.suffix == SEGMENT_SUFFIX and path.stem.isdigit():
            found.append((int(path.stem), path))
    found.sort()
    return found


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.define(eq=False)
class SyncJob:
    """What one commit domain must make durable in a round; run() happens in a worker thread.

    The event loop only decides (which bytes go where); every write, open, fsync, close and
    removal is an operation of the job, run in order in the committer's worker thread.
    """

    ticket: int
    fsync: bool = True
    domain: Any = None  # the commit domain (store.commits.CommitDomain) this job completes
    ops: list[Callable[[SyncJob], None]] = attrs.field(factory=list)  # writes, opens, in order
    files: list[BinaryIO] = attrs.field(factory=list)
    dirs: set[Path] = attrs.field(factory=set)
    close_after: list[BinaryIO] = attrs.field(factory=list)
    remove_dirs: list[Path] = attrs.field(factory=list)
    after_sync: list[SyncTask] = attrs.field(factory=list)
    fsync_calls: int = 0
    bytes_written: int = 0
    sync_seconds: float = 0.0  # how long the fsyncs took (0 when fsync is off)

    def add_file(self, file: BinaryIO) -> None:
        """Sync this file (once, however often it was written)."""
        if not any(f is file for f in self.files):
            self.files.append(file)

    def write(self, file: BinaryIO, data: bytes | bytearray) -> None:
        """Write data to an open file in the worker thread, then sync it."""
        self.ops.append(partial(_write_op, file, data))

    def run(self) -> None:
        """Write, fsync the files and directories, then close, remove and snapshot (blocking)."""
        for op in self.ops:
            op(self)
        if self.fsync and (self.files or self.dirs):
            started = time.perf_counter()
            for file in self.files:
                os.fsync(file.fileno())
            for directory in self.dirs:
                fsync_dir(directory)
            self.sync_seconds = time.perf_counter() - started
            self.fsync_calls += len(self.files) + len(self.dirs)
        for file in self.close_after:
            file.close()
        for directory in self.remove_dirs:
            _remove_tree(directory)
            if self.fsync and directory.parent.exists():
                fsync_dir(directory.parent)
        for task in self.after_sync:
            task.run(self.fsync)


def _write_op(file: BinaryIO, data: bytes | bytearray, job: SyncJob) -> None:
    file.write(data)
    job.add_file(file)


class SyncTask:
    """Work that follows the fsync of a commit (snapshots)."""

    def run(self, fsync: bool) -> None:
        """Do the work in the committer's worker thread."""
        raise NotImplementedError


def _remove_tree(directory: Path) -> None:
    if not directory.exists():
        return
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


class SegmentWriter:
    """Appends records to numbered segment files of one directory, rotating at segment_bytes."""

    def __init__(self, directory: Path, next_number: int, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.buffer = bytearray()
        self.file: BinaryIO | None = None  # used by the worker thread only
        self.open = False  # a segment is open for appends (the loop's view)
        self.number = next_number - 1  # number of the open segment (none open yet)
        self.size = 0
        self.sizes: dict[int, int] = {}  # bytes of every segment on disk, by number
        self.tap: Callable[[bytes], None] | None = None  # sees every record (replication)
        # buffered bytes and records whose bodies the worker thread reads, before `buffer`
        self.late: list[bytearray | LateEnqueue] = []
        self.late_size = 0

    @property
    def bytes_on_disk(self) -> int:
        """Total size of the segments (what a snapshot would reclaim)."""
        return sum(self.sizes.values())

    def append(self, record: bytes) -> None:
        """Buffer a record; it reaches the file at the next write()."""
        self.buffer += record
        if self.tap is not None:
            self.tap(record)

    @property
    def pending(self) -> int:
        """Bytes buffered for the next write() (records made late included)."""
        return self.late_size + len(self.buffer)

    def append_late(self, record: LateEnqueue) -> None:
        """Buffer a record whose body the worker thread reads from disk at write time."""
        if self.tap is not None:  # replication sees every record as it is appended
            self.append(record.encode())
            return
        self.late.append(self.buffer)
        self.late.append(record)
        self.late_size += len(self.buffer) + record.size
        self.buffer = bytearray()

    def appended_in_place(self, size: int) -> None:
        """A record of `size` bytes was written straight to the end of the buffer: tap it too."""
        if self.tap is not None:
            self.tap(bytes(self.buffer[-size:]))

    def write(self, job: SyncJob) -> tuple[int, int]:
        """Hand the buffer to the job (rotating when full); the worker thread writes and syncs it.

        Returns (segment number, file offset) where the buffer lands ((0, 0) when it is empty).
        Only one job of a writer may be in flight: the loop keeps the sizes, the thread the file.
        """
        if not self.buffer and not self.late:
            return 0, 0
        if not self.open or self.size >= self.segment_bytes:
            self.rotate(job)
            self._open_next(job)
        base = self.size
        size = self.pending
        if self.late:
            pieces = [*self.late, self.buffer]
            self.late, self.late_size, self.buffer = [], 0, bytearray()
            job.ops.append(partial(self._write_late_op, pieces))
        else:
            data, self.buffer = self.buffer, bytearray()
            job.ops.append(partial(self._write_op, data))
        job.bytes_written += size
        self.size += size
        self.sizes[self.number] = self.size
        return self.number, base

    def rotate(self, job: SyncJob) -> int:
        """Retire the open segment (synced, then closed by the job); return the last number used."""
        if self.open:
            self.open = False
            job.ops.append(self._retire_op)
        return self.number

    def _open_next(self, job: SyncJob) -> None:
        self.number += 1
        header = file_header(FileKind.SEGMENT, self.number)
        job.ops.append(partial(self._open_op, segment_path(self.directory, self.number), header))
        self.open = True
        self.size = len(header)
        self.sizes[self.number] = self.size
        job.dirs.add(self.directory)
        job.dirs.add(self.directory.parent)

    # -- in the worker thread ------------------------------------------------------------

    def _open_op(self, path: Path, header: bytes, job: SyncJob) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by a SyncJob
        self.file.write(header)

    def _write_op(self, data: bytearray, job: SyncJob) -> None:
        assert self.file is not None
        self.file.write(data)
        job.add_file(self.file)

    def _write_late_op(self, pieces: list[bytearray | LateEnqueue], job: SyncJob) -> None:
        assert self.file is not None
        for piece in pieces:
            self.file.write(piece if isinstance(piece, bytearray) else piece.encode())
        job.add_file(self.file)

    def _retire_op(self, job: SyncJob) -> None:
        if self.file is not None:
            job.add_file(self.file)
            job.close_after.append(self.file)
            self.file = None


@attrs.frozen
class SegmentScan:
    """What replaying one segment found."""

    records: list[tuple[int, memoryview, int]]
    size: int
    problem: str | None
    problem_offset: int
    data: bytes | memoryview = b""  # the file's contents (mapped): recovery locates bodies in it


def map_file(path: Path) -> bytes | memoryview:
    """A file's contents, mapped read-only (pages stay in the page cache, not on the heap)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            return b""
        return memoryview(mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ))


def read_segment(path: Path) -> SegmentScan:
    """Read a segment's records; a bad header or a torn/corrupt record ends it with a problem."""
    data = map_file(path)
    try:
        read_header(data, FileKind.SEGMENT)
    except StoreFileError as exc:
        return SegmentScan([], len(data), f"bad segment header: {exc}", 0)
    result = scan(data, FILE_HEADER.size)
    return SegmentScan(result.records, len(data), result.problem, result.end, data)


def cut_tail(path: Path, offset: int) -> None:
    """Truncate a file at offset and make it durable."""
    with open(path, "r+b") as file:
        file.truncate(offset)
        file.flush()
        os.fsync(file.fileno())
