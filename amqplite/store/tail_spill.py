"""Runs of a paged queue tail on disk: appended to unlinked spill files, read back by range."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from amqplite.store.bodies import BodyRef
from amqplite.store.transient import SpillFiles

TAIL_SUFFIX: Final = "tail"


class TailFiles(SpillFiles):
    """Unlinked, never-fsynced files that paged queue tails are appended to (worker thread).

    Each written run is a BodyRef (file, offset, length): a file's descriptor closes once no
    run in it is referenced (its blocks are freed then), off the event loop as retired ones.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, TAIL_SUFFIX)
        self.written = 0  # bytes written, all time
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, runs: list[bytes]) -> list[BodyRef]:
        """Append runs (worker thread); where each went."""
        placed: list[BodyRef] = []
        for run in runs:
            file = self.writable()
            offset = file.append([run])
            placed.append(BodyRef(file.reader, offset, len(run)))
            self.written += len(run)
        return placed
