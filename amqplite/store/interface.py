"""What the store reads of the layers above (protocols their types satisfy) and what it gives back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

from amqplite.store.metadata import BindingRecord, ExchangeRecord, QueueRecord

__all__ = [
    "BindingEnd",
    "BindingRecord",
    "BodyLocation",
    "DurableBinding",
    "DurableExchange",
    "DurablePermission",
    "DurablePolicy",
    "DurableStore",
    "ExchangeRecord",
    "JournaledEntry",
    "JournaledMessage",
    "JournaledQueue",
    "Paging",
    "PermissionRecord",
    "PolicyRecord",
    "QueueClock",
    "QueueJournalHandle",
    "QueueLoad",
    "QueueRecord",
    "QueueTtl",
    "RecoveredMessage",
    "Recovery",
    "UserRecord",
]

# -- what the store reads of a message, a queue entry and a queue (journaling) ------------


class BodyLocation(Protocol):
    """Where the store keeps a body that is not in memory."""

    length: int

    def read(self) -> bytes:
        """The body, read back from disk."""
        ...


class JournaledMessage(Protocol):
    """A persistent message as the journal records it."""

    @property
    def exchange(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def properties_bin(self) -> bytes: ...
    @property
    def body(self) -> bytes: ...
    @property
    def priority(self) -> int: ...
    @property
    def expiration_ms(self) -> int | None: ...
    @property
    def size(self) -> int: ...


class JournaledEntry(Protocol):
    """A message's place in one durable queue."""

    @property
    def seq(self) -> int: ...
    @property
    def delivery_count(self) -> int: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def message(self) -> JournaledMessage: ...


class QueueClock(Protocol):
    """The queue's clocks: monotonic seconds and POSIX seconds."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall_time(self) -> float:
        """POSIX seconds."""
        ...


class QueueTtl(Protocol):
    """The one queue setting the journal reads."""

    @property
    def message_ttl(self) -> int | None: ...


class JournaledQueue(Protocol):
    """A durable queue as the store records it and journals its messages."""

    @property
    def vhost(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def auto_delete(self) -> bool: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...
    @property
    def settings(self) -> QueueTtl: ...
    @property
    def host(self) -> QueueClock: ...


class Paging(Protocol):
    """How the layer above drops a message body from memory (implemented above the store)."""

    def is_paged(self, message: JournaledMessage) -> bool:
        """True when the message's body is on disk only."""
        ...

    def page_out(self, entry: JournaledEntry, body: BodyLocation) -> None:
        """Give the entry a copy of its message whose body is read from body."""
        ...

    def move(self, message: JournaledMessage, body: BodyLocation) -> None:
        """A paged message's body now lives at body (its old file is going away)."""
        ...

    def location(self, message: JournaledMessage) -> BodyLocation:
        """Where a paged message's body is."""
        ...


# -- what the store reads of durable entities and configuration ----------------------------


class DurableExchange(Protocol):
    """A durable exchange as recorded."""

    @property
    def name(self) -> str: ...
    @property
    def type_name(self) -> str: ...
    @property
    def auto_delete(self) -> bool: ...
    @property
    def internal(self) -> bool: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...


class BindingEnd(Protocol):
    """A binding's destination: a queue or an exchange by name."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...


class DurableBinding(Protocol):
    """A binding between durable ends as recorded."""

    @property
    def source(self) -> str: ...
    @property
    def destination(self) -> BindingEnd: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...


class DurablePermission(Protocol):
    """A user's permissions on a vhost (regular expressions)."""

    @property
    def configure(self) -> str: ...
    @property
    def write(self) -> str: ...
    @property
    def read(self) -> str: ...


class DurableTopicPermission(Protocol):
    """A user's routing-key regexes on one topic exchange."""

    @property
    def exchange(self) -> str: ...
    @property
    def write(self) -> str: ...
    @property
    def read(self) -> str: ...


