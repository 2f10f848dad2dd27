"""The metadata log writer: durable entities and configuration changes reported by the broker."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amqplite.config.models import StoreConfig
from amqplite.store.interface import (
    DurableBinding,
    DurableExchange,
    DurablePermission,
    DurablePolicy,
    DurableTopicPermission,
    JournaledQueue,
    Paging,
)
from amqplite.store.metadata import BindingRecord, MetadataLog
from amqplite.store.queue_store import QueueStore
from amqplite.store.records import RecordType
from amqplite.store.recovery import RecoveredQueue
from amqplite.store.stream_log import StreamLog
from amqplite.store.stream_records import is_stream

if TYPE_CHECKING:
    from amqplite.store.domains import CommitDomain


def _binding_record(vhost: str, binding: DurableBinding) -> BindingRecord:
    """The record of a binding (its key identifies it)."""
    return BindingRecord(
        vhost,
        binding.source,
        binding.destination.kind,
        binding.destination.name,
        binding.routing_key,
        dict(binding.arguments),
    )


def builtin(name: str) -> bool:
    """True for the default exchange and the amq.* ones (never recorded)."""
    return name == "" or name.startswith("amq.")


class MetadataWriter:
    """Records durable entities and configuration changes in the metadata log, as plain values."""

    config: StoreConfig
    metadata_log: MetadataLog
    journals: dict[tuple[str, str], QueueStore]
    streams: dict[tuple[str, str], StreamLog]
    resident_bytes: int
    paged_out: int
    paging: Paging | None
    retired_fds: list[int]

    if TYPE_CHECKING:  # provided by the Store and its commit bookkeeping

        @property
        def queues_directory(self) -> Path:
            """Where the queue journals live, one directory each."""

        def appended(self, journal: QueueStore | None) -> None:
            """A record was appended."""

        def new_domain(self, name: str) -> CommitDomain:
            """A commit sequence for a queue journal."""

        def touched(self, journal: QueueStore | None) -> None:
            """Something needs writing at the next commit."""

        def doom(self, journal: QueueStore | StreamLog) -> None:
            """A deleted queue's journal goes after the next commit."""

    # -- MetadataListener ----------------------------------------------------------------

    def queue_declared(self, queue: JournaledQueue) -> QueueStore | StreamLog:
        """Record a durable queue; its new journal (a stream queue: its log)."""
        directory = secrets.token_hex(8)
        self.metadata_log.append(
            RecordType.QUEUE,
            queue.vhost,
            queue.name,
            directory,
            queue.auto_delete,
            dict(queue.arguments),
        )
        self.appended(None)  # first: the journal's commits wait for this record
        if is_stream(queue.arguments):
            return self.attach_stream(queue.vhost, queue.name, self.queues_directory / directory)
        return self.attach_journal(queue, self.queues_directory / directory, None)

    def attach_stream(self, vhost: str, name: str, directory: Path) -> StreamLog:
        """Give a stream queue its log in directory (recovered from it, or new)."""
        stream = StreamLog.open(self, f"{vhost}/{name}", directory)
        self.streams[(vhost, name)] = stream
        return stream

    def attach_journal(
        self, queue: JournaledQueue, directory: Path, recovered: RecoveredQueue | None
    ) -> QueueStore:
        """Give a durable queue its journal in directory (recovered from it, or new)."""
        journal = QueueStore(self, queue, directory, recovered)
        self.journals[(queue.vhost, queue.name)] = journal
        return journal

    def queue_deleted(self, vhost: str, name: str) -> None:
        """Forget a durable queue; its journal directory goes after the next commit."""
        self.metadata_log.append(RecordType.QUEUE_DELETED, vhost, name)
        stream = self.streams.pop((vhost, name), None)
        if stream is not None:
            stream.dead = True
            self.doom(stream)
        journal = self.journals.pop((vhost, name), None)
        if journal is not None:
            journal.dead = True
            self.resident_bytes -= sum(
                e.message.size for seq, e in journal.live.items() if journal.sizes[seq] > 0
            )
            self.doom(journal)
        self.appended(None)

    def has_queue(self, vhost: str, name: str) -> bool:
        """True when the queue is recorded."""
        return (vhost, name) in self.metadata_log.queues

    def has_exchange(self, vhost: str, name: str) -> bool:
        """True when the exchange is recorded."""
        return (vhost, name) in self.metadata_log.exchanges

    def has_binding(self, vhost: str, binding: DurableBinding) -> bool:
        """True when the binding is recorded."""
        return _binding_record(vhost, binding).key in self.metadata_log.bindings

    def exchange_declared(self, vhost: str, exchange: DurableExchange) -> None:
        """Record a durable exchange (never the default or amq.* ones)."""
        if builtin(exchange.name):
            return
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

    def exchange_deleted(self, vhost: str, name: str) -> None:
        """Forget a durable exchange."""
        self.metadata_log.append(RecordType.EXCHANGE_DELETED, vhost, name)
        self.appended(None)

    def binding_added(self, vhost: str, binding: DurableBinding) -> None:
        """Record a durable binding."""
        self._binding(RecordType.BINDING, vhost, binding)

    def binding_removed(self, vhost: str, binding: DurableBinding) -> None:
        """Forget a durable binding."""
        self._binding(RecordType.BINDING_REMOVED, vhost, binding)

    def _binding(self, record_type: RecordType, vhost: str, binding: DurableBinding) -> None:
        """Append a binding record."""
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

    # -- ConfigListener ------------------------------------------------------------------

    def _config_record(self, record_type: RecordType, *fields: Any) -> None:
        """Append a configuration record."""
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

    def permissions_set(self, user: str, vhost: str, permission: DurablePermission) -> None:
        """Record a user's permissions on a vhost."""
        fields = [user, vhost, permission.configure, permission.write, permission.read]
        if self.metadata_log.permissions.get((user, vhost)) != fields:
            self._config_record(RecordType.PERMISSION, *fields)

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """Record that a user lost access to a vhost."""
        self._config_record(RecordType.PERMISSION_CLEARED, user, vhost)

    def policy_set(self, policy: DurablePolicy) -> None:
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

    def topic_permissions_set(
        self, user: str, vhost: str, permissions: Sequence[DurableTopicPermission]
    ) -> None:
        """Record a user's topic permissions on a vhost, all of them (none: cleared)."""
        table = {p.exchange: {"write": p.write, "read": p.read} for p in permissions}
        if self.metadata_log.topic_permissions.get((user, vhost), {}) != table:
            self._config_record(RecordType.TOPIC_PERMISSIONS, user, vhost, table)

    def limits_set(self, kind: str, name: str, limits: Mapping[str, int]) -> None:
        """Record a user's or vhost's limits, all of them (none: cleared)."""
        table = dict(limits)
        if self.metadata_log.limits.get((kind, name), {}) != table:
            self._config_record(RecordType.LIMITS, kind, name, table)

    def plugin_state(self, scope: str, vhost: str) -> dict[str, dict[str, Any]]:
        """A plugin's durable records of one scope in a vhost, by key (a copy)."""
        return dict(self.metadata_log.plugin_state.get((vhost, scope), {}))

    def plugin_state_put(self, scope: str, vhost: str, key: str, value: Mapping[str, Any]) -> None:
        """Record (or replace) a plugin's record; a confirm waiting on it waits for its commit."""
        self.metadata_log.append(RecordType.PLUGIN_STATE, scope, vhost, key, dict(value))
        self.appended(None)

    def plugin_state_delete(self, scope: str, vhost: str, key: str) -> None:
        """Forget one of a plugin's records."""
        if key in self.metadata_log.plugin_state.get((vhost, scope), {}):
            self.metadata_log.append(RecordType.PLUGIN_STATE_DELETED, scope, vhost, key)
            self.appended(None)

    def plugin_state_clear(self, scope: str, vhost: str) -> None:
        """Forget every record of a scope (its exchange was deleted)."""
        if (vhost, scope) in self.metadata_log.plugin_state:
            self.metadata_log.append(RecordType.PLUGIN_SCOPE_CLEARED, scope, vhost)
            self.appended(None)

    def policy_cleared(self, vhost: str, name: str) -> None:
        """Forget a policy."""
        self._config_record(RecordType.POLICY_CLEARED, vhost, name)
