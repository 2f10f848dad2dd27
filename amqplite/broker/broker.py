"""Broker: vhosts and users, and the consume/ack/reject operations that span queues and channels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from amqplite.broker.auth import (
    Permission,
    TopicPermission,
    User,
    check_password,
    hash_password,
)
from amqplite.broker.consumer import Consumer, DeliveryChannel, Unacked, consumer_priority
from amqplite.broker.consumer_groups import ConsumerGroups, group_argument
from amqplite.broker.deadletter import dead_letter_message, is_cycle
from amqplite.broker.direct_reply import DirectReplies, ReplyConsumer
from amqplite.broker.dispatch_batch import DispatchBatch
from amqplite.broker.durability import (
    CommitTracker,
    CommitWaiter,
    ConfigListener,
    MetadataListener,
    NoCommits,
    PluginStateStore,
)
from amqplite.broker.entry_reports import TransientSpill
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.flow import FlowControl
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import ExchangeTypeRegistry
from amqplite.broker.policy import Policy, effective_policy, validate_policy
from amqplite.broker.queue import Queue
from amqplite.broker.queue_host import HostedQueue, Timed
from amqplite.broker.routing import Routed
from amqplite.broker.stats import Churn, MessageStats
from amqplite.broker.stream_queue import StreamReads
from amqplite.broker.timer_heap import TimerHeap
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException


class Broker:
    """The pure core: every vhost, every user, and operations on consumers and deliveries."""

    def __init__(
        self,
        registry: ExchangeTypeRegistry | None = None,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        consumer_timeout_ms: int | None = None,
    ) -> None:
        self.registry = registry or builtin_registry()
        self.clock = clock or _frozen_clock  # monotonic seconds; the server passes a real one
        self.wall_clock = wall_clock or _frozen_clock  # POSIX seconds, for x-death times
        self.default_consumer_timeout_ms = consumer_timeout_ms
        self.policies: dict[tuple[str, str], Policy] = {}
        self.timers = TimerHeap()  # TTL expiry, x-expires, consumer timeouts, plugins' call_at
        self.totals = MessageStats()
        self.churn = Churn()
        self.flow = FlowControl()
        self.batch = DispatchBatch(self.flow)  # publishes read in a row: each queue dispatched once
        self._acked_queues: dict[int, Queue] = {}  # settled by acks not yet redispatched
        self._acked_channels: dict[int, DeliveryChannel] = {}
        self.commits: CommitTracker = NoCommits()
        # the sessions holding confirms or replies for a commit (told after each one), by id
        self.commit_waiters: dict[int, CommitWaiter] = {}
        self.metadata: MetadataListener | None = None
        self.plugin_state: PluginStateStore | None = None  # plugins' durable records
        self.spill: TransientSpill[Queue] | None = None  # transient bodies paged out (the server's)
        self.stream_reads = StreamReads()  # stream consumers waiting for a read (server task)
        self.config_listener: ConfigListener | None = None  # the store: users, policies, vhosts
        self.vhosts: dict[str, VHost] = {}
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}  # (user, vhost)
        # (user, vhost) -> exchange -> routing-key patterns; empty (the usual case) = no checks
        self.topic_permissions: dict[tuple[str, str], dict[str, TopicPermission]] = {}
        # RabbitMQ's user limits (max-connections, max-channels) and vhost limits
        # (max-connections, max-queues); a negative limit or none: no limit
        self.user_limits: dict[str, dict[str, int]] = {}
        self.vhost_limits: dict[str, dict[str, int]] = {}
        # open connections per ("user", name) and ("vhost", name); channels per ("channels", user)
        self.usage: Counter[tuple[str, str]] = Counter()
        self._consumer_counter = 0
        self.direct_replies = DirectReplies()
        self.groups = ConsumerGroups()  # x-consumer-group: partitions spread over members

    def add_vhost(self, name: str) -> VHost:
        """Create a vhost (no-op if it exists)."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VHost(name, self.registry, self.totals)
            vhost.metadata = self.metadata
            vhost.plugin_state = self.plugin_state
            vhost.churn = self.churn
            vhost.host = self
            vhost.batch = self.batch
            vhost.on_queue_deleted.append(self._partition_deleted)
            vhost.apply_policies(p for p in self.policies.values() if p.vhost == name)
            if self.config_listener is not None:
                self.config_listener.vhost_added(name)
        return vhost

    def add_user(
        self, name: str, password: str, tags: Iterable[str] = (), *, password_hash: str = ""
    ) -> None:
        """Create or replace a user (from a plain password, or a RabbitMQ password_hash)."""
        password_hash = password_hash or hash_password(password)
        self.users[name] = User(name, password, tuple(tags), password_hash)
        if self.config_listener is not None:
            self.config_listener.user_set(name, password_hash, tuple(tags))

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None."""
        user = self.users.get(name)
        if user is None or not check_password(password, user.password_hash):
            return None
        return user

    def delete_user(self, name: str) -> None:
        """Remove a user and its permissions (KeyError if missing)."""
        del self.users[name]
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[0] == name]:
            del self.topic_permissions[key]
        self.user_limits.pop(name, None)
        if self.config_listener is not None:
            self.config_listener.user_deleted(name)

    def set_permissions(self, user: str, vhost: str, permission: Permission) -> None:
        """Grant a user configure/write/read regexes on a vhost (KeyError if either is missing)."""
        if user not in self.users or vhost not in self.vhosts:
            raise KeyError(user if user not in self.users else vhost)
        self.permissions[(user, vhost)] = permission
        if self.config_listener is not None:
            self.config_listener.permissions_set(user, vhost, permission)

    def clear_permissions(self, user: str, vhost: str) -> None:
        """Take away a user's access to a vhost (no-op if there was none)."""
        if self.permissions.pop((user, vhost), None) is not None and self.config_listener:
            self.config_listener.permissions_cleared(user, vhost)

    def set_topic_permission(self, user: str, vhost: str, permission: TopicPermission) -> None:
        """Limit the routing keys a user may publish and bind with on one topic exchange."""
        if user not in self.users or vhost not in self.vhosts:
            raise KeyError(user if user not in self.users else vhost)
        self.topic_permissions.setdefault((user, vhost), {})[permission.exchange] = permission
        self._topic_permissions_changed(user, vhost)

    def clear_topic_permission(self, user: str, vhost: str, exchange: str) -> None:
        """Lift a user's routing-key limits on an exchange (no-op if there were none)."""
        by_exchange = self.topic_permissions.get((user, vhost), {})
        if by_exchange.pop(exchange, None) is None:
            return
        if not by_exchange:
            self.topic_permissions.pop((user, vhost), None)
        self._topic_permissions_changed(user, vhost)

    def _topic_permissions_changed(self, user: str, vhost: str) -> None:
        if self.config_listener is not None:
            by_exchange = self.topic_permissions.get((user, vhost), {})
            self.config_listener.topic_permissions_set(user, vhost, list(by_exchange.values()))

    def set_limit(self, kind: str, name: str, limit: str, value: int) -> None:
        """Set a user's or vhost's limit (kind "user" or "vhost"; KeyError if it is missing)."""
        limits = self.user_limits if kind == "user" else self.vhost_limits
        if name not in (self.users if kind == "user" else self.vhosts):
            raise KeyError(name)
        limits.setdefault(name, {})[limit] = value
        if self.config_listener is not None:
            self.config_listener.limits_set(kind, name, dict(limits[name]))

    def clear_limit(self, kind: str, name: str, limit: str) -> None:
        """Remove a user's or vhost's limit (no-op if it has none)."""
        limits = self.user_limits if kind == "user" else self.vhost_limits
        if limits.get(name, {}).pop(limit, None) is None:
            return
        if not limits[name]:
            del limits[name]
        if self.config_listener is not None:
            self.config_listener.limits_set(kind, name, dict(limits.get(name, {})))

    def topic_permission_of(self, user: str, vhost: str, exchange: str) -> TopicPermission | None:
        """The user's routing-key limits on an exchange, or None (any routing key)."""
        return self.topic_permissions.get((user, vhost), {}).get(exchange)

    def permissions_of(self, user: str, vhost: str) -> Permission | None:
        """The user's permissions on the vhost, or None (no access)."""
        return self.permissions.get((user, vhost))

    def delete_vhost(self, name: str) -> None:
        """Remove a vhost with its queues, exchanges, permissions and policies (KeyError if missing)."""
        vhost = self.vhosts.pop(name)
        for queue in list(vhost.queues.values()):
            vhost.remove_queue(queue)
        for exchange in list(vhost.exchanges):
            if exchange and not exchange.startswith("amq."):
                vhost.delete_exchange(exchange)
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[1] == name]:
            del self.topic_permissions[key]
        self.vhost_limits.pop(name, None)
        for vhost_name, policy_name in [k for k in self.policies if k[0] == name]:
            del self.policies[(vhost_name, policy_name)]  # as RabbitMQ: they go with the vhost
            if self.config_listener is not None:
                self.config_listener.policy_cleared(vhost_name, policy_name)
        if self.config_listener is not None:
            self.config_listener.vhost_deleted(name)

    def vhost(self, name: str) -> VHost:
        """The named vhost, or 530 NOT_ALLOWED (connection.open to a missing vhost)."""
        try:
            return self.vhosts[name]
        except KeyError:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED, f"vhost {name} not found", ClassId.CONNECTION, 40
            ) from None

    # -- consumers -----------------------------------------------------------------------

    def consume(
        self,
        vhost: VHost,
        channel: DeliveryChannel,
        queue_name: str,
        tag: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        owner: object | None = None,
    ) -> Consumer:
        """basic.consume: subscribe the channel to the queue and start deliveries."""
        queue = vhost.queue(queue_name, owner)
        queue.check_led_here(ClassId.BASIC, 20)
        tag = self._new_tag(channel, tag)
        if queue.consumers and (exclusive or any(c.exclusive for c in queue.consumers)):
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                f"queue '{queue.name}' in vhost '{vhost.name}' in exclusive use",
                ClassId.BASIC,
                20,
            )
        group = group_argument(arguments)
        self.groups.check_consume(queue, group)
        consumer = Consumer(
            tag,
            queue,
            channel,
            no_ack=no_ack,
            exclusive=exclusive,
            prefetch_count=channel.prefetch_count,
            arguments=arguments or {},
            priority=consumer_priority(arguments),
        )
        channel.consumers[tag] = consumer
        queue.add_consumer(consumer)
        if group is not None:  # the caller dispatches the consumer's own queue (after consume-ok)
            _dispatch(q for q in self.groups.join(vhost.name, group, consumer) if q is not queue)
        return consumer

    def _new_tag(self, channel: DeliveryChannel, tag: str) -> str:
        """The consumer tag asked for, or a new one; 530 if the channel already uses it."""
        if tag == "":
            self._consumer_counter += 1
            tag = f"amq.ctag-{self._consumer_counter:08d}-{id(channel) & 0xFFFFFF:06x}"
        reply = self.direct_replies.of(channel)
        if tag in channel.consumers or (reply is not None and reply.tag == tag):
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"attempt to reuse consumer tag '{tag}'",
                ClassId.BASIC,
                20,
            )
        return tag

    def consume_replies(self, channel: DeliveryChannel, tag: str, no_ack: bool) -> ReplyConsumer:
        """basic.consume on amq.rabbitmq.reply-to: the channel's direct reply-to consumer."""
        if not no_ack:  # checked first, as RabbitMQ
            return self.direct_replies.consume(channel, tag, no_ack)
        return self.direct_replies.consume(channel, self._new_tag(channel, tag), no_ack)

    def cancel(self, vhost: VHost, channel: DeliveryChannel, tag: str) -> bool:
        """basic.cancel: remove the consumer (unknown tags are fine); auto-delete queues go."""
        consumer = channel.consumers.pop(tag, None)
        if consumer is None:
            return self.direct_replies.cancel(channel, tag)
        queue = consumer.queue
        queue.remove_consumer(consumer)
        if queue.partition is not None:
            _dispatch(self.groups.leave(consumer))  # partitions move to the group's other members
        elif queue.settings.single_active_consumer and queue.consumers:
            queue.dispatch()  # the next consumer takes over
        if queue.auto_delete and not queue.consumers and queue.had_consumer:
            vhost.remove_queue(queue)
        return True

    def _partition_deleted(self, queue: Queue) -> None:
        """A queue was deleted: a group it belonged to rebalances over its other partitions."""
        _dispatch(self.groups.queue_deleted(queue))

    # -- settling ------------------------------------------------------------------------

    def ack(self, channel: DeliveryChannel, delivery_tag: int, multiple: bool) -> None:
        """basic.ack: the messages are done; credit frees up for more deliveries."""
        settled = channel.settle(delivery_tag, multiple)
        for item in settled:
            item.queue.stats.ack += 1
            item.queue.settle(item.entry, True)
        self.totals.ack += len(settled)
        self._credit_returns(channel)
        self._redispatch(settled)

    def ack_deferred(self, channel: DeliveryChannel, delivery_tag: int, multiple: bool) -> None:
        """basic.ack read among others: settle now, deliver on the freed credit in flush_acks."""
        held = channel.global_unacked
        settled = channel.settle(delivery_tag, multiple)
        queues = self._acked_queues
        last: Queue | None = None
        run: list[QueueEntry] = []
        for item in settled:  # an ack multiple's entries come in runs of one queue
            queue = item.queue
            if queue is not last:
                if last is not None:
                    last.acked(run)
                    run = []
                last = queue
                queues[id(queue)] = queue
            run.append(item.entry)
        if last is not None:
            last.acked(run)
        if channel.global_unacked != held:  # consumers' credit came back
            self._acked_channels[id(channel)] = channel
        self.totals.ack += len(settled)
        self._credit_returns(channel)

    def ack_each(self, channel: DeliveryChannel, tags: Sequence[int]) -> None:
        """basic.ack of single tags read together: settle each now, deliver in flush_acks.

        An unknown tag is a 406 once the tags before it are settled (the channel then closes,
        so the ones after it are dropped, as RabbitMQ).
        """
        held = channel.global_unacked
        done, unknown = channel.settle_each(tags, self._acked_queues)
        if done:
            if channel.global_unacked != held:  # consumers' credit came back
                self._acked_channels[id(channel)] = channel
            self.totals.ack += done
            self._credit_returns(channel)
        if unknown is not None:
            raise ChannelException(ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {unknown}")

    def _credit_returns(self, channel: DeliveryChannel) -> None:
        """The channel settled deliveries: its acks move, so its credit counts as returning."""
        channel.acks += 1
        if not channel.credit_returning:
            self.flow.credit_returns(channel)

    def flush_acks(self) -> None:
        """Deliver on the credit the acks since the last flush freed, each queue once."""
        if not self._acked_queues:
            return
        queues = self._acked_queues
        channels = self._acked_channels
        self._acked_queues, self._acked_channels = {}, {}
        for channel in channels.values():
            for queue in channel.queues_with_consumers():
                queues.setdefault(id(queue), queue)
        for queue in queues.values():
            if queue.consumers and not queue.deleted:
                queue.dispatch()

    def reject(
        self, channel: DeliveryChannel, delivery_tag: int, multiple: bool, requeue: bool
    ) -> None:
        """basic.nack / basic.reject: requeue to the original place, or drop."""
        settled = channel.settle(delivery_tag, multiple)
        self._credit_returns(channel)
        self._release(settled, requeue, explicit=True)

    def recover(self, channel: DeliveryChannel) -> None:
        """basic.recover: every unacked message of the channel goes back to its queue."""
        self._release(channel.settle_all(), requeue=True)

    def close_channel(self, vhost: VHost, channel: DeliveryChannel) -> None:
        """Channel closed: cancel its consumers and requeue its unacked messages."""
        self.direct_replies.forget(channel)
        self.flow.forget(channel)
        for tag in list(channel.consumers):
            self.cancel(vhost, channel, tag)
        self._release(channel.settle_all(), requeue=True)

    def close_connection(self, vhost: VHost | None, owner: object) -> None:
        """Connection closed (after its channels): delete the queues exclusive to it."""
        if vhost is None:
            return
        self.churn.connection_closed += 1
        for queue in [q for q in vhost.queues.values() if q.exclusive_owner is owner]:
            vhost.remove_queue(queue)

    def _release(self, settled: list[Unacked], requeue: bool, explicit: bool = False) -> None:
        if requeue:
            for item in settled:
                item.queue.requeue(item.entry, explicit)
        else:
            for item in settled:
                item.queue.reject(item.entry)
        self._redispatch(settled)

    @staticmethod
    def _redispatch(settled: list[Unacked]) -> None:
        queues: dict[int, Queue] = {}
        channels: set[int] = set()
        for item in settled:
            queues.setdefault(id(item.queue), item.queue)
            consumer = item.consumer
            if consumer is not None and id(consumer.channel) not in channels:
                channels.add(id(consumer.channel))
                for queue in consumer.channel.queues_with_consumers():
                    queues.setdefault(id(queue), queue)
        for queue in queues.values():
            if queue.consumers and not queue.deleted:
                queue.dispatch()

    @staticmethod
    def resume(channel: DeliveryChannel) -> None:
        """Deliver again to a channel whose credit or outbound room came back (or stalled)."""
        for queue in channel.queues_with_consumers():
            queue.dispatch()
            if queue.behind:
                queue.update_behind()

    def publish(self, vhost: VHost, exchange: str, message: Message) -> list[Queue]:
        """Route and enqueue a message; the queues it reached."""
        return vhost.publish(exchange, message)

    def route(self, vhost: VHost, exchange: str, message: Message) -> Routed:
        """Route and enqueue a message; which queues took it and which refused it (limits)."""
        return vhost.route_message(exchange, message)  # pacing notes its queues (dispatch_batch)

    # -- clocks and timers (QueueHost) ---------------------------------------------------

    def now(self) -> float:
        """Monotonic seconds from the injected clock."""
        return self.clock()

    def wall_time(self) -> float:
        """POSIX seconds from the injected wall clock."""
        return self.wall_clock()

    def consumer_timeout_ms(self) -> int | None:
        """The broker-wide consumer acknowledgement timeout (None: none)."""
        return self.default_consumer_timeout_ms

    def set_behind(self, queue: HostedQueue, behind: bool) -> None:
        """A queue fell behind on deliverable work, or caught up: pace publishers."""
        self.flow.set_behind(queue, behind)

    def schedule(self, target: Timed, deadline: float) -> None:
        """Call target.on_timer at the deadline (kept if the target already has an earlier one)."""
        self.timers.schedule(target, deadline)

    def next_deadline(self) -> float | None:
        """When fire_timers next has something to do (monotonic seconds), or None."""
        return self.timers.next_deadline()

    def fire_timers(self, now: float | None = None) -> int:
        """Run every timer due at `now` once (TTL expiry, x-expires, consumer timeouts)."""
        return self.timers.fire(self.clock() if now is None else now)

    @property
    def on_timer_change(self) -> Callable[[], None]:
        """The timer task's wake-up, called when an earlier deadline appears."""
        return self.timers.on_change

    @on_timer_change.setter
    def on_timer_change(self, wake: Callable[[], None]) -> None:
        self.timers.on_change = wake

    # -- dead-lettering and policies (QueueHost) -----------------------------------------

    def dead_letter(self, queue: HostedQueue, entry: QueueEntry, reason: str) -> bool:
        """Republish through the queue's dead-letter exchange (a missing one drops the message)."""
        settings = queue.settings
        vhost = self.vhosts.get(queue.vhost)
        if settings.dead_letter_exchange is None or vhost is None:
            return False
        exchange = vhost.exchanges.get(settings.dead_letter_exchange)
        if exchange is None:
            return False
        message = dead_letter_message(
            entry.message,
            queue.name,
            reason,
            self.wall_clock(),
            exchange.name,
            settings.dead_letter_routing_key,
        )
        deaths = (message.headers or {}).get("x-death") or []
        targets = [
            q
            for q in vhost.route(exchange, message.routing_key, message.headers, message)
            if not is_cycle(q.name, deaths)
        ]
        for target in targets:
            target.enqueue(message)
        for target in targets:
            if target.consumers:
                target.dispatch()
            target.expire_if_due_now()
        return True

    def policy_for(self, queue: HostedQueue) -> Mapping[str, Any] | None:
        """The definition of the policy applying to the queue (highest priority match)."""
        if not self.policies:
            return None
        policy = effective_policy(
            (p for p in self.policies.values() if p.vhost == queue.vhost), queue.name
        )
        return policy.definition if policy is not None else None

    def set_policy(self, policy: Policy) -> None:
        """Create or replace a policy (ValueError if invalid) and re-apply it to existing queues."""
        validate_policy(policy)
        self.policies[(policy.vhost, policy.name)] = policy
        self._reapply_policies(policy.vhost)
        if self.config_listener is not None:
            self.config_listener.policy_set(policy)

    def clear_policy(self, vhost: str, name: str) -> None:
        """Remove a policy (KeyError if missing); its queues return to their own arguments."""
        del self.policies[(vhost, name)]
        self._reapply_policies(vhost)
        if self.config_listener is not None:
            self.config_listener.policy_cleared(vhost, name)

    def list_policies(self, vhost: str | None = None) -> list[Policy]:
        """Policies of one vhost, or of all, by vhost and name."""
        return sorted(
            (p for p in self.policies.values() if vhost is None or p.vhost == vhost),
            key=lambda p: (p.vhost, p.name),
        )

    def _reapply_policies(self, vhost_name: str) -> None:
        vhost = self.vhosts.get(vhost_name)
        if vhost is None:
            return
        vhost.apply_policies(p for p in self.policies.values() if p.vhost == vhost_name)
        for queue in list(vhost.queues.values()):
            queue.reconfigure()


def _frozen_clock() -> float:
    """The default clock of a broker nobody gave one: time stands still (tests)."""
    return 0.0


def _dispatch(queues: Iterable[Queue]) -> None:
    """Deliver from queues whose consumer changed (a group moved them)."""
    for queue in queues:
        if queue.consumers and not queue.deleted:
            queue.dispatch()
