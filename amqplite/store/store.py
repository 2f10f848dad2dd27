"""Store: the durable side of the broker (metadata, queue journals, commit tickets) on one directory."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.policy import Policy
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.broker.vhost import Binding, Exchange, VHost
from amqplite.config.models import StoreConfig
from amqplite.protocol.properties import read_facts
from amqplite.store.bodies import BodyFile, BodyRef
from amqplite.store.journal import SegmentWriter, SyncJob, SyncTask, fsync_dir, segment_path
from amqplite.store.metadata import (
    METADATA_NAME,
    BindingRecord,
    MetadataCompaction,
    MetadataLog,
)
from amqplite.store.records import (
    FILE_HEADER,
    RecordType,
    encode_delivered,
    encode_enqueue,
    encode_expires,
    encode_remove,
)
from amqplite.store.recovery import RecoveredQueue, recover_queue
from amqplite.store.snapshot import SNAPSHOT_NAME, write_snapshot

log = logging.getLogger("amqplite.store")

QUEUES_DIR = "queues"
CLEAN_MARKER = "clean-shutdown"


def _noop() -> None:
    """Default dirty notification: nobody to wake."""


_INTS: dict[int, int] = {}


def _shared_int(value: int) -> int:
    """One object per distinct size: paged messages keep millions of equal lengths."""
    if len(_INTS) < 4096:
        return _INTS.setdefault(value, value)
    return _INTS.get(value, value)


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
    resident_bytes: int = 0
    paged_out_bytes: int = 0


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
        self,
        journal: QueueStore,
        covers_through: int,
        items: list[tuple[int, int, Message]],
        deadlines: dict[int, float] | None = None,
    ) -> None:
        self.journal = journal
        self.deadlines = deadlines or {}  # seq -> TTL deadline, POSIX ms
        self.covers_through = covers_through
        self.items = items
        self.ok = False
        self.body_offsets: list[int] = []  # where each item's body starts in the snapshot file
        self.body_file: BodyFile | None = None  # opened when paged bodies must move to the snapshot

    def _records(self) -> Iterator[bytes]:
        position = FILE_HEADER.size
        offsets = self.body_offsets
        deadlines = self.deadlines
        for seq, count, message in self.items:
            record = _encode_entry(seq, count, message)
            position += len(record)
            offsets.append(position - message.size)  # the body ends the record
            yield record
            if deadlines and seq in deadlines:
                record = encode_expires(seq, deadlines[seq])
                position += len(record)
                yield record

    def run(self, fsync: bool) -> None:
        """Write the snapshot; a failure is logged and the segments stay."""
        directory = self.journal.directory
        try:
            write_snapshot(directory, self.covers_through, self._records(), fsync=fsync)
            if any(type(message) is PagedMessage for _, _, message in self.items):
                self.body_file = BodyFile(directory / SNAPSHOT_NAME)
            self.ok = True
        except OSError:
            log.exception("snapshot of %s failed; its journal stays", directory)


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
        # seq -> (entry, record bytes); the size is negative while the body is paged out (on disk only)
        self.live: dict[int, tuple[QueueEntry, int]] = {}
        self.live_bytes = 0
        self.page_out: list[tuple[QueueEntry, int]] = []  # (entry, end of its record in the buffer)
        self.body_files: dict[int, BodyFile] = {}  # open segments that paged bodies point into
        self.delivered_pending: dict[int, QueueEntry] = {}
        self.snapshot_running = False
        self.dead = False
        self.snapshots_taken = 0

    # -- QueueJournal --------------------------------------------------------------------

    def enqueue(self, entry: QueueEntry) -> None:
        """Journal a persistent message that entered the queue; beyond the budget, page it out."""
        message = entry.message
        record = _encode_entry(entry.seq, entry.delivery_count, message)
        self.writer.append(record)
        end = len(self.writer.buffer)
        size = len(record)
        self.live_bytes += size
        queue = self.queue
        ttl = queue.settings.message_ttl
        if message.expiration_ms is not None and (ttl is None or message.expiration_ms < ttl):
            ttl = message.expiration_ms
        if ttl is not None:
            self.writer.append(encode_expires(entry.seq, queue.host.wall_time() * 1000 + ttl))
        if type(message) is PagedMessage:
            self.live[entry.seq] = (entry, -size)
        else:
            self.live[entry.seq] = (entry, size)
            store = self.store
            store.resident_bytes += message.size
            if store.resident_bytes > store.config.memory_budget_bytes:
                self.page_out.append((entry, end))
        self.store.appended(self)

    def remove(self, entry: QueueEntry) -> None:
        """Journal that a message left the queue for good."""
        item = self.live.pop(entry.seq, None)
        if item is None:
            return
        self.delivered_pending.pop(entry.seq, None)
        size = item[1]
        if size > 0:
            self.live_bytes -= size
            self.store.resident_bytes -= item[0].message.size
        else:
            self.live_bytes += size
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
        number, base = self.writer.write(job)
        if self.page_out:
            self._page_out(number, base)
        if self.snapshot_running:
            return
        on_disk = self.writer.bytes_on_disk
        threshold = max(
            self.store.config.segment_bytes, self.store.config.snapshot_ratio * self.live_bytes
        )
        if on_disk > threshold:
            self.start_snapshot(job)

    def _page_out(self, number: int, base: int) -> None:
        """Drop the bodies of the messages just written from memory: they are read from the segment."""
        file = self.body_files.get(number)
        if file is None:
            file = self.body_files[number] = BodyFile(segment_path(self.writer.directory, number))
        live = self.live
        freed = 0
        for entry, end in self.page_out:
            item = live.get(entry.seq)
            if item is None or item[0] is not entry or item[1] < 0:
                continue
            message = entry.message
            if type(message) is PagedMessage:
                continue
            length = message.size
            location = BodyRef(file, base + end - length, _shared_int(length))
            entry.message = PagedMessage.of(message, location)
            live[entry.seq] = (entry, _shared_int(-item[1]))
            freed += length
        self.page_out.clear()
        self.store.resident_bytes -= freed
        self.store.paged_out += freed

    def start_snapshot(self, job: SyncJob) -> SnapshotTask:
        """Retire the open segment and snapshot the live messages after this commit's fsync."""
        covers = self.writer.rotate(job)
        items = [(seq, e.delivery_count, e.message) for seq, (e, _) in self.live.items()]
        host = self.queue.host
        to_wall = (host.wall_time() - host.now()) * 1000
        deadlines = {
            seq: e.expires_at * 1000 + to_wall
            for seq, (e, _) in self.live.items()
            if e.expires_at is not None
        }
        task = SnapshotTask(self, covers, items, deadlines)
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
            for number in [n for n in self.body_files if n <= task.covers_through]:
                del self.body_files[number]
            if task.body_file is not None:
                self._repoint(task, task.body_file)

    def _repoint(self, task: SnapshotTask, file: BodyFile) -> None:
        """Paged bodies now read from the snapshot (the segments they were in are deleted)."""
        live = self.live
        for (seq, _, message), offset in zip(task.items, task.body_offsets, strict=True):
            if type(message) is not PagedMessage:
                continue
            item = live.get(seq)
            if item is None:
                continue
            current = item[0].message
            if type(current) is PagedMessage:
                current.location = BodyRef(file, offset, current.size)

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
        self.metadata_compact_over = 1000  # compact the metadata log beyond this many records
        # the server may set one (management.metrics.LatencyHistogram): observe(seconds) per commit
        self.fsync_histogram: Any = None
        self.resident_bytes = 0  # bodies of journaled messages held in memory
        self.paged_out = 0  # body bytes dropped from memory since the store opened
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
            resident_bytes=self.resident_bytes,
            paged_out_bytes=self.paged_out,
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
            self.resident_bytes -= sum(
                e.message.size for e, size in journal.live.values() if size > 0
            )
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
        self._commits += 1
        self._fsync_calls += job.fsync_calls
        self._bytes_written += job.bytes_written
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
        self._restore_config(broker, problems)
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

    def _restore_config(self, broker: Broker, problems: list[str]) -> None:
        """Vhosts, users, permissions and policies as last changed (deletions included)."""
        meta = self.metadata_log
        for name in meta.vhosts:
            broker.add_vhost(name)
        for name in meta.deleted_users:
            if name in broker.users:
                broker.delete_user(name)
        for name, password_hash, extra in meta.users.values():
            broker.add_user(name, "", extra.get("tags", ()), password_hash=password_hash)
        for user, vhost in meta.cleared_permissions:
            broker.clear_permissions(user, vhost)
        for user, vhost, configure, write, read in meta.permissions.values():
            if user in broker.users and vhost in broker.vhosts:
                broker.set_permissions(user, vhost, Permission(configure, write, read))
        for vhost, name, pattern, definition, extra in meta.policies.values():
            broker.add_vhost(vhost)
            try:
                broker.set_policy(
                    Policy(
                        vhost,
                        name,
                        pattern,
                        dict(definition),
                        int(extra.get("priority", 0)),
                        str(extra.get("apply-to", "queues")),
                    )
                )
            except (ValueError, KeyError) as exc:
                problems.append(f"policy {name!r} in {vhost!r} not restored: {exc}")

    # -- ConfigListener ------------------------------------------------------------------

    def _config_record(self, record_type: RecordType, *fields: Any) -> None:
        self.metadata_log.append(record_type, *fields)
        self.appended(None)

    def vhost_added(self, name: str) -> None:
        """Record a vhost."""
        if name not in self.metadata_log.vhosts:
            self._config_record(RecordType.VHOST, name)

    def vhost_deleted(self, name: str) -> None:
        """Forget a vhost (its permissions and policies with it)."""
        self._config_record(RecordType.VHOST_DELETED, name)

    def user_set(self, name: str, password_hash: str, tags: tuple[str, ...]) -> None:
        """Record a user (its password hash only, never the password)."""
        fields = [name, password_hash, {"tags": list(tags)}]
        if self.metadata_log.users.get(name) != fields:
            self._config_record(RecordType.USER, *fields)

    def user_deleted(self, name: str) -> None:
        """Record that a user is gone (also when the configuration creates it at boot)."""
        self._config_record(RecordType.USER_DELETED, name)

    def permissions_set(self, user: str, vhost: str, permission: Permission) -> None:
        """Record a user's permissions on a vhost."""
        fields = [user, vhost, permission.configure, permission.write, permission.read]
        if self.metadata_log.permissions.get((user, vhost)) != fields:
            self._config_record(RecordType.PERMISSION, *fields)

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """Record that a user lost access to a vhost."""
        self._config_record(RecordType.PERMISSION_CLEARED, user, vhost)

    def policy_set(self, policy: Policy) -> None:
        """Record a policy."""
        fields = [
            policy.vhost,
            policy.name,
            policy.pattern,
            dict(policy.definition),
            {"priority": policy.priority, "apply-to": policy.apply_to},
        ]
        if self.metadata_log.policies.get((policy.vhost, policy.name)) != fields:
            self._config_record(RecordType.POLICY, *fields)

    def policy_cleared(self, vhost: str, name: str) -> None:
        """Forget a policy."""
        self._config_record(RecordType.POLICY_CLEARED, vhost, name)

    def _restore(self, queue: Queue, directory: Path, recovered: RecoveredQueue) -> int:
        queue.journal = None
        entries: list[tuple[QueueEntry, int]] = []
        no_headers: set[bytes] = set()  # properties seen without headers: skip decoding them
        shared: dict[object, object] = {}  # one copy of repeated names and properties
        sources = recovered.sources
        files: dict[int, BodyFile] = {}
        budget = self.config.memory_budget_bytes
        deadlines = recovered.deadlines
        wall_ms = queue.host.wall_time() * 1000
        small_ints: dict[int, int] = {}  # one object per distinct length (millions of them alike)
        for stored, size in recovered.stored():
            props = stored.properties_bin
            headers = None
            if props not in no_headers:
                headers = read_facts(props).headers
                if headers is None and len(no_headers) < 10_000:
                    no_headers.add(props)
            exchange, routing_key = stored.exchange, stored.routing_key
            if len(shared) < 30_000:
                exchange = shared.setdefault(exchange, exchange)  # type: ignore[assignment]
                routing_key = shared.setdefault(routing_key, routing_key)  # type: ignore[assignment]
                props = shared.setdefault(props, props)  # type: ignore[assignment]
            source, start, length = stored.source, stored.body_offset, stored.body_length
            paged = source >= 0 and self.resident_bytes + length > budget
            body: Any = stored.body
            if paged:
                file = files.get(source)
                if file is None:
                    file = files[source] = BodyFile(sources[source][0])
                length = small_ints.setdefault(length, length)
                body = BodyRef(file, start, length)
                size = small_ints.setdefault(size, size)
            elif source >= 0:
                body = bytes(sources[source][1][start : start + length])
            message = (PagedMessage if paged else Message)(
                exchange,
                routing_key,
                props,
                body,
                persistent=True,
                priority=stored.priority,
                expiration_ms=stored.expiration_ms,
                headers=headers,
            )
            queue.next_seq = stored.seq
            deadline = deadlines.get(stored.seq)
            if deadline is not None:  # the rest of its TTL: the deadline is absolute
                message.expiration_ms = max(0, int(deadline - wall_ms))
            entry = queue.enqueue(message)
            if deadline is not None:
                message.expiration_ms = stored.expiration_ms
                if entry is not None:
                    entry.message.expiration_ms = stored.expiration_ms
            if entry is not None:
                entry.delivery_count = stored.delivery_count
                if self.crashed and not entry.delivery_count:
                    entry.delivery_count = 1  # may have been delivered before the crash
                if paged:
                    entries.append((entry, -size))
                else:
                    self.resident_bytes += message.size
                    entries.append((entry, size))
        queue.next_seq = max(queue.next_seq, recovered.next_seq)
        queue.stats = MessageStats()
        journal = self._attach(queue, directory, recovered)
        for entry, size in entries:
            journal.live[entry.seq] = (entry, size)
            journal.live_bytes += abs(size)
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
