"""Recovery applied: the store's recovered values declared in the broker, their messages put back."""

from __future__ import annotations

import logging

import attrs

from amqplite.broker.auth import Permission, TopicPermission
from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.policy import Policy
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.protocol.properties import read_facts
from amqplite.server.store_link import attach
from amqplite.store.interface import DurableStore, JournaledEntry, QueueRecord, Recovery

log = logging.getLogger("amqplite.store")


@attrs.frozen
class RecoveryReport:
    """What recovery brought back and what it had to repair."""

    exchanges: int
    queues: int
    bindings: int
    messages: int
    problems: list[str]
    quarantined: int = 0  # queues whose journal was moved aside at this boot


def recover_into(broker: Broker, store: DurableStore) -> RecoveryReport:
    """Declare the stored entities in the broker, restore their messages, then attach the store."""
    recovery = store.recover()
    totals = attrs.asdict(broker.totals)
    problems: list[str] = []
    _restore_config(broker, recovery, problems)
    broker.plugin_state = store  # plugins' routers read their durable records as they are made
    for vhost_ in broker.vhosts.values():
        vhost_.plugin_state = store
    exchanges = queues = bindings = messages = 0
    quarantined: list[QueueRecord] = []
    for record in recovery.exchanges:
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
    for stored in recovery.queues:
        restored = _restore_queue(broker, store, stored, quarantined)
        if restored is not None:
            queues += 1
            messages += restored
    for binding in recovery.bindings:
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
    store.prune_orphans()
    for name, value in totals.items():
        setattr(broker.totals, name, value)
    attach(broker, store)
    problems = store.problems + problems
    for text in problems:
        log.warning("recovery: %s", text)
    return RecoveryReport(exchanges, queues, bindings, messages, problems, len(quarantined))


def _restore_config(broker: Broker, recovery: Recovery, problems: list[str]) -> None:
    """Vhosts, users, permissions and policies as last changed (deletions included)."""
    for name in recovery.vhosts:
        broker.add_vhost(name)
    for name in recovery.deleted_users:
        if name in broker.users:
            broker.delete_user(name)
    for user in recovery.users:
        broker.add_user(user.name, "", user.tags, password_hash=user.password_hash)
    for user_name, vhost_name in recovery.cleared_permissions:
        broker.clear_permissions(user_name, vhost_name)
    for grant in recovery.permissions:
        if grant.user in broker.users and grant.vhost in broker.vhosts:
            broker.set_permissions(
                grant.user, grant.vhost, Permission(grant.configure, grant.write, grant.read)
            )
    for policy in recovery.policies:
        broker.add_vhost(policy.vhost)
        try:
            broker.set_policy(
                Policy(
                    policy.vhost,
                    policy.name,
                    policy.pattern,
                    dict(policy.definition),
                    policy.priority,
                    policy.apply_to,
                )
            )
        except (ValueError, KeyError) as exc:
            problems.append(f"policy {policy.name!r} in {policy.vhost!r} not restored: {exc}")
    for topic in recovery.topic_permissions:
        if topic.user in broker.users and topic.vhost in broker.vhosts:
            permission = TopicPermission(topic.exchange, topic.write, topic.read)
            broker.set_topic_permission(topic.user, topic.vhost, permission)
    for held in recovery.limits:
        for limit, value in held.limits.items():
            if held.name in (broker.users if held.kind == "user" else broker.vhosts):
                broker.set_limit(held.kind, held.name, limit, value)


def _restore_queue(
    broker: Broker, store: DurableStore, record: QueueRecord, quarantined: list[QueueRecord]
) -> int | None:
    """Declare one durable queue and put its messages back; how many (None: not restored)."""
    vhost = broker.add_vhost(record.vhost)
    try:
        queue = vhost.declare_queue(
            record.name,
            durable=True,
            auto_delete=record.auto_delete,
            arguments=dict(record.arguments),
        )
    except Exception as exc:  # its data is kept aside, never deleted by a later redeclare
        store.quarantine(record, f"declare failed: {exc}")
        quarantined.append(record)
        return None
    try:
        return _restore_messages(queue, store, record)
    except Exception as exc:
        log.exception("reading the journal of queue %r in %r failed", record.name, record.vhost)
        vhost.delete_queue(record.name)  # never recorded: the store was not listening yet
        store.quarantine(record, f"its journal could not be read: {exc!r}")
        quarantined.append(record)
        return None


def _restore_messages(queue: Queue, store: DurableStore, record: QueueRecord) -> int:
    """Put a queue's recovered messages back in it and give it its journal; how many."""
    load = store.load_queue(record)
    queue.journal = None
    kept: list[tuple[JournaledEntry, int]] = []
    no_headers: set[bytes] = set()  # properties seen without headers: skip decoding them
    wall_ms = queue.host.wall_time() * 1000
    for (
        seq,
        count,
        priority,
        expiration_ms,
        deadline,
        exchange,
        routing_key,
        props,
        body,
        size,
    ) in load.messages():
        headers = None
        if props not in no_headers:
            headers = read_facts(props).headers
            if headers is None and len(no_headers) < 10_000:
                no_headers.add(props)
        if isinstance(body, bytes):
            message = Message(
                exchange, routing_key, props, body, True, priority, expiration_ms, headers
            )
        else:  # a paged message keeps its body's location
            message = PagedMessage(
                exchange,
                routing_key,
                props,
                body,  # type: ignore[arg-type]
                True,
                priority,
                expiration_ms,
                headers,
            )
        queue.next_seq = seq
        if deadline is not None:  # the rest of its TTL: the deadline is absolute
            message.expiration_ms = max(0, int(deadline - wall_ms))
        entry: QueueEntry | None = queue.enqueue(message)
        if deadline is not None:
            message.expiration_ms = expiration_ms
            if entry is not None:
                entry.message.expiration_ms = expiration_ms
        if entry is not None:
            entry.delivery_count = count
            kept.append((entry, size))
    queue.next_seq = max(queue.next_seq, load.next_seq)
    queue.stats = MessageStats()
    queue.journal = load.open(queue, kept)
    return len(kept)
