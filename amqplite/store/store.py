"""Store: the durable side of the broker (metadata, queue journals, commit tickets) on one directory."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from amqplite.broker.broker import Broker
from amqplite.config.models import StoreConfig
from amqplite.store.commits import Commits
from amqplite.store.journal import SyncJob, fsync_dir
from amqplite.store.metadata import METADATA_NAME, BindingRecord, MetadataLog
from amqplite.store.metadata_writer import MetadataWriter, builtin
from amqplite.store.queue_store import QueueStore
from amqplite.store.restore import RecoveryApplier, RecoveryReport

__all__ = ["CLEAN_MARKER", "QUEUES_DIR", "RecoveryReport", "Store", "StoreStatistics"]

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


class Store(Commits, MetadataWriter, RecoveryApplier):
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
        self.journals: dict[tuple[str, str], QueueStore] = {}
        self.init_commits()
        self.problems: list[str] = list(self.metadata_log.problems)
        self.broker: Broker | None = None
        self.metadata_compact_over = 1000  # compact the metadata log beyond this many records
        self.resident_bytes = 0  # bodies of journaled messages held in memory
        self.paged_out = 0  # body bytes dropped from memory since the store opened
        self.exchange_vhosts: dict[int, str] = {}

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
        )

    @property
    def queues_directory(self) -> Path:
        """Where the queue journals live, one directory each."""
        return self.directory / QUEUES_DIR

    def close(self) -> None:
        """Commit what is pending and close every file."""
        self.commit()
        job = SyncJob(self.write_ticket(), fsync=self.config.fsync)
        for journal in self.journals.values():
            journal.writer.rotate(job)
        job.run()
        self.metadata_log.close()
        marker = self.directory / CLEAN_MARKER
        with open(marker, "wb") as file:
            os.fsync(file.fileno())
        fsync_dir(self.directory)

    def attach(self, broker: Broker) -> None:
        """Listen to the broker: durable entities are recorded, confirms wait for commits."""
        self.broker = broker
        broker.commits = self
        broker.metadata = self
        broker.config_listener = self
        for vhost in broker.vhosts.values():
            vhost.metadata = self
        self._adopt(broker)

    def _adopt(self, broker: Broker) -> None:
        """Record durable entities that exist but were never reported (declared before attach)."""
        meta = self.metadata_log
        for name in broker.vhosts:
            self.vhost_added(name)
        for user in broker.users.values():
            self.user_set(user.name, user.password_hash, user.tags)
        for (user_name, vhost_name), permission in broker.permissions.items():
            self.permissions_set(user_name, vhost_name, permission)
        for policy in broker.policies.values():
            self.policy_set(policy)
        for name, vhost in broker.vhosts.items():
            for exchange in vhost.exchanges.values():
                if not exchange.durable or builtin(exchange.name):
                    continue
                if (name, exchange.name) in meta.exchanges:
                    self.exchange_vhosts[id(exchange)] = name
                else:
                    self.exchange_declared(exchange)
            for queue in vhost.queues.values():
                if queue.durable and not queue.exclusive and (name, queue.name) not in meta.queues:
                    self.queue_declared(queue)
                    journal = queue.journal
                    for entry in queue.ready:
                        if entry.message.persistent and journal is not None:
                            journal.enqueue(entry)
            for binding in vhost.bindings():
                if vhost.is_durable_binding(binding):
                    record = BindingRecord(
                        name,
                        binding.source,
                        binding.destination.kind,
                        binding.destination.name,
                        binding.routing_key,
                        dict(binding.arguments),
                    )
                    if record.key not in meta.bindings:
                        self.binding_added(binding)
