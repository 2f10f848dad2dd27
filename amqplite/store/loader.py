"""Recovery as plain values: the recorded definitions, and each queue's live messages in order."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from amqplite.config.models import StoreConfig
from amqplite.store.bodies import BodyFile, BodyRef
from amqplite.store.clean_index import CleanIndex, read_index
from amqplite.store.interface import (
    JournaledEntry,
    JournaledQueue,
    LimitsRecord,
    PermissionRecord,
    PolicyRecord,
    QueueRecord,
    RecoveredMessage,
    Recovery,
    TopicPermissionRecord,
    UserRecord,
)
from amqplite.store.journal import map_file
from amqplite.store.metadata import MetadataLog
from amqplite.store.quarantine import QuarantinedQueue, list_quarantine, move_aside
from amqplite.store.queue_store import QueueStore
from amqplite.store.records import RecordType
from amqplite.store.recovery import RecoveredQueue, recover_queue
from amqplite.store.snapshot import SNAPSHOT_NAME, remove_temp_files
from amqplite.store.stream_log import StreamLog
from amqplite.store.stream_records import is_stream

log = logging.getLogger("amqplite.store")


class LoadingStore(Protocol):
    """What a queue loader needs of its store: the budget, memory accounting, journals."""

    config: StoreConfig
    resident_bytes: int
    crashed: bool
    retired_fds: list[int]

    def attach_journal(
        self, queue: JournaledQueue, directory: Path, recovered: RecoveredQueue | None
    ) -> QueueStore:
        """Give a durable queue its journal in directory."""
        ...


class QueueLoader:
    """One queue's recovered messages, then its journal (implements store.interface.QueueLoad)."""

    def __init__(
        self,
        store: LoadingStore,
        directory: Path,
        recovered: RecoveredQueue,
        index: CleanIndex | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.recovered = recovered
        self.index = index
        self.next_seq = recovered.next_seq

    def messages(self) -> Iterator[RecoveredMessage]:
        """The live messages in queue order; bodies beyond the memory budget stay on disk."""
        if self.index is not None:
            return self._indexed(self.index)
        return self._replayed()

    def _replayed(self) -> Iterator[RecoveredMessage]:
        """From the snapshot and journal replay: records decoded one at a time."""
        store = self.store
        recovered = self.recovered
        shared: dict[Any, Any] = {}  # one copy of repeated names and properties
        sources = recovered.sources
        files: dict[int, BodyFile] = {}
        budget = store.config.memory_budget_bytes
        resident = store.resident_bytes
        deadlines = recovered.deadlines
        crashed = store.crashed
        small_ints: dict[int, int] = {}  # one object per distinct length (millions of them alike)
        for located, source, size in recovered.located():
            seq, count, priority, expiration, exchange, routing_key, props, start, length = located
            if len(shared) < 30_000:
                exchange = shared.setdefault(exchange, exchange)
                routing_key = shared.setdefault(routing_key, routing_key)
                props = shared.setdefault(props, props)
            body: bytes | BodyRef
            if resident + length > budget:
                file = files.get(source)
                if file is None:
                    file = files[source] = BodyFile(sources[source][0], store.retired_fds)
                length = small_ints.setdefault(length, length)
                body = BodyRef(file, start, length)
                size = -small_ints.setdefault(size, size)
            else:
                body = bytes(sources[source][1][start : start + length])
                resident += length
            if crashed and not count:
                count = 1  # may have been delivered before the crash
            yield (
                seq,
                count,
                priority,
                expiration,
                deadlines.get(seq),
                exchange,
                routing_key,
                props,
                body,
                size,
            )

    def _indexed(self, index: CleanIndex) -> Iterator[RecoveredMessage]:
        """From a clean-shutdown index: no record scanned or decoded; bodies beyond the budget
        stay in the snapshot."""
        path = self.directory / SNAPSHOT_NAME
        store = self.store
        room = store.config.memory_budget_bytes - store.resident_bytes
        self.next_seq = max(self.next_seq, index.next_seq)
        return index.messages(BodyFile(path), map_file(path), store.crashed, room)

    def open(self, queue: JournaledQueue, kept: Sequence[tuple[JournaledEntry, int]]) -> QueueStore:
        """The queue's journal, holding the entries kept (size negative: body on disk)."""
        store = self.store
        journal = store.attach_journal(queue, self.directory, self.recovered)
        journal.index_current = self.index is not None
        live = journal.live
        sizes = journal.sizes
        live_bytes = resident = 0
        for entry, size in kept:
            live[entry.seq] = entry
            sizes[entry.seq] = size
            if size > 0:
                live_bytes += size
                resident += entry.message.size
            else:
                live_bytes -= size
        journal.live_bytes += live_bytes
        store.resident_bytes += resident
        return journal


class StreamLoader:
    """A stream queue being recovered: no messages in memory, then its log (a QueueLoad)."""

    def __init__(self, attach: Callable[[], StreamLog]) -> None:
        self.attach = attach
        self.next_seq = 0

    def messages(self) -> Iterator[RecoveredMessage]:
        """None: a stream's messages stay in its segments."""
        return iter(())

    def open(self, queue: JournaledQueue, kept: Sequence[tuple[JournaledEntry, int]]) -> StreamLog:
        """The stream's log, recovered from its directory."""
        return self.attach()


class RecoveryReader:
    """Reads back what the store holds, as values for the layer above to apply."""

    config: StoreConfig
    metadata_log: MetadataLog
    directory: Path
    problems: list[str]
    crashed: bool
    resident_bytes: int
    quarantine_count: int
    retired_fds: list[int]

    if TYPE_CHECKING:  # provided by the Store, its metadata writer and commit bookkeeping

        def appended(self, journal: QueueStore | None) -> None:
            """A record was appended."""

        @property
        def queues_directory(self) -> Path:
            """Where the queue journals live, one directory each."""

        def attach_journal(
            self, queue: JournaledQueue, directory: Path, recovered: RecoveredQueue | None
        ) -> QueueStore:
            """Give a durable queue its journal in directory."""

        def attach_stream(self, vhost: str, name: str, directory: Path) -> StreamLog:
            """Give a stream queue its log in directory."""

    def recover(self) -> Recovery:
        """The durable definitions as last recorded (deletions included)."""
        meta = self.metadata_log
        policies: list[PolicyRecord] = []
        for vhost, name, pattern, definition, extra in meta.policies.values():
            try:
                priority = int(extra.get("priority", 0))
            except (TypeError, ValueError) as exc:
                self.problems.append(f"policy {name!r} in {vhost!r} not restored: {exc}")
                continue
            apply_to = str(extra.get("apply-to", "queues"))
            policies.append(
                PolicyRecord(vhost, name, pattern, dict(definition), priority, apply_to)
            )
        return Recovery(
            vhosts=list(meta.vhosts),
            deleted_users=sorted(meta.deleted_users),
            users=[
                UserRecord(name, password_hash, tuple(extra.get("tags", ())))
                for name, password_hash, extra in meta.users.values()
            ],
            cleared_permissions=sorted(meta.cleared_permissions),
            permissions=[PermissionRecord(*fields) for fields in meta.permissions.values()],
            policies=policies,
            exchanges=list(meta.exchanges.values()),
            queues=list(meta.queues.values()),
            bindings=list(meta.bindings.values()),
            topic_permissions=[
                TopicPermissionRecord(
                    user,
                    vhost,
                    exchange,
                    str(regexes.get("write", ".*")),
                    str(regexes.get("read", ".*")),
                )
                for (user, vhost), table in meta.topic_permissions.items()
                for exchange, regexes in table.items()
            ],
            limits=[
                LimitsRecord(kind, name, {str(k): int(v) for k, v in table.items()})
                for (kind, name), table in meta.limits.items()
            ],
        )

    def load_queue(self, record: QueueRecord) -> QueueLoader | StreamLoader:
        """Start recovering one queue's messages (raises if its files cannot be read)."""
        directory = self.queues_directory / record.directory
        if is_stream(record.arguments):
            return StreamLoader(partial(self.attach_stream, record.vhost, record.name, directory))
        index = read_index(directory)
        if index is not None:
            remove_temp_files(directory)
            recovered = RecoveredQueue([], {}, {}, 0, index.covers_through, {}, [])
            return QueueLoader(self, directory, recovered, index)
        recovered = recover_queue(directory, read_index(directory, with_segments=True))
        self.problems.extend(recovered.problems)
        return QueueLoader(self, directory, recovered)

    def prune_orphans(self) -> None:
        """Delete journal directories no durable queue refers to (deleted queues, crashed declares)."""
        root = self.queues_directory
        if not root.is_dir():
            return
        known = {record.directory for record in self.metadata_log.queues.values()}
        for path in root.iterdir():
            if path.name not in known:
                log.info("removing orphaned queue journal %s", path)
                shutil.rmtree(path, ignore_errors=True)

    def quarantine(self, record: QueueRecord, reason: str) -> None:
        """Move a queue's journal aside (never deleted), log it, and forget the queue."""
        source = self.queues_directory / record.directory
        path = move_aside(self.directory, source, record, reason)
        self.quarantine_count += 1
        self.problems.append(
            f"queue {record.name!r} in {record.vhost!r} not restored ({reason}); "
            f"its journal is kept in {path}"
        )
        if self.metadata_log.queues.get((record.vhost, record.name)) == record:
            self.metadata_log.append(RecordType.QUEUE_DELETED, record.vhost, record.name)
            self.appended(None)

    def quarantined(self) -> list[QuarantinedQueue]:
        """The journals of queues that could not be recovered, kept under quarantine/."""
        return list_quarantine(self.directory)
