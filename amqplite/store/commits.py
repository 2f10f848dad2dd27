"""Commit domains: one commit sequence per durable queue and one for the metadata log.

A record appended to a domain takes that domain's next ticket. What waits for records (a
publisher confirm, a tx.commit-ok, a durable declare-ok, an HTTP answer) holds a mark: the
(domain, ticket) pairs of the records it depends on, so it waits only for those domains. A
group commit round gives every dirty domain that is not still syncing a job of its own; the
committer runs a round's jobs in one worker-thread call and completes each as it finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from amqplite.config.models import StoreConfig
from amqplite.store.bodies import close_descriptors
from amqplite.store.domains import CommitDomain, Mark
from amqplite.store.journal import SyncJob
from amqplite.store.metadata import MetadataCompaction, MetadataLog
from amqplite.store.queue_store import PageOutTask, QueueStore, SnapshotTask
from amqplite.store.spool import Spool
from amqplite.store.stream_log import StreamCommitted, StreamLog


def _close_retired(fds: list[int], job: SyncJob) -> None:
    close_descriptors(fds)


_DONE: Any = object()  # next()'s default: a generator of completion work has finished


def _noop() -> None:
    """Default dirty notification: nobody to wake."""


class Commits:
    """Commit domains and group-commit rounds of a store (implements broker's CommitTracker)."""

    config: StoreConfig
    metadata_log: MetadataLog
    metadata_compact_over: int
    journals: dict[tuple[str, str], QueueStore]
    streams: dict[tuple[str, str], StreamLog]
    retired_fds: list[int]

    def init_commits(self) -> None:
        """Nothing appended, nothing committed yet."""
        self.on_dirty: Callable[[], None] = _noop
        self.metadata_domain = CommitDomain("metadata")
        self._watching: dict[CommitDomain, None] | None = None
        self._dirty: dict[int, QueueStore | StreamLog] = {}
        self._doomed: list[QueueStore | StreamLog] = []
        self.spools: dict[tuple[str, str, bool], Spool] = {}  # held messages (store/spool.py)
        self.cleared_spools: list[Path] = []  # moved-aside spools, removed at the next commit
        self._signalled = False
        # page-outs and repointing after a snapshot, run a chunk per event-loop step (finish_step)
        self.finishing: deque[Iterator[None]] = deque()
        self.commit_count = self.fsync_calls = self.bytes_written = 0
        # the server may set one (management.metrics.LatencyHistogram): observe(seconds) per commit
        self.fsync_histogram: Any = None

    def new_domain(self, name: str) -> CommitDomain:
        """A queue journal's domain; until the metadata record of its queue commits, it waits for it."""
        domain = CommitDomain(name)
        meta = self.metadata_domain
        if meta.written > meta.committed:
            domain.after = (meta, meta.written)
        return domain

    # -- CommitTracker -------------------------------------------------------------------

    def watch(self) -> dict[CommitDomain, None] | None:
        """Start noting the domains appended to; pass the result to watched() (nests)."""
        outer = self._watching
        self._watching = {}
        return outer

    def watched(self, outer: dict[CommitDomain, None] | None) -> Mark | None:
        """Stop noting: what the records appended since watch() need (None: nothing appended)."""
        touched = self._watching
        if outer is not None and touched:
            outer.update(touched)
        self._watching = outer
        if not touched:
            return None
        pairs: list[tuple[CommitDomain, int]] = []
        for domain in touched:
            pairs.append((domain, domain.written))
            after = domain.after
            if after is not None:
                if after[0].committed >= after[1]:
                    domain.after = None
                else:
                    pairs.append(after)
        return tuple(pairs)

    @property
    def pending(self) -> bool:
        """True when something waits for a commit."""
        meta = self.metadata_domain
        return (
            meta.committed < meta.written
            or bool(self._dirty)
            or bool(self._doomed)
            or any(j.domain.synced < j.domain.written for j in self.journals.values())
            or any(s.domain.synced < s.domain.written for s in self.streams.values())
        )

    def note(self, domain: CommitDomain) -> int:
        """A record kept elsewhere (a publish forwarded to the node leading its queue) took a ticket."""
        domain.written += 1
        if self._watching is not None:
            self._watching[domain] = None
        return domain.written

    def appended(self, journal: QueueStore | StreamLog | None) -> None:
        """A record was appended to a journal (None: the metadata log): take a ticket, wake up."""
        domain = self.metadata_domain if journal is None else journal.domain
        domain.written += 1
        if self._watching is not None:
            self._watching[domain] = None
        if journal is not None:
            self._dirty[id(journal)] = journal
        if not self._signalled:
            self._signalled = True
            self.on_dirty()

    def touched(self, journal: QueueStore | StreamLog | None) -> None:
        """Something needs writing at the next commit."""
        if journal is not None:
            self._dirty[id(journal)] = journal
        if not self._signalled:
            self._signalled = True
            self.on_dirty()

    def doom(self, journal: QueueStore | StreamLog) -> None:
        """A deleted queue's journal: nothing more to write, its directory goes after the next commit."""
        self._dirty.pop(id(journal), None)
        self._doomed.append(journal)

    # -- commit rounds ---------------------------------------------------------------------

    def flush(self) -> list[SyncJob]:
        """One job per dirty domain not already syncing: its records (written by the job)."""
        self._signalled = False
        jobs: list[SyncJob] = []
        fsync = self.config.fsync
        meta = self.metadata_domain
        doomed = [j for j in self._doomed if not j.domain.busy]
        spools = [] if meta.busy else [s for s in self.spools.values() if s.dirty]
        cleared = [] if meta.busy else self.cleared_spools
        if not meta.busy and (meta.written > meta.flushed or doomed or spools or cleared):
            job = SyncJob(meta.written, fsync=fsync, domain=meta)
            for spool in spools:  # held messages ride the metadata commit (their confirms wait)
                spool.write(job)
            job.remove_dirs.extend(cleared)
            self.cleared_spools = []
            self.metadata_log.write(job)
            if self.metadata_log.due_for_compaction(self.metadata_compact_over):
                self.metadata_log.start_compaction(job)
            for journal in doomed:  # removed after the deletion record is on disk
                journal.writer.rotate(job)
                job.remove_dirs.append(journal.directory)
                self._doomed.remove(journal)
            jobs.append(job)
        queued: list[tuple[int, SyncJob]] = []
        for key, journal in list(self._dirty.items()):
            domain = journal.domain
            if domain.busy:
                continue  # its next job starts when this one completes
            del self._dirty[key]
            job = SyncJob(domain.written, fsync=fsync, domain=domain)
            journal.write(job)
            queued.append((job.bytes_written, job))
        queued.sort(key=lambda item: item[0])  # small jobs first: they complete first
        jobs.extend(job for _, job in queued)
        for job in jobs:
            job.domain.busy = True
            job.domain.flushed = job.ticket
        if jobs and self.retired_fds:  # closing a deleted segment's last descriptor is slow
            jobs[0].ops.append(partial(_close_retired, self.take_retired()))
        return jobs

    def take_retired(self) -> list[int]:
        """The descriptors of body files no longer read (BodyFile.__del__ leaves them here)."""
        fds = self.retired_fds[:]
        del self.retired_fds[: len(fds)]  # appends meanwhile (any thread) stay for next time
        return fds

    def complete(self, job: SyncJob, *, in_steps: bool = False) -> None:
        """The job's records are committed; its page-outs and snapshots finish now (in_steps: later)."""
        domain: CommitDomain = job.domain
        domain.synced = max(domain.synced, job.ticket)
        domain.regate()
        domain.busy = False
        self.commit_count += 1
        self.fsync_calls += job.fsync_calls
        self.bytes_written += job.bytes_written
        if job.fsync_calls and self.fsync_histogram is not None:
            self.fsync_histogram.observe(job.sync_seconds)
        for task in job.after_sync:
            if isinstance(task, PageOutTask):
                self.finishing.append(task.journal.page_out_done(task))
            elif isinstance(task, SnapshotTask):
                self.finishing.append(task.journal.snapshot_done(task))
            elif isinstance(task, MetadataCompaction):
                self.metadata_log.compaction_done(task)
            elif isinstance(task, StreamCommitted):
                task.completed()
        if domain.written > domain.flushed or (self._doomed and domain is self.metadata_domain):
            self.touched(None)  # appended while it was syncing: another round
        elif any(s.waiting and s.dirty for s in self.spools.values()):
            self.touched(None)  # released messages now on disk: forget their spooled records
        if not in_steps:
            while self.finish_step():
                pass

    def finish_step(self) -> bool:
        """Run one chunk of completion work; True while more is left (the committer runs one per step)."""
        finishing = self.finishing
        while finishing:
            if next(finishing[0], _DONE) is _DONE:
                finishing.popleft()
                continue
            return True
        return False

    def commit(self) -> None:
        """Flush, sync and complete every domain in the calling thread (tests, shutdown)."""
        for job in self.flush():
            job.run()
            self.complete(job)
