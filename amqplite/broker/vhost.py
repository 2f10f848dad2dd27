"""VHost: the exchanges, queues and bindings of one virtual host, and publishing into them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from amqplite.broker.binding import Binding
from amqplite.broker.dispatch_batch import DispatchBatch
from amqplite.broker.durability import MetadataListener, PluginStateStore
from amqplite.broker.equivalence import check_exchange_equivalent, check_queue_equivalent
from amqplite.broker.exchange import BUILTIN_EXCHANGES, Exchange
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import (
    Arguments,
    Destination,
    ExchangeType,
    ExchangeTypeRegistry,
    HeldMessage,
    Router,
    Verdict,
)
from amqplite.broker.plugin_host import exchange_router, queue_hooks
from amqplite.broker.policy import Policy, effective_exchange_policy
from amqplite.broker.queue import Queue
from amqplite.broker.queue_host import DETACHED, QueueHost
from amqplite.broker.routing import Routed, route_through
from amqplite.broker.stats import Churn, MessageStats
from amqplite.broker.stream_arguments import check_stream_declare, is_stream_arguments
from amqplite.broker.stream_queue import StreamQueue
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

# Binding and Exchange moved to their own modules; still importable from here.
__all__ = ["Binding", "Exchange", "VHost"]


class VHost:
    """Exchanges, queues and bindings of one virtual host; every name lookup raises 404 itself."""

    def __init__(
        self, name: str, registry: ExchangeTypeRegistry, totals: MessageStats | None = None
    ) -> None:
        self.name = name
        self.registry = registry
        self.totals = totals if totals is not None else MessageStats()
        self.churn = Churn()  # the broker's, once added to it
        self.metadata: MetadataListener | None = None
        self.plugin_state: PluginStateStore | None = None  # plugins' durable records
        self.host: QueueHost = DETACHED  # the broker: clocks, timers, dead-lettering, policies
        self.batch = DispatchBatch()  # the broker's: publishes read in a row dispatch once
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.bindings_by_source: dict[str, dict[Binding, None]] = {}
        self.bindings_by_destination: dict[Destination, dict[Binding, None]] = {}
        self.on_queue_deleted: list[Callable[[Queue], None]] = []
        self.exchange_policies: list[Policy] = []  # this vhost's policies, for exchanges
        # by queue name: a message routed to that queue alone (the default exchange's usual
        # outcome), made once instead of per publish; dropped with the queue
        self._alone: dict[str, Routed] = {}
        self._add_exchange(Exchange("", "direct", self._router("direct"), durable=True))
        for name_, type_name in BUILTIN_EXCHANGES:
            self._add_exchange(Exchange(name_, type_name, self._router(type_name), durable=True))

    def _router(self, type_name: str) -> Router:
        exchange_type = self.registry.get(type_name)
        assert exchange_type is not None
        return exchange_type.create_router()

    def _add_exchange(self, exchange: Exchange) -> None:
        self.exchanges[exchange.name] = exchange
        if self.exchange_policies:
            self._apply_policy(exchange)

    def apply_policies(self, policies: Iterable[Policy]) -> None:
        """Set this vhost's policies and re-apply them to every exchange (queues re-apply theirs)."""
        self.exchange_policies = [p for p in policies if p.apply_to in ("exchanges", "all")]
        for exchange in self.exchanges.values():
            self._apply_policy(exchange)

    def _apply_policy(self, exchange: Exchange) -> None:
        policy = effective_exchange_policy(self.exchange_policies, exchange.name)
        exchange.policy = policy.name if policy is not None else None
        alternate = policy.definition.get("alternate-exchange") if policy is not None else None
        exchange.policy_alternate = alternate if isinstance(alternate, str) else None

    # -- lookups -------------------------------------------------------------------------

    def exchange(self, name: str) -> Exchange:
        """The named exchange, or 404."""
        try:
            return self.exchanges[name]
        except KeyError:
            raise ChannelException(
                ReplyCode.NOT_FOUND, f"no exchange '{name}' in vhost '{self.name}'"
            ) from None

    def queue(self, name: str, owner: object | None = None) -> Queue:
        """The named queue, or 404; 405 if it is exclusive to another connection."""
        try:
            queue = self.queues[name]
        except KeyError:
            raise ChannelException(
                ReplyCode.NOT_FOUND, f"no queue '{name}' in vhost '{self.name}'"
            ) from None
        self.check_exclusive(queue, owner)
        return queue

    def check_exclusive(self, queue: Queue, owner: object | None) -> None:
        """405 RESOURCE_LOCKED when the queue is exclusive to another connection."""
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(queue)

    def _locked(self, queue: Queue) -> ChannelException:
        return ChannelException(
            ReplyCode.RESOURCE_LOCKED,
            f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost "
            f"'{self.name}'. It could be originally declared on another connection or the "
            "exclusive property value does not match that of the original declaration.",
        )

    # -- exchanges -----------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Arguments | None = None,
    ) -> Exchange:
        """exchange.declare: create, or check that the existing one is equivalent."""
        arguments = arguments or {}
        if name == "":  # passive or not, as RabbitMQ
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                "operation not permitted on the default exchange",
                ClassId.EXCHANGE,
                10,
            )
        if passive:
            return self.exchange(name)
        existing = self.exchanges.get(name)
        if existing is None and (name == "" or name.startswith("amq.")):
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                f"exchange name '{name}' contains reserved prefix 'amq.*'",
                ClassId.EXCHANGE,
                10,
            )
        exchange_type = self.registry.get(type_name)
        if exchange_type is None:  # a channel error, as RabbitMQ has answered since 3.12
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"invalid exchange type '{type_name}'",
                ClassId.EXCHANGE,
                10,
            )
        if existing is not None:
            check_exchange_equivalent(
                self.name,
                existing,
                exchange_type,
                type_name,
                durable,
                auto_delete,
                internal,
                arguments,
            )
            return existing
        exchange_type.validate(arguments)
        exchange = Exchange(
            name,
            type_name,
            self._create_router(exchange_type, name, durable, arguments),
            durable,
            auto_delete,
            internal,
            arguments,
        )
        self._add_exchange(exchange)
        if durable and self.metadata is not None:
            self.metadata.exchange_declared(exchange)
        return exchange

    def _create_router(
        self, exchange_type: ExchangeType, name: str, durable: bool, arguments: Arguments
    ) -> Router:
        """The type's router; one with create_router_in gets the exchange and the scheduler."""
        return exchange_router(
            exchange_type,
            self.name,
            name,
            durable,
            arguments,
            self.registry,
            lambda: self.host,
            lambda: self.plugin_state,
            self._releaser(name),
        )

    def _releaser(self, exchange_name: str) -> Callable[[HeldMessage], None]:
        def release(message: HeldMessage) -> None:
            self.release(exchange_name, message)

        return release

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        """exchange.delete; a missing exchange is not an error (as RabbitMQ)."""
        if name == "" or name.startswith("amq."):
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                "operation not permitted on the default exchange"
                if name == ""
                else f"deletion of system exchange '{name}' in vhost '{self.name}' refused",
                ClassId.EXCHANGE,
                20,
            )
        exchange = self.exchanges.get(name)
        if exchange is None:
            return
        if if_unused and self.bindings_by_source.get(name):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"exchange '{name}' in vhost '{self.name}' in use",
                ClassId.EXCHANGE,
                20,
            )
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        for binding in list(self.bindings_by_source.get(exchange.name, ())):
            self._remove_binding(binding, cascade=False)
        dest = Destination("exchange", exchange.name)
        for binding in list(self.bindings_by_destination.get(dest, ())):
            self._remove_binding(binding)
        self.bindings_by_source.pop(exchange.name, None)
        self.exchanges.pop(exchange.name, None)
        close = getattr(exchange.router, "close", None)
        if close is not None:
            close()
        if exchange.durable and self.metadata is not None:
            self.metadata.exchange_deleted(exchange)

    # -- queues --------------------------------------------------------------------------

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments | None = None,
        owner: object | None = None,
    ) -> Queue:
        """queue.declare: create, or check the existing queue is equivalent and accessible."""
        self.churn.queue_declared += 1
        arguments = arguments or {}
        if passive:
            queue = self.queue(name, owner)
            queue.touch()  # a passive declare renews x-expires too, as in RabbitMQ
            return queue
        if name == "":
            name = "amq.gen-" + secrets.token_urlsafe(16)
        elif name.startswith("amq."):
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                f"queue name '{name}' contains reserved prefix 'amq.*'",
                ClassId.QUEUE,
                10,
            )
        existing = self.queues.get(name)
        if existing is not None:
            self.check_exclusive(existing, owner)
            if (existing.exclusive_owner is not None) != exclusive:  # 405 here too, as RabbitMQ
                raise self._locked(existing)
            check_queue_equivalent(self.name, existing, durable, exclusive, auto_delete, arguments)
            existing.touch()
            return existing
        queue_class = Queue
        if is_stream_arguments(arguments):
            check_stream_declare(name, self.name, durable, exclusive, auto_delete, arguments)
            queue_class = StreamQueue
        queue = queue_class(
            name,
            self.name,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=arguments,
            host=self.host,
            totals=self.totals,
            on_delete=self.remove_queue,
        )
        plugins = self.registry.queue_plugins()
        if plugins:
            try:
                queue.hooks = queue_hooks(
                    self.name, queue, plugins, lambda: self.host, lambda: self.plugin_state
                )
            except BaseException:
                queue.deleted = True  # never added: its timers do nothing
                raise
        self.queues[name] = queue
        self.churn.queue_created += 1
        if durable and not exclusive and self.metadata is not None:
            self.metadata.queue_declared(queue)
        return queue

    def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: object | None = None,
    ) -> int:
        """queue.delete: the number of ready messages deleted; a missing queue gives 0."""
        queue = self.queues.get(name)
        if queue is None:
            return 0
        self.check_exclusive(queue, owner)
        if if_unused and queue.consumers:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"queue '{name}' in vhost '{self.name}' in use",
                ClassId.QUEUE,
                40,
            )
        if if_empty and queue.message_count:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"queue '{name}' in vhost '{self.name}' is not empty",
                ClassId.QUEUE,
                40,
            )
        return self.remove_queue(queue)

    def remove_queue(self, queue: Queue) -> int:
        """Delete a queue: drop its bindings, cancel its consumers, return its ready count."""
        if queue.deleted:
            return 0
        count = queue.message_count
        queue.deleted = True
        self.churn.queue_deleted += 1
        self.queues.pop(queue.name, None)
        self._alone.pop(queue.name, None)
        for binding in list(self.bindings_by_destination.get(Destination("queue", queue.name), ())):
            self._remove_binding(binding)
        for consumer in list(queue.consumers):
            consumer.queue_gone()
        queue.consumers.clear()
        queue.purge()
        if queue.hooks is not None:
            queue.hooks.close()
        for hook in self.on_queue_deleted:
            hook(queue)
        if queue.durable and not queue.exclusive and self.metadata is not None:
            self.metadata.queue_deleted(queue)
        return count

    # -- bindings ------------------------------------------------------------------------

    def _check_bindable_source(self, name: str) -> Exchange:
        if name == "":
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange"
            )
        return self.exchange(name)

    def bind(
        self,
        source: str,
        destination: Destination,
        routing_key: str,
        arguments: Arguments | None = None,
        owner: object | None = None,
    ) -> None:
        """queue.bind / exchange.bind; binding twice is a no-op."""
        arguments = arguments or {}
        self._check_destination(destination, owner)
        exchange = self._check_bindable_source(source)
        binding = Binding.make(source, destination, routing_key, arguments)
        bindings = self.bindings_by_source.setdefault(source, {})
        if binding in bindings:
            return
        exchange_type = self.registry.get(exchange.type_name)
        assert exchange_type is not None
        exchange_type.validate_binding(routing_key, arguments)
        exchange.router.bind(destination, routing_key, arguments)
        bindings[binding] = None
        self.bindings_by_destination.setdefault(destination, {})[binding] = None
        if self.metadata is not None and self.is_durable_binding(binding):
            self.metadata.binding_added(binding)

    def is_durable_binding(self, binding: Binding) -> bool:
        """True when both ends are durable, so the binding is stored and comes back at boot."""
        source = self.exchanges.get(binding.source)
        if source is None or not source.durable:
            return False
        if binding.destination.kind == "queue":
            queue = self.queues.get(binding.destination.name)
            return queue is not None and queue.durable and not queue.exclusive
        target = self.exchanges.get(binding.destination.name)
        return target is not None and target.durable

    def unbind(
        self,
        source: str,
        destination: Destination,
        routing_key: str,
        arguments: Arguments | None = None,
        owner: object | None = None,
    ) -> None:
        """queue.unbind / exchange.unbind; a missing queue, exchange or binding is not an error.

        As RabbitMQ: unbinding from an auto-delete queue that went with its last consumer is
        a normal teardown, so it answers unbind-ok.
        """
        arguments = arguments or {}
        if destination.kind == "queue":
            queue = self.queues.get(destination.name)
            if queue is not None:
                self.check_exclusive(queue, owner)
        elif destination.name == "":
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange"
            )
        if source == "":
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange"
            )
        binding = Binding.make(source, destination, routing_key, arguments)
        if binding in self.bindings_by_source.get(source, {}):
            self._remove_binding(binding)

    def _check_destination(self, destination: Destination, owner: object | None) -> None:
        if destination.kind == "queue":
            self.queue(destination.name, owner)
        elif destination.name == "":
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED, "operation not permitted on the default exchange"
            )
        else:
            self.exchange(destination.name)

    def _remove_binding(self, binding: Binding, cascade: bool = True) -> None:
        if self.metadata is not None and self.is_durable_binding(binding):
            self.metadata.binding_removed(binding)
        exchange = self.exchanges.get(binding.source)
        by_source = self.bindings_by_source.get(binding.source, {})
        by_source.pop(binding, None)
        by_dest = self.bindings_by_destination.get(binding.destination, {})
        by_dest.pop(binding, None)
        if not by_dest:
            self.bindings_by_destination.pop(binding.destination, None)
        if exchange is None:
            return
        exchange.router.unbind(binding.destination, binding.routing_key, binding.arguments)
        if cascade and exchange.auto_delete and not by_source:
            self._remove_exchange(exchange)

    def bindings(self) -> Iterable[Binding]:
        """Every binding of the vhost (the default exchange's implicit ones excluded)."""
        for bindings in self.bindings_by_source.values():
            yield from bindings

    # -- routing -------------------------------------------------------------------------

    def route(
        self,
        exchange: Exchange,
        routing_key: str,
        headers: Arguments | None,
        message: HeldMessage | None = None,
    ) -> list[Queue]:
        """The distinct queues a message reaches, through e2e bindings and alternate exchanges."""
        return route_through(self.exchanges, self.queues, exchange, routing_key, headers, message)

    def publish(self, exchange_name: str, message: Message) -> list[Queue]:
        """Route a message and enqueue it; returns the queues it reached (empty: unroutable)."""
        return self.route_message(exchange_name, message).queues

    def route_message(self, exchange_name: str, message: Message, released: bool = False) -> Routed:
        """Route a message and enqueue it where the queues' limits allow (`released`: `release`)."""
        exchange = self.exchanges.get(exchange_name)
        if released:
            if exchange is None:
                return Routed([], [])
        else:
            if exchange is None:
                exchange = self.exchange(exchange_name)  # 404
            if exchange.internal:
                raise ChannelException(
                    ReplyCode.ACCESS_REFUSED,
                    f"cannot publish to internal exchange '{exchange_name}' in vhost '{self.name}'",
                    ClassId.BASIC,
                    40,
                )
            self.totals.received += 1
            exchange.publish_in += 1
            hold = exchange.hold
            if hold is not None and hold(message):
                return Routed([], [], held=True)
        # delivered here, not in a method of its own: one call less on every publish
        routed = None
        named = self.queues.get(message.routing_key) if exchange.name == "" else None
        if named is not None:  # the default exchange: the queue the key names, nothing else
            routed = self._alone.get(named.name)
            if routed is None or routed.accepted[0] is not named:
                routed = self._alone[named.name] = Routed([named], [])
            queues = routed.accepted
        else:
            queues = route_through(
                self.exchanges, self.queues, exchange, message.routing_key, message.headers, message
            )
        if queues:
            exchange.publish_out += 1
        else:
            self.totals.unroutable += 1
        batch = self.batch
        # dispatched at once: outside a batch, or when the time of dispatch decides its fate
        at_once = not batch.open or message.expiration_ms is not None
        rejected: list[Queue] | None = None
        for queue in queues:
            if at_once or queue.dispatch_at_once:
                at_once = True
                if batch.pending:  # earlier publishes go first, as they came
                    batch.flush()
            elif queue.consumers:  # dispatched when the read's publishes are done
                batch.pending[queue] = None
            hooks = queue.hooks
            if hooks is not None and hooks.before_enqueue(message) is not Verdict.ACCEPT:
                continue  # a plugin dropped or held it: taken, so confirmed
            if queue.enqueue(message) is None:
                if rejected is None:
                    rejected = []
                rejected.append(queue)
                if hooks is not None:
                    hooks.refused(message)
        if at_once:
            for queue in queues:
                if queue.consumers:
                    queue.dispatch()
                if queue.due_now is not None:  # a TTL-0 message no consumer took: expires now
                    queue.expire_due()
            batch.routed(queues)  # pacing: the deferred ones are noted when dispatched
        if rejected:
            return Routed([q for q in queues if q not in rejected], rejected)
        return routed or Routed(queues, [])

    def release(self, exchange_name: str, message: HeldMessage) -> Routed:
        """Route a message a plugin's router held back, through that exchange, now."""
        if not isinstance(message, Message):
            return Routed([], [])
        return self.route_message(exchange_name, message, released=True)
