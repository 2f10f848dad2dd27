"""Queue snapshots: live messages to a temp file, fsync, rename, fsync the directory, drop old segments."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import attrs

from amqplite.store.journal import fsync_dir, list_segments, map_file
from amqplite.store.records import (
    FILE_HEADER,
    FileKind,
    RecordType,
    StoreFileError,
    encode_snapshot_end,
    file_header,
    read_header,
    scan,
)

log = logging.getLogger("amqplite.store")

SNAPSHOT_NAME = "snapshot.snap"
TMP_SUFFIX = ".tmp"

STEPS = ("written", "synced", "renamed", "dir_synced", "segment_deleted")
"""The steps of write_snapshot, in order; tests interrupt it after each one."""


class SnapshotInterrupted(Exception):
    """Raised by write_snapshot when a test asks it to stop after a step (simulated crash)."""


def write_snapshot(
    directory: Path,
    covers_through: int,
    records: Iterable[bytes],
    *,
    fsync: bool = True,
    stop_after: str | None = None,
) -> int:
    """Write a snapshot covering segments <= covers_through, then delete them; bytes reclaimed."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / SNAPSHOT_NAME
    tmp = directory / (SNAPSHOT_NAME + TMP_SUFFIX)
    count = 0
    with open(tmp, "wb") as file:
        file.write(file_header(FileKind.SNAPSHOT, covers_through))
        for record in records:
            file.write(record)
            count += 1
        file.write(encode_snapshot_end(count))
        file.flush()
        _stop(stop_after, "written")
        if fsync:
            os.fsync(file.fileno())
    _stop(stop_after, "synced")
    os.replace(tmp, final)
    _stop(stop_after, "renamed")
    if fsync:
        fsync_dir(directory)
    _stop(stop_after, "dir_synced")
    reclaimed = 0
    for number, path in list_segments(directory):
        if number <= covers_through:
            reclaimed += path.stat().st_size
            path.unlink()
            _stop(stop_after, "segment_deleted")
    if fsync and reclaimed:
        fsync_dir(directory)
    return reclaimed


def _stop(stop_after: str | None, step: str) -> None:
    if stop_after == step:
        raise SnapshotInterrupted(step)


@attrs.frozen
class SnapshotScan:
    """A snapshot as read back: its records, the segments it covers, and what was wrong with it."""

    records: list[tuple[int, memoryview, int]]
    covers_through: int
    problem: str | None
    data: bytes | memoryview = b""  # the file's contents (mapped): recovery locates bodies in it


def read_snapshot(directory: Path) -> SnapshotScan | None:
    """The directory's snapshot (None if there is none); a damaged one keeps what reads cleanly."""
    path = directory / SNAPSHOT_NAME
    if not path.exists():
        return None
    data = map_file(path)
    try:
        covers = read_header(data, FileKind.SNAPSHOT)
    except StoreFileError as exc:
        return SnapshotScan([], 0, f"bad snapshot header: {exc}")
    result = scan(data, FILE_HEADER.size)
    records = result.records
    problem = result.problem
    if problem is None and (not records or records[-1][0] != RecordType.SNAPSHOT_END):
        problem = "snapshot has no end record"
    elif problem is not None:
        problem = f"{problem} at offset {result.end}"
    if records and records[-1][0] == RecordType.SNAPSHOT_END:
        records = records[:-1]
    return SnapshotScan(records, covers, problem, data)


def remove_temp_files(directory: Path) -> None:
    """Delete leftovers of interrupted snapshots (never renamed, so never trusted)."""
    for path in directory.glob("*" + TMP_SUFFIX):
        log.info("removing unfinished snapshot %s", path)
        path.unlink()
