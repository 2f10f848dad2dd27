"""Bodies kept on disk: an open descriptor per journal file, read back with pread on delivery."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class BodyFile:
    """A read-only descriptor of a segment or snapshot; it outlives the file's name (unlink, rename)."""

    __slots__ = ("fd", "path", "retired")

    def __init__(self, path: Path, retired: list[int] | None = None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        # where the last reference leaves the descriptor, for the committer's worker thread to
        # close: closing the last descriptor of a deleted segment frees its blocks (slow)
        self.retired = retired

    def read(self, offset: int, length: int) -> bytes:
        """length bytes at offset (thread-safe: pread does not move a file position)."""
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise OSError(
                f"{self.path}: short read of a body ({len(data)} of {length} at {offset})"
            )
        return data

    def close(self) -> None:
        """Close the descriptor now (it is also closed when the last reference goes)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        if self.fd >= 0 and self.retired is not None:
            self.retired.append(self.fd)  # list.append is atomic: any thread may drop the last ref
            self.fd = -1
        else:
            self.close()


def close_descriptors(fds: list[int]) -> None:
    """Close retired descriptors (in the committer's worker thread)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class BodyRef:
    """One body's place in a BodyFile (implements broker.message.BodyLocation)."""

    __slots__ = ("file", "length", "offset")

    def __init__(self, file: BodyFile, offset: int, length: int) -> None:
        self.file = file
        self.offset = offset
        self.length = length

    def read(self) -> bytes:
        """The body."""
        return self.file.read(self.offset, self.length)