class DurablePolicy(Protocol):
    """A policy as recorded."""

    @property
    def vhost(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def pattern(self) -> str: ...
    @property
    def definition(self) -> Mapping[str, Any]: ...
    @property
    def priority(self) -> int: ...
    @property
    def apply_to(self) -> str: ...


# -- what recovery gives back --------------------------------------------------------------


@attrs.frozen
class UserRecord:
    """A user as recorded (its password hash, never the password)."""

    name: str
    password_hash: str
    tags: tuple[str, ...]


@attrs.frozen
class PermissionRecord:
    """A user's permissions on a vhost as recorded."""

    user: str
    vhost: str
    configure: str
    write: str
    read: str


@attrs.frozen
class TopicPermissionRecord:
    """A user's topic permission on one exchange of a vhost as recorded."""

    user: str
    vhost: str
    exchange: str
    write: str
    read: str


@attrs.frozen
class LimitsRecord:
    """A user's or vhost's limits as recorded (kind "user" or "vhost")."""

    kind: str
    name: str
    limits: dict[str, int]


@attrs.frozen
class PolicyRecord:
    """A policy as recorded."""

    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int
    apply_to: str


@attrs.frozen
class Recovery:
    """The durable definitions as last recorded."""

    vhosts: Sequence[str]
    deleted_users: Sequence[str]
    users: Sequence[UserRecord]
    cleared_permissions: Sequence[tuple[str, str]]
    permissions: Sequence[PermissionRecord]
    policies: Sequence[PolicyRecord]
    exchanges: Sequence[ExchangeRecord]
    queues: Sequence[QueueRecord]
    bindings: Sequence[BindingRecord]
    topic_permissions: Sequence[TopicPermissionRecord] = ()
    limits: Sequence[LimitsRecord] = ()


RecoveredMessage = tuple[
    int, int, int, "int | None", "float | None", str, str, bytes, "bytes | BodyLocation", int
]
"""One live message of a recovered queue, in queue order (a plain tuple: millions are made):
(seq, delivery count, priority, expiration ms, TTL deadline as POSIX ms, exchange, routing key,
properties, body bytes or where the body is on disk, record bytes (negative: body not in memory))."""


class QueueJournalHandle(Protocol):
    """The journal the store gives a durable queue (the broker's QueueJournal)."""

    def enqueue(self, entry: JournaledEntry) -> None:
        """A persistent message entered the queue."""
        ...

    def remove(self, entry: JournaledEntry) -> None:
        """A persistent message left the queue for good."""
        ...

    def delivered(self, entry: JournaledEntry) -> None:
        """A persistent message was taken for delivery."""
        ...


class QueueLoad(Protocol):
    """One durable queue's messages being recovered, then its journal opened."""

    next_seq: int

    def messages(self) -> Iterator[RecoveredMessage]:
        """The live messages in queue order."""
        ...

    def open(
        self, queue: JournaledQueue, kept: Sequence[tuple[JournaledEntry, int]]
    ) -> QueueJournalHandle:
        """The queue's journal, holding the entries kept (entry, size as yielded)."""
        ...


class DurableStore(Protocol):
    """What the layer above uses of the store: recovery, records of durable entities, commits."""

    paging: Paging | None
    problems: list[str]

    def recover(self) -> Recovery:
        """The durable definitions as last recorded."""
        ...

    def load_queue(self, record: QueueRecord) -> QueueLoad:
        """Start recovering one queue's messages (raises if its files cannot be read)."""
        ...

    def quarantine(self, record: QueueRecord, reason: str) -> None:
        """Move a queue's unreadable journal aside (never deleted) and forget the queue."""
        ...

    def prune_orphans(self) -> None:
        """Delete journal directories no durable queue refers to."""
        ...

    def queue_declared(self, queue: JournaledQueue) -> QueueJournalHandle:
        """Record a durable queue; its journal."""
        ...

    def queue_deleted(self, vhost: str, name: str) -> None:
        """Forget a durable queue."""
        ...

    def has_queue(self, vhost: str, name: str) -> bool:
        """True when the queue is recorded."""
        ...

    def has_exchange(self, vhost: str, name: str) -> bool:
        """True when the exchange is recorded."""
        ...

    def has_binding(self, vhost: str, binding: DurableBinding) -> bool:
        """True when the binding is recorded."""
        ...

    def exchange_declared(self, vhost: str, exchange: DurableExchange) -> None:
        """Record a durable exchange."""
        ...

    def exchange_deleted(self, vhost: str, name: str) -> None:
        """Forget a durable exchange."""
        ...

    def plugin_state(self, scope: str, vhost: str) -> dict[str, dict[str, Any]]:
        """A plugin's durable records of one scope in a vhost, by key."""
        ...

    def plugin_state_put(self, scope: str, vhost: str, key: str, value: Mapping[str, Any]) -> None:
        """Record or replace a plugin's record."""
        ...

    def plugin_state_delete(self, scope: str, vhost: str, key: str) -> None:
        """Forget one of a plugin's records."""
        ...

    def plugin_state_clear(self, scope: str, vhost: str) -> None:
        """Forget every record of a scope."""
        ...

    def held_spool(self, vhost: str, exchange: str, durable: bool) -> Any:
        """The spool of an exchange's held messages (store.spool.Spool)."""
        ...

    def drop_held_spool(self, spool: Any) -> None:
        """Forget a spool: its exchange is gone."""
        ...

    def binding_added(self, vhost: str, binding: DurableBinding) -> None:
        """Record a durable binding."""
        ...

    def binding_removed(self, vhost: str, binding: DurableBinding) -> None:
        """Forget a durable binding."""
        ...

    def watch(self) -> Any:
        """Start noting the commit domains records are appended to (the token for watched())."""
        ...

    def watched(self, outer: Any) -> tuple[tuple[Any, int], ...] | None:
        """The (domain, ticket) pairs appended since watch(): a mark to wait for, or None."""
        ...

    def vhost_added(self, name: str) -> None:
        """Record a vhost."""
        ...

    def vhost_deleted(self, name: str) -> None:
        """Forget a vhost."""
        ...

    def user_set(self, name: str, password_hash: str, tags: tuple[str, ...]) -> None:
        """Record a user."""
        ...

    def user_deleted(self, name: str) -> None:
        """Record that a user is gone."""
        ...

    def permissions_set(self, user: str, vhost: str, permission: DurablePermission) -> None:
        """Record a user's permissions on a vhost."""
        ...

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """Record that a user lost access to a vhost."""
        ...

    def policy_set(self, policy: DurablePolicy) -> None:
        """Record a policy."""
        ...

    def policy_cleared(self, vhost: str, name: str) -> None:
        """Forget a policy."""
        ...

    def topic_permissions_set(
        self, user: str, vhost: str, permissions: Sequence[DurableTopicPermission]
    ) -> None:
        """Record a user's topic permissions on a vhost, all of them (none: cleared)."""
        ...

    def limits_set(self, kind: str, name: str, limits: Mapping[str, int]) -> None:
        """Record a user's or vhost's limits, all of them (none: cleared)."""
        ...
