"""Recovery application: declare the stored entities in a broker and put their messages back."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.policy import Policy
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.config.models import StoreConfig
from amqplite.protocol.properties import read_facts
from amqplite.store.bodies import BodyFile, BodyRef
from amqplite.store.metadata import MetadataLog
from amqplite.store.queue_store import QueueStore
from amqplite.store.recovery import RecoveredQueue, recover_queue

log = logging.getLogger("amqplite.store")


@attrs.frozen
class RecoveryReport:
    """What recovery brought back and what it had to repair."""

    exchanges: int
    queues: int
    bindings: int
    messages: int
    problems: list[str]


class RecoveryApplier:
    """Applies the recovered metadata and queue journals to a broker, then attaches the store."""

    config: StoreConfig
    metadata_log: MetadataLog
    problems: list[str]
    crashed: bool
    resident_bytes: int

    if TYPE_CHECKING:  # provided by the Store and its metadata writer

        @property
        def queues_directory(self) -> Path:
            """Where the queue journals live, one directory each."""

        def attach(self, broker: Broker) -> None:
            """Listen to the broker."""

        def attach_journal(
            self, queue: Queue, directory: Path, recovered: RecoveredQueue | None
        ) -> QueueStore:
            """Give a durable queue its journal."""

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

    def _restore(self, queue: Queue, directory: Path, recovered: RecoveredQueue) -> int:
        """Put a queue's recovered messages back in it and give it its journal; how many."""
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
        journal = self.attach_journal(queue, directory, recovered)
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
