"""Store: the durable side of the broker (metadata, queue journals, commit tickets) on one directory."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.broker.vhost import Binding, Exchange, VHost
from amqplite.config.models import StoreConfig
from amqplite.protocol.properties import read_facts
from amqplite.store.journal import SegmentWriter, SyncJob, SyncTask, fsync_dir
from amqplite.store.metadata import METADATA_NAME, BindingRecord, MetadataLog
from amqplite.store.records import (
    RecordType,
    encode_delivered,
    encode_enqueue,
    encode_remove,
)
from amqplite.store.recovery import RecoveredQueue, recover_queue
from amqplite.store.snapshot import write_snapshot

log = logging.getLogger("amqplite.store")

QUEUES_DIR = "queues"
CLEAN_MARKER = "clean-shutdown"


def _noop() -> None:
    """Default dirty notification: nobody to wake."""


def _encode_entry(seq: int, delivery_count: int, message: Message) -> bytes:
    return encode_enqueue(
        seq,
        delivery_count,
        message.priority,
        message.expiration_ms,
        message.exchange,
        message.routing_key,
        message.properties_bin,
        message.body,
    )


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


@attrs.frozen
class RecoveryReport:
    """What recovery brought back and what it had to repair."""

    exchanges: int
    queues: int
    bindings: int
    messages: int
    problems: list[str]


class SnapshotTask(SyncTask):
    """Write one queue's snapshot after a commit's fsync, in the worker thread."""

    def __init__(
        self, journal: QueueStore, covers_through: int, items: list[tuple[int, int, Message]]
    ) -> None:
        self.journal = journal
        self.covers_through = covers_through
        self.items = items
        self.ok = False

    def run(self, fsync: bool) -> None:
        """Write the snapshot; a failure is logged and the segments stay."""
        records = (_encode_entry(seq, count, message) for seq, count, message in self.items)
        try:
            write_snapshot(self.journal.directory, self.covers_through, records, fsync=fsync)
            self.ok = True
        except OSError:
            log.exception("snapshot of %s failed; its journal stays", self.journal.directory)


class QueueStore:
    """The journal of one durable queue (implements broker.durability.QueueJournal)."""

    def __init__(
        self, store: Store, queue: Queue, directory: Path, recovered: RecoveredQueue | None = None
    ) -> None:
        self.store = store
        self.queue = queue
        self.directory = directory
        next_segment = recovered.last_segment + 1 if recovered else 1
        self.writer = SegmentWriter(directory, next_segment, store.config.segment_bytes)
        if recovered is not None:
            self.writer.sizes.update(recovered.segment_sizes)
        self.live: dict[int, tuple[QueueEntry, int]] = {}  # seq -> (entry, record bytes)
        self.live_bytes = 0
        self.delivered_pending: dict[int, QueueEntry] = {}
        self.snapshot_running = False
        self.dead = False
        self.snapshots_taken = 0

    # -- QueueJournal --------------------------------------------------------------------

    def enqueue(self, entry: QueueEntry) -> None:
        """Journal a persistent message that entered the queue."""
        record = _encode_entry(entry.seq, entry.delivery_count, entry.message)
        self.writer.append(record)
        self.live[entry.seq] = (entry, len(record))
        self.live_bytes += len(record)
        self.store.appended(self)

    def remove(self, entry: QueueEntry) -> None:
        """Journal that a message left the queue for good."""
        item = self.live.pop(entry.seq, None)
        if item is None:
            return
        self.delivered_pending.pop(entry.seq, None)
        self.live_bytes -= item[1]
        self.writer.append(encode_remove(entry.seq))
        self.store.appended(self)

    def delivered(self, entry: QueueEntry) -> None:
        """A message was handed out: its delivery count is journaled with the next commit."""
        if entry.seq in self.live:
            self.delivered_pending[entry.seq] = entry
            self.store.touched(self)

    # -- commit --------------------------------------------------------------------------

    def write(self, job: SyncJob) -> None:
        """Write pending records to the segment; start a snapshot when the journal outgrew live data."""
        if self.delivered_pending:
            for seq, entry in self.delivered_pending.items():
                self.writer.append(encode_delivered(seq, max(entry.delivery_count, 1)))
            self.delivered_pending.clear()
        self.writer.write(job)
        if self.snapshot_running:
            return
        on_disk = self.writer.bytes_on_disk
        threshold = max(
            self.store.config.segment_bytes, self.store.config.snapshot_ratio * self.live_bytes
        )
        if on_disk > threshold:
            self.start_snapshot(job)

    def start_snapshot(self, job: SyncJob) -> SnapshotTask:
        """Retire the open segment and snapshot the live messages after this commit's fsync."""
        covers = self.writer.rotate(job)
        items = [(seq, e.delivery_count, e.message) for seq, (e, _) in self.live.items()]
        task = SnapshotTask(self, covers, items)
        job.after_sync.append(task)
        self.snapshot_running = True
        return task

    def snapshot_done(self, task: SnapshotTask) -> None:
        """Forget the segments a finished snapshot replaced."""
        self.snapshot_running = False
        if task.ok:
            self.snapshots_taken += 1
            for number in [n for n in self.writer.sizes if n <= task.covers_through]:
                del self.writer.sizes[number]

    @property
    def journal_bytes(self) -> int:
        """Bytes of segments on disk (the snapshot excluded)."""
        return self.writer.bytes_on_disk


