"""Transient bodies paged out to disk: spill files never fsynced, unlinked at once, dropped at boot.

Beyond the paging threshold a transient message's body (non-persistent, or in a non-durable
queue) is written to a spill file in a worker thread and the queue entry gets a paged copy of
its message that reads the body back from there, as durable paged bodies are. A spill file is
unlinked as soon as it is opened: it lives while paged bodies point into it (each holds its
read descriptor), so a crash leaves nothing behind; the directory is still emptied at boot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from amqplite.store.bodies import BodyFile, BodyRef, close_descriptors
from amqplite.store.interface import JournaledEntry, JournaledMessage, Paging
from amqplite.store.queue_store import shared_int

log = logging.getLogger("amqplite.store")

SPILL_DIR: Final = "transient"
FILE_BYTES: Final = 64 * 2**20  # a new spill file after this many bytes
ENTRY_OVERHEAD: Final = 400  # bytes of bookkeeping per resident message, beside its body
_IOV: Final = 512  # bodies per writev call (under IOV_MAX)


def _nothing() -> None:
    """Default wake-up: no pager task listens."""


class SpilledEntry(JournaledEntry, Protocol):
    """A queue entry as the pager sees it: still ready (not taken) or not."""

    @property
    def ready(self) -> bool: ...


class SpillFile:
    """An unlinked file bodies are appended to; readers hold its BodyFile."""

    def __init__(
        self, directory: Path, number: int, retired: list[int], suffix: str = "spill"
    ) -> None:
        path = directory / f"{number:08d}.{suffix}"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.reader = BodyFile(path, retired)
        finally:
            path.unlink()  # only the descriptors keep it: gone with the last paged body
        self.size = 0

    def append(self, bodies: list[bytes]) -> int:
        """Write bodies one after the other; the offset of the first."""
        start = self.size
        for i in range(0, len(bodies), _IOV):
            chunk = bodies[i : i + _IOV]
            want = sum(map(len, chunk))
            done = os.writev(self.fd, chunk)
            if done < want:  # short write: finish it body by body
                joined = b"".join(chunk)
                while done < want:
                    done += os.write(self.fd, joined[done:])
            self.size += want
        return start

    def close(self) -> None:
        """Close the write descriptor (paged bodies keep reading through theirs)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SpillFiles:
    """Unlinked spill files appended to in turn (worker thread), a new one past FILE_BYTES.

    A file's read descriptor is retired once nothing written in it is referenced; retired
    descriptors are closed off the event loop (closing one frees its blocks: slow).
    """

    def __init__(self, directory: Path, suffix: str = "spill") -> None:
        self.directory = directory
        self.suffix = suffix
        self._file: SpillFile | None = None
        self._number = 0
        self._retired: list[int] = []  # read descriptors nothing uses any more

    def writable(self) -> SpillFile:
        """The spill file to append to (worker thread): a new one past FILE_BYTES."""
        file = self._file
        if file is None or file.size >= FILE_BYTES:
            if file is not None:
                file.close()
            self._number += 1
            file = self._file = SpillFile(self.directory, self._number, self._retired, self.suffix)
        return file

    @property
    def has_retired(self) -> bool:
        """True when descriptors wait to be closed."""
        return bool(self._retired)

    def take_retired(self) -> list[int]:
        """Descriptors of files nothing uses any more (closing one frees its blocks: slow)."""
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


class SpillBatch:
    """Bodies to write in a worker thread, then give to their entries on the event loop."""

    def __init__(
        self, pager: TransientPager, entries: list[tuple[SpilledEntry, JournaledMessage]]
    ) -> None:
        self.pager = pager
        self.entries = entries  # (entry, the message it held when queued)
        self.placed: list[tuple[BodyFile, int]] = []  # per entry: where its body went
        self.ok = False

    def run(self) -> None:
        """Write the bodies (worker thread); a failure leaves them in memory."""
        pager = self.pager
        close_descriptors(pager.take_retired())
        offsets: dict[int, tuple[BodyFile, int]] = {}  # id(message) -> where (fanout: once)
        bodies: list[bytes] = []
        try:
            file = pager.writable()
            position = file.size
            for _, message in self.entries:  # the message queued, not what the entry holds now
                where = offsets.get(id(message))
                if where is None:
                    where = offsets[id(message)] = (file.reader, position)
                    body = message.body
                    bodies.append(body)
                    position += len(body)
                self.placed.append(where)
            file.append(bodies)
            self.ok = True
        except OSError:
            log.exception("cannot page transient message bodies out to %s", pager.directory)


