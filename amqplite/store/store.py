"""Store: the durable side of the broker (metadata, queue journals, commit tickets) on one directory."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from amqplite.config.models import StoreConfig
from amqplite.store.bodies import close_descriptors
from amqplite.store.commits import Commits
from amqplite.store.interface import Paging
from amqplite.store.journal import SyncJob, fsync_dir
from amqplite.store.loader import RecoveryReader
from amqplite.store.metadata import METADATA_NAME, MetadataLog
from amqplite.store.metadata_writer import MetadataWriter
from amqplite.store.quarantine import list_quarantine
from amqplite.store.queue_store import QueueStore
from amqplite.store.spool import Spool, remove_transient_spools, spool_directory
from amqplite.store.stream_log import StreamLog

__all__ = ["CLEAN_MARKER", "QUEUES_DIR", "Store", "StoreStatistics"]

QUEUES_DIR = "queues"
CLEAN_MARKER = "clean-shutdown"


@attrs.frozen
class StoreStatistics:
    """Counters of the store since it was opened."""

    commits: int
    fsync_calls: int
    bytes_written: int
    snapshots: int
    queues: int
    live_messages: int
    journal_bytes: int
    resident_bytes: int = 0
    paged_out_bytes: int = 0
    quarantined: int = 0  # journals of queues that could not be recovered, kept aside


class Store(Commits, MetadataWriter, RecoveryReader):
    """Durable metadata, queue journals and commit tickets under one data directory."""

    def __init__(self, directory: Path, config: StoreConfig | None = None) -> None:
        self.directory = Path(directory)
        self.config = config or StoreConfig()
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = self.directory / CLEAN_MARKER
        had_data = (self.directory / METADATA_NAME).exists()
        self.crashed = (
            had_data and not marker.exists()
        )  # then every message may have been delivered
        if marker.exists():
            marker.unlink()
            fsync_dir(self.directory)
        self.metadata_log = MetadataLog.open(self.directory / METADATA_NAME)
        remove_transient_spools(self.directory)
        self.journals: dict[tuple[str, str], QueueStore] = {}
        self.streams: dict[tuple[str, str], StreamLog] = {}
        self.init_commits()
        self.problems: list[str] = list(self.metadata_log.problems)
        self.quarantine_count = len(list_quarantine(self.directory))
        self.paging: Paging | None = None  # set by the layer above: how it drops bodies from memory
        self.metadata_compact_over = 1000  # compact the metadata log beyond this many records
        self.resident_bytes = 0  # bodies of journaled messages held in memory
        self.paged_out = 0  # body bytes dropped from memory since the store opened
        self.retired_fds: list[int] = []  # body files no message reads any more (closed by jobs)

    def statistics(self) -> StoreStatistics:
        """Commits, fsyncs, bytes and live data so far."""
        journals = self.journals.values()
        return StoreStatistics(
            commits=self.commit_count,
            fsync_calls=self.fsync_calls,
            bytes_written=self.bytes_written,
            snapshots=sum(j.snapshots_taken for j in journals),
            queues=len(self.journals),
            live_messages=sum(len(j.live) for j in journals),
            journal_bytes=sum(j.journal_bytes for j in journals),
            resident_bytes=self.resident_bytes,
            paged_out_bytes=self.paged_out,
            quarantined=self.quarantine_count,
        )

    def held_spool(self, vhost: str, exchange: str, durable: bool) -> Spool:
        """The spool of an exchange's held messages (opened, and its records found, on first use)."""
        key = (vhost, exchange, durable)
        spool = self.spools.get(key)
        if spool is None:
            directory = spool_directory(self.directory, vhost, exchange, durable)
            spool = self.spools[key] = Spool(directory, self, durable)
        return spool

    def drop_held_spool(self, spool: Spool) -> None:
        """The exchange is gone: its spool's directory is removed at the next commit."""
        trash = spool.clear()
        for key, known in list(self.spools.items()):
            if known is spool:
                del self.spools[key]
        if trash is not None:
            self.cleared_spools.append(trash)
            self.touched(None)

    @property
    def queues_directory(self) -> Path:
        """Where the queue journals live, one directory each."""
        return self.directory / QUEUES_DIR

    def close(self) -> None:
        """Commit what is pending and close every file."""
        self.commit()
        if any(spool.dirty for spool in self.spools.values()):
            self.commit()  # releases committed by the first round: forget their spooled records
        job = SyncJob(0, fsync=self.config.fsync)
        for journal in self.journals.values():
            journal.writer.rotate(job)
            journal.clean_snapshot(job)  # the next boot reads the snapshots' indexes, not records
        for stream in self.streams.values():
            stream.rotate(job)
        job.run()
        self.metadata_log.close()
        close_descriptors(self.take_retired())
        marker = self.directory / CLEAN_MARKER
        with open(marker, "wb") as file:
            os.fsync(file.fileno())
        fsync_dir(self.directory)
