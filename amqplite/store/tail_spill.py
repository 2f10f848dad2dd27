"""Runs of a paged queue tail on disk: appended to unlinked spill files, read back by range."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from amqplite.store.bodies import BodyRef, close_descriptors
from amqplite.store.transient import FILE_BYTES, SpillFile

TAIL_SUFFIX: Final = "tail"


class TailFiles:
    """Unlinked, never-fsynced files that paged queue tails are appended to (worker thread).

    Each written run is a BodyRef (file, offset, length): a file's descriptor closes once no
    run in it is referenced (its blocks are freed then), off the event loop as retired ones.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: SpillFile | None = None
        self._number = 0
        self._retired: list[int] = []  # read descriptors no run uses any more
        self.written = 0  # bytes written, all time
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, runs: list[bytes]) -> list[BodyRef]:
        """Append runs (worker thread); where each went."""
        placed: list[BodyRef] = []
        for run in runs:
            file = self._writable()
            offset = file.append([run])
            placed.append(BodyRef(file.reader, offset, len(run)))
            self.written += len(run)
        return placed

    def _writable(self) -> SpillFile:
        file = self._file
        if file is None or file.size >= FILE_BYTES:
            if file is not None:
                file.close()
            self._number += 1
            file = self._file = SpillFile(self.directory, self._number, self._retired, TAIL_SUFFIX)
        return file

    @property
    def has_retired(self) -> bool:
        """True when descriptors wait to be closed."""
        return bool(self._retired)

    def take_retired(self) -> list[int]:
        """Descriptors of files no run uses any more (closing one frees its blocks: slow)."""
        retired = self._retired
        taken: list[int] = []
        while retired:
            taken.append(retired.pop())  # atomic: __del__ may append from any thread
        return taken

    def close(self) -> None:
        """Close the write descriptor and what was retired (at shutdown)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        close_descriptors(self.take_retired())