class MemoryBudget:
    """The bytes transient messages may still take in memory before they page out (below 0: over).

    Queues count each transient message they take against `room` themselves (its body's bytes
    and `entry_bytes`), and hand it to the pager only once `room` is below zero: under the
    threshold a publish costs the pager no call (broker SpillBudget).
    """

    __slots__ = ("entry_bytes", "room")

    def __init__(self, room: int) -> None:
        self.room = room
        self.entry_bytes = ENTRY_OVERHEAD


class TransientPager(SpillFiles):
    """Pages transient bodies out beyond a memory threshold (implements broker TransientSpill)."""

    def __init__(self, directory: Path, threshold: int, paging: Paging) -> None:
        super().__init__(directory)
        self._threshold = threshold  # process memory (estimated) beyond which bodies page out
        self.paging = paging
        self.measured = 0  # process memory at the last observation
        # threshold - measured - the bytes of transient messages taken since the observation
        self.budget = MemoryBudget(threshold)
        self.pending: list[tuple[SpilledEntry, JournaledMessage]] = []
        self.pending_bytes = 0
        self.paged_out = 0  # bytes paged out, all time
        self.on_pending: Callable[[], None] = _nothing  # the pager task's wake-up
        clear_spill_dir(directory)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def threshold(self) -> int:
        """Process memory (estimated) beyond which transient bodies page out."""
        return self._threshold

    @threshold.setter
    def threshold(self, threshold: int) -> None:
        self.budget.room += threshold - self._threshold
        self._threshold = threshold

    def observe(self, memory_used: int) -> None:
        """The process's memory was measured (the alarms' timer)."""
        self.measured = memory_used
        self.budget.room = self._threshold - memory_used

    @property
    def over(self) -> bool:
        """True while new transient bodies go to disk."""
        return self.budget.room < 0

    def freed(self, size: int) -> None:
        """Bytes of transient messages left memory for disk (a paged queue tail)."""
        self.paged_out += size
        self.budget.room += size

    def enqueue(self, entry: SpilledEntry) -> None:
        """A transient message entered a queue: counted, and beyond the threshold paged out."""
        budget = self.budget  # a body already paged counts too: an overestimate
        budget.room -= entry.message.size + budget.entry_bytes
        self.counted(entry)

    def counted(self, entry: SpilledEntry) -> None:
        """A transient message entered a queue, counted in the budget: if over, page it out."""
        message = entry.message
        size = message.size
        if self.budget.room < 0 and size:
            if self.paging.is_paged(message):
                return
            if not self.pending:
                self.on_pending()
            self.pending.append((entry, message))
            self.pending_bytes += size

    def take(self) -> SpillBatch | None:
        """The bodies to write now (None: nothing pending)."""
        if not self.pending:
            return None
        batch = SpillBatch(self, self.pending)
        self.pending = []
        self.pending_bytes = 0
        return batch

    def applied(self, batch: SpillBatch) -> int:
        """Give the written bodies to entries still waiting in their queues; bytes freed."""
        if not batch.ok:
            return 0
        paging = self.paging
        freed = 0
        for (entry, message), (file, offset) in zip(batch.entries, batch.placed, strict=True):
            if not entry.ready or entry.message is not message:
                continue  # taken for delivery, or replaced, meanwhile: it stays as it is
            length = message.size
            paging.page_out(entry, BodyRef(file, offset, shared_int(length)))
            freed += length
        self.paged_out += freed
        self.budget.room += freed
        return freed


def clear_spill_dir(directory: Path) -> None:
    """Drop whatever a previous run left (transient messages do not survive a restart)."""
    if directory.exists():
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