class Store:
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
        self.on_dirty: Callable[[], None] = _noop
        self._ticket = 0
        self._committed = 0
        self._dirty: dict[int, QueueStore] = {}
        self._doomed: list[QueueStore] = []
        self._signalled = False
        self.problems: list[str] = list(self.metadata_log.problems)
        self.broker: Broker | None = None
        self._commits = self._fsync_calls = self._bytes_written = 0
        self._exchange_vhosts: dict[int, str] = {}

    def statistics(self) -> StoreStatistics:
        """Commits, fsyncs, bytes and live data so far."""
        journals = self.journals.values()
        return StoreStatistics(
            commits=self._commits,
            fsync_calls=self._fsync_calls,
            bytes_written=self._bytes_written,
            snapshots=sum(j.snapshots_taken for j in journals),
            queues=len(self.journals),
            live_messages=sum(len(j.live) for j in journals),
            journal_bytes=sum(j.journal_bytes for j in journals),
        )

    @property
    def queues_directory(self) -> Path:
        """Where the queue journals live, one directory each."""
        return self.directory / QUEUES_DIR

    # -- CommitTracker -------------------------------------------------------------------

    def write_ticket(self) -> int:
        """The ticket of the last record appended."""
        return self._ticket

    def committed_ticket(self) -> int:
        """Every record up to this ticket is written (and fsynced unless fsync is off)."""
        return self._committed

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

    # -- MetadataListener ----------------------------------------------------------------

    def queue_declared(self, queue: Queue) -> None:
        """Record a durable queue and give it a journal."""
        directory = secrets.token_hex(8)
        self.metadata_log.append(
            RecordType.QUEUE,
            queue.vhost,
            queue.name,
            directory,
            queue.auto_delete,
            dict(queue.arguments),
        )
        self._attach(queue, self.queues_directory / directory, None)
        self.appended(None)

    def _attach(
        self, queue: Queue, directory: Path, recovered: RecoveredQueue | None
    ) -> QueueStore:
        journal = QueueStore(self, queue, directory, recovered)
        self.journals[(queue.vhost, queue.name)] = journal
        queue.journal = journal
        return journal

    def queue_deleted(self, queue: Queue) -> None:
        """Forget a durable queue; its journal directory goes after the next commit."""
        self.metadata_log.append(RecordType.QUEUE_DELETED, queue.vhost, queue.name)
        journal = self.journals.pop((queue.vhost, queue.name), None)
        if journal is not None:
            journal.dead = True
            self._dirty.pop(id(journal), None)
            self._doomed.append(journal)
        if queue.journal is journal:
            queue.journal = None
        self.appended(None)

    def exchange_declared(self, exchange: Exchange) -> None:
        """Record a durable exchange."""
        if _builtin(exchange.name):
            return
        vhost = self._vhost_of(lambda v: v.exchanges.get(exchange.name) is exchange)
        if vhost is None:
            return
        self._exchange_vhosts[id(exchange)] = vhost
        self.metadata_log.append(
            RecordType.EXCHANGE,
            vhost,
            exchange.name,
            exchange.type_name,
            exchange.auto_delete,
            exchange.internal,
            dict(exchange.arguments),
        )
        self.appended(None)

    def exchange_deleted(self, exchange: Exchange) -> None:
        """Forget a durable exchange."""
        vhost = self._exchange_vhosts.pop(id(exchange), None)
        if vhost is None:
            return
        self.metadata_log.append(RecordType.EXCHANGE_DELETED, vhost, exchange.name)
        self.appended(None)

    def binding_added(self, binding: Binding) -> None:
        """Record a durable binding."""
        self._binding(RecordType.BINDING, binding)

    def binding_removed(self, binding: Binding) -> None:
        """Forget a durable binding."""
        self._binding(RecordType.BINDING_REMOVED, binding)

    def _binding(self, record_type: RecordType, binding: Binding) -> None:
        vhost = self._vhost_of(lambda v: binding in v.bindings_by_source.get(binding.source, ()))
        if vhost is None:
            return
        self.metadata_log.append(
            record_type,
            vhost,
            binding.source,
            binding.destination.kind,
            binding.destination.name,
            binding.routing_key,
            dict(binding.arguments),
        )
        self.appended(None)

    def _vhost_of(self, test: Callable[[VHost], bool]) -> str | None:
        """The name of the vhost (of the attached broker) that holds an exchange or binding."""
        if self.broker is None:
            return None
        for name, vhost in self.broker.vhosts.items():
            if test(vhost):
                return name
        return None

    # -- commit --------------------------------------------------------------------------

    def flush(self) -> SyncJob:
        """Write everything appended so far (fast, page cache); the job makes it durable."""
        job = SyncJob(self._ticket, fsync=self.config.fsync)
        self._signalled = False
        self.metadata_log.write(job)
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
        self._commits += 1
        self._fsync_calls += job.fsync_calls
        self._bytes_written += job.bytes_written
        for task in job.after_sync:
            if isinstance(task, SnapshotTask):
                task.journal.snapshot_done(task)

    def commit(self) -> None:
        """Flush, sync and complete in the calling thread (tests, shutdown)."""
        job = self.flush()
        job.run()
        self.complete(job)

    def close(self) -> None:
        """Commit what is pending and close every file."""
        self.commit()
        job = SyncJob(self._ticket, fsync=self.config.fsync)
        for journal in self.journals.values():
            journal.writer.rotate(job)
        job.run()
        self.metadata_log.close()
        marker = self.directory / CLEAN_MARKER
        with open(marker, "wb") as file:
            os.fsync(file.fileno())
        fsync_dir(self.directory)

    # -- recovery ------------------------------------------------------------------------

    def recover_into(self, broker: Broker) -> RecoveryReport:
        """Declare the stored entities in the broker, restore their messages, then listen to it."""
        problems = list(self.problems)
        meta = self.metadata_log
        totals = attrs.asdict(broker.totals)
        exchanges = queues = bindings = messages = 0
        for record in meta.exchanges.values():
            vhost = broker.add_vhost(record.vhost)
            try:
                vhost.declare_exchange(
                    record.name,
                    record.type_name,
                    durable=True,
                    auto_delete=record.auto_delete,
                    internal=record.internal,
                    arguments=dict(record.arguments),
                )
                exchanges += 1
            except Exception as exc:
                problems.append(f"exchange {record.name!r} in {record.vhost!r} not restored: {exc}")
        for stored in meta.queues.values():
            vhost = broker.add_vhost(stored.vhost)
            try:
                queue = vhost.declare_queue(
                    stored.name,
                    durable=True,
                    auto_delete=stored.auto_delete,
                    arguments=dict(stored.arguments),
                )
            except Exception as exc:
                problems.append(f"queue {stored.name!r} in {stored.vhost!r} not restored: {exc}")
                continue
            queues += 1
            directory = self.queues_directory / stored.directory
            recovered = recover_queue(directory)
            problems.extend(recovered.problems)
            messages += self._restore(queue, directory, recovered)
        for binding in list(meta.bindings.values()):
            vhost = broker.add_vhost(binding.vhost)
            try:
                vhost.bind(
                    binding.source,
                    Destination(binding.kind, binding.destination),  # type: ignore[arg-type]
                    binding.routing_key,
                    dict(binding.arguments),
                )
                bindings += 1
            except Exception as exc:
                problems.append(f"binding {binding.key!r} not restored: {exc}")
        self._prune_orphans()
        for name, value in totals.items():
            setattr(broker.totals, name, value)
        self.attach(broker)
        for text in problems:
            log.warning("recovery: %s", text)
        return RecoveryReport(exchanges, queues, bindings, messages, problems)

    def _restore(self, queue: Queue, directory: Path, recovered: RecoveredQueue) -> int:
        queue.journal = None
        entries: list[tuple[QueueEntry, int]] = []
        no_headers: set[bytes] = set()  # properties seen without headers: skip decoding them
        for stored, size in zip(recovered.messages, recovered.sizes, strict=True):
            props = stored.properties_bin
            headers = None
            if props not in no_headers:
                headers = read_facts(props).headers
                if headers is None and len(no_headers) < 10_000:
                    no_headers.add(props)
            message = Message(
                stored.exchange,
                stored.routing_key,
                props,
                stored.body,
                persistent=True,
                priority=stored.priority,
                expiration_ms=stored.expiration_ms,
                headers=headers,
            )
            queue.next_seq = stored.seq
            entry = queue.enqueue(message)
            if entry is not None:
                entry.delivery_count = stored.delivery_count
                if self.crashed and not entry.delivery_count:
                    entry.delivery_count = 1  # may have been delivered before the crash
                entries.append((entry, size))
        queue.next_seq = max(queue.next_seq, recovered.next_seq)
        queue.stats = MessageStats()
        journal = self._attach(queue, directory, recovered)
        for entry, size in entries:
            journal.live[entry.seq] = (entry, size)
            journal.live_bytes += size
        return len(entries)

    def _prune_orphans(self) -> None:
        """Delete journal directories no durable queue refers to (deleted queues, crashed declares)."""
        root = self.queues_directory
        if not root.is_dir():
            return
        known = {record.directory for record in self.metadata_log.queues.values()}
        for path in root.iterdir():
            if path.name not in known:
                log.info("removing orphaned queue journal %s", path)
                shutil.rmtree(path, ignore_errors=True)

    def attach(self, broker: Broker) -> None:
        """Listen to the broker: durable entities are recorded, confirms wait for commits."""
        self.broker = broker
        broker.commits = self
        broker.metadata = self
        for vhost in broker.vhosts.values():
            vhost.metadata = self
        self._adopt(broker)

    def _adopt(self, broker: Broker) -> None:
        """Record durable entities that exist but were never reported (declared before attach)."""
        meta = self.metadata_log
        for name, vhost in broker.vhosts.items():
            for exchange in vhost.exchanges.values():
                if not exchange.durable or _builtin(exchange.name):
                    continue
                if (name, exchange.name) in meta.exchanges:
                    self._exchange_vhosts[id(exchange)] = name
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


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")
