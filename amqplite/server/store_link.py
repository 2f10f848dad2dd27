"""The broker's side of the store: durable entities reported to it, paging, and attaching it."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.broker.broker import Broker
from amqplite.broker.message import PagedMessage, QueueEntry
from amqplite.broker.queue import Queue
from amqplite.broker.vhost import Binding, Exchange, VHost
from amqplite.store.interface import BodyLocation, DurableStore, JournaledEntry, JournaledMessage


class MessagePaging:
    """Drops message bodies from memory for the store (implements store.interface.Paging)."""

    def is_paged(self, message: JournaledMessage) -> bool:
        """True when the message's body is on disk only."""
        return type(message) is PagedMessage

    def page_out(self, entry: JournaledEntry, body: BodyLocation) -> None:
        """Give the entry a copy of its message whose body is read from body."""
        assert isinstance(entry, QueueEntry)
        entry.message = PagedMessage.of(entry.message, body)

    def move(self, message: JournaledMessage, body: BodyLocation) -> None:
        """A paged message's body now lives at body."""
        assert isinstance(message, PagedMessage)
        message.location = body

    def location(self, message: JournaledMessage) -> BodyLocation:
        """Where a paged message's body is."""
        assert isinstance(message, PagedMessage)
        return message.location


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")


class DurableEntities:
    """Records durable queues, exchanges and bindings in the store (a broker MetadataListener)."""

    def __init__(self, store: DurableStore, broker: Broker) -> None:
        self.store = store
        self.broker = broker
        self.exchange_vhosts: dict[int, str] = {}  # id(exchange) -> vhost, for recorded exchanges

    def queue_declared(self, queue: Queue) -> None:
        """Record a durable queue and give it its journal."""
        queue.journal = self.store.queue_declared(queue)

    def queue_deleted(self, queue: Queue) -> None:
        """Forget a durable queue; its journal goes after the next commit."""
        self.store.queue_deleted(queue.vhost, queue.name)
        queue.journal = None

    def exchange_declared(self, exchange: Exchange) -> None:
        """Record a durable exchange (never the default or amq.* ones)."""
        if _builtin(exchange.name):
            return
        vhost = self._vhost_of(lambda v: v.exchanges.get(exchange.name) is exchange)
        if vhost is None:
            return
        self.exchange_vhosts[id(exchange)] = vhost
        self.store.exchange_declared(vhost, exchange)

    def exchange_deleted(self, exchange: Exchange) -> None:
        """Forget a durable exchange."""
        vhost = self.exchange_vhosts.pop(id(exchange), None)
        if vhost is not None:
            self.store.exchange_deleted(vhost, exchange.name)

    def binding_added(self, binding: Binding) -> None:
        """Record a durable binding."""
        vhost = self._vhost_of_binding(binding)
        if vhost is not None:
            self.store.binding_added(vhost, binding)

    def binding_removed(self, binding: Binding) -> None:
        """Forget a durable binding."""
        vhost = self._vhost_of_binding(binding)
        if vhost is not None:
            self.store.binding_removed(vhost, binding)

    def _vhost_of_binding(self, binding: Binding) -> str | None:
        return self._vhost_of(lambda v: binding in v.bindings_by_source.get(binding.source, ()))

    def _vhost_of(self, test: Callable[[VHost], bool]) -> str | None:
        """The name of the vhost that holds an exchange or binding."""
        for name, vhost in self.broker.vhosts.items():
            if test(vhost):
                return name
        return None

    def adopt(self) -> None:
        """Record durable entities that exist but were never reported (declared before attach)."""
        store, broker = self.store, self.broker
        for name in broker.vhosts:
            store.vhost_added(name)
        for user in broker.users.values():
            store.user_set(user.name, user.password_hash, user.tags)
        for (user_name, vhost_name), permission in broker.permissions.items():
            store.permissions_set(user_name, vhost_name, permission)
        for policy in broker.policies.values():
            store.policy_set(policy)
        for (user_name, vhost_name), by_exchange in broker.topic_permissions.items():
            store.topic_permissions_set(user_name, vhost_name, list(by_exchange.values()))
        for kind, held in (("user", broker.user_limits), ("vhost", broker.vhost_limits)):
            for name, limits in held.items():
                store.limits_set(kind, name, limits)
        for name, vhost in broker.vhosts.items():
            for exchange in vhost.exchanges.values():
                if not exchange.durable or _builtin(exchange.name):
                    continue
                if store.has_exchange(name, exchange.name):
                    self.exchange_vhosts[id(exchange)] = name
                else:
                    self.exchange_declared(exchange)
            for queue in vhost.queues.values():
                if queue.durable and not queue.exclusive and not store.has_queue(name, queue.name):
                    self.queue_declared(queue)
                    journal = queue.journal
                    for entry in queue.ready:
                        if entry.message.persistent and journal is not None:
                            journal.enqueue(entry)
            for binding in vhost.bindings():
                if vhost.is_durable_binding(binding) and not store.has_binding(name, binding):
                    store.binding_added(name, binding)


def attach(broker: Broker, store: DurableStore) -> DurableEntities:
    """Let the store listen to the broker: durable entities are recorded, confirms wait for commits."""
    store.paging = MessagePaging()
    entities = DurableEntities(store, broker)
    broker.commits = store
    broker.metadata = entities
    broker.plugin_state = store
    broker.config_listener = store
    for vhost in broker.vhosts.values():
        vhost.metadata = entities
        vhost.plugin_state = store
    entities.adopt()
    return entities
