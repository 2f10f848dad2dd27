"""Commit bookkeeping: write tickets, what waits for the next commit, and the group commit itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amqplite.config.models import StoreConfig
from amqplite.store.journal import SyncJob
from amqplite.store.metadata import MetadataCompaction, MetadataLog
from amqplite.store.queue_store import QueueStore, SnapshotTask


def _noop() -> None:
    """Default dirty notification: nobody to wake."""


class Commits:
    """Commit tickets and group commits of a store (implements broker.durability.CommitTracker)."""

    config: StoreConfig
    metadata_log: MetadataLog
    metadata_compact_over: int

    def init_commits(self) -> None:
        """Nothing appended, nothing committed yet."""
        self.on_dirty: Callable[[], None] = _noop
        self._ticket = 0
        self._committed = 0
        self._dirty: dict[int, QueueStore] = {}
        self._doomed: list[QueueStore] = []
        self._signalled = False
        # cluster mode: the ticket up to which replication lets confirms go, given the local one
        self.gate: Callable[[int], int] | None = None
        self.commit_count = self.fsync_calls = self.bytes_written = 0
        # the server may set one (management.metrics.LatencyHistogram): observe(seconds) per commit
        self.fsync_histogram: Any = None

    # -- CommitTracker -------------------------------------------------------------------

    def write_ticket(self) -> int:
        """The ticket of the last record appended."""
        return self._ticket

    def committed_ticket(self) -> int:
        """Every record up to this ticket is written (and fsynced unless fsync is off), and mirrored."""
        gate = self.gate
        return self._committed if gate is None else gate(self._committed)

    @property
    def pending(self) -> bool:
        """True when something waits for the next commit."""
        return self._committed < self._ticket or bool(self._dirty) or bool(self._doomed)

    def appended(self, journal: QueueStore | None) -> None:
        """A record was appended: take a ticket and wake the committer."""
        self._ticket += 1
        self.touched(journal)

    def touched(self, journal: QueueStore | None) -> None:
        """Something needs writing at the next commit."""
        if journal is not None:
            self._dirty[id(journal)] = journal
        if not self._signalled:
            self._signalled = True
            self.on_dirty()

    def doom(self, journal: QueueStore) -> None:
        """A deleted queue's journal: nothing more to write, its directory goes after the next commit."""
        self._dirty.pop(id(journal), None)
        self._doomed.append(journal)

    # -- commit --------------------------------------------------------------------------

    def flush(self) -> SyncJob:
        """Write everything appended so far (fast, page cache); the job makes it durable."""
        job = SyncJob(self._ticket, fsync=self.config.fsync)
        self._signalled = False
        self.metadata_log.write(job)
        if self.metadata_log.due_for_compaction(self.metadata_compact_over):
            self.metadata_log.start_compaction(job)
        dirty = list(self._dirty.values())
        self._dirty.clear()
        for journal in dirty:
            journal.write(job)
        for journal in self._doomed:
            journal.writer.rotate(job)
            job.remove_dirs.append(journal.directory)
        self._doomed.clear()
        return job

    def complete(self, job: SyncJob) -> None:
        """The job ran: its records are committed; finish its snapshots."""
        self._committed = max(self._committed, job.ticket)
        self.commit_count += 1
        self.fsync_calls += job.fsync_calls
        self.bytes_written += job.bytes_written
        if job.fsync_calls and self.fsync_histogram is not None:
            self.fsync_histogram.observe(job.sync_seconds)
        for task in job.after_sync:
            if isinstance(task, SnapshotTask):
                task.journal.snapshot_done(task)
            elif isinstance(task, MetadataCompaction):
                self.metadata_log.compaction_done(task)

    def commit(self) -> None:
        """Flush, sync and complete in the calling thread (tests, shutdown)."""
        job = self.flush()
        job.run()
        self.complete(job)
