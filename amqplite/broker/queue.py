"""Queue: messages in and out, TTL and queue expiry, length limits, dead-lettering, dispatch."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs

from amqplite.broker.message import Message, QueueEntry, derive
from amqplite.broker.queue_consumer import ActivePicker, QueueConsumer
from amqplite.broker.queue_host import DETACHED, QueueHost
from amqplite.broker.queue_settings import QueueSettings, parse_settings
from amqplite.broker.ready_list import ReadyList, ReadyMessages
from amqplite.broker.retry import DEFAULT_DELIVERY_LIMIT, RetryHold, RetrySettings, parse_retry
from amqplite.broker.stats import MessageStats
from amqplite.broker.ttl_index import TtlIndex
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.properties import replace_headers

if TYPE_CHECKING:
    from amqplite.broker.entry_reports import QueueJournal, QueueRemote
    from amqplite.broker.plugin_api import QueueHooks


EXPIRE_BATCH: Final = 500  # messages expired per timer turn, so a flood never stalls the loop


@attrs.define(eq=False)
class Queue:
    """One queue of a vhost: its settings, ready messages, unacked count and consumers."""

    name: str
    vhost: str
    durable: bool = False
    exclusive_owner: object | None = None
    auto_delete: bool = False
    arguments: dict[str, Any] = attrs.field(factory=dict)
    host: QueueHost = DETACHED
    settings: QueueSettings = attrs.field(init=False)
    ack_timeout_ms: int | None = attrs.field(init=False, default=None)  # consumer timeout in effect
    ack_timeout: float = attrs.field(init=False, default=0.0)  # the same in seconds (0.0: none)
    ready: ReadyList | ReadyMessages = attrs.field(init=False)  # levels only with priorities
    deadlines: TtlIndex = attrs.field(init=False)
    retry: RetrySettings | None = attrs.field(init=False, default=None)  # retry with backoff
    delayed: RetryHold = attrs.field(init=False)  # requeued entries waiting out their delay
    consumers: deque[QueueConsumer] = attrs.field(factory=deque)
    unacked_count: int = 0
    ready_bytes: int = 0
    next_seq: int = 0
    had_consumer: bool = False
    partition: ActivePicker | None = (
        None  # set while a consumer group consumes it: it picks who gets
    )
    deleted: bool = False
    behind: bool = False  # ready messages a consumer takes soon (flow.py): publishers wait
    last_used: float = 0.0
    timer_due: float | None = None
    stats: MessageStats = attrs.field(factory=MessageStats)
    totals: MessageStats = attrs.field(factory=MessageStats)  # the broker's, shared by its queues
    journal: QueueJournal | None = None  # set by the store for durable queues
    on_delete: Callable[[Queue], object] | None = None  # set by the vhost, for x-expires
    # cluster mode: the node leading this mirrored queue when not this one ("": none); it serves nothing
    led_elsewhere: str | None = None
    hooks: QueueHooks | None = None  # plugins' queue hooks (set by the vhost); None: no plugin
    # cluster mode: forwards publishes to that leader and proxies its deliveries to our consumers
    remote: QueueRemote | None = None
    _groups: list[deque[QueueConsumer]] | None = None  # consumers by x-priority, when they differ
    due_now: QueueEntry | None = None  # a TTL-0 entry being offered to consumers at publish
    # limits, priorities or a TTL: a publish is dispatched at once, never batched (dispatch_batch)
    dispatch_at_once: bool = attrs.field(init=False, default=False)
    dispatch_passes: int = 0  # dispatches over ready messages with consumers (tests, diagnostics)

    def check_led_here(self, class_id: int, method_id: int) -> None:
        """A 404 naming the leader when another node leads this mirrored queue and nothing proxies it."""
        leader = self.led_elsewhere
        proxied = self.remote is not None and (class_id, method_id) != (ClassId.BASIC, 70)
        if leader is not None and not proxied:  # basic.get is not forwarded
            where = (
                f"is led by node '{leader}': connect to that node" if leader else "has no leader"
            )
            raise ChannelException(
                ReplyCode.NOT_FOUND,
                f"queue '{self.name}' in vhost '{self.vhost}' {where}",
                class_id,
                method_id,
            )

    def __attrs_post_init__(self) -> None:
        self._parse_settings()
        self.delayed = RetryHold(self._ready_again)
        max_priority = self.settings.max_priority
        self.ready = ReadyMessages(max_priority + 1) if max_priority else ReadyList()
        self.deadlines = TtlIndex()
        self.last_used = self.host.now()
        self._schedule_expiry()

    @property
    def exclusive(self) -> bool:
        """True when only the declaring connection may use the queue."""
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return len(self.ready)

    # -- settings and policies -------------------------------------------------------------

    def _parse_settings(self) -> None:
        policy = self.host.policy_for(self)
        settings = parse_settings(self.arguments, policy, self.name, self.vhost)
        self.retry = parse_retry(self.arguments, policy, self.name, self.vhost)
        if self.retry is not None and settings.delivery_limit is None:
            settings = attrs.evolve(settings, delivery_limit=DEFAULT_DELIVERY_LIMIT)
        self.settings = settings
        self.dispatch_at_once = (
            settings.max_length is not None
            or settings.max_length_bytes is not None
            or settings.max_priority is not None
            or settings.message_ttl is not None
        )
        timeout = settings.consumer_timeout  # read on every delivery: resolved here, once
        self.ack_timeout_ms = self.host.consumer_timeout_ms() if timeout is None else timeout
        self.ack_timeout = (self.ack_timeout_ms or 0) / 1000

    def reconfigure(self) -> None:
        """Recompute the settings after a policy change; limits apply at once."""
        self._parse_settings()
        self._enforce_limits()
        self._schedule_expiry()

    def touch(self) -> None:
        """The queue was used (declare, get, consumer gone): restart its x-expires period."""
        self.last_used = self.host.now()
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        expires = self.settings.expires
        if expires is not None and not self.consumers and not self.deleted:
            self.host.schedule(self, self.last_used + expires / 1000)

    # -- messages in -----------------------------------------------------------------------

    def enqueue(self, message: Message) -> QueueEntry | None:
        """Append a message at the tail and return its entry (None: refused by reject-publish)."""
        if self.led_elsewhere is not None:  # a mirrored queue led by another node
            remote = self.remote  # forwarded there (the confirm waits for its), or nacked
            if remote is None or not remote.publish(message):
                return None
            return QueueEntry(-1, message)  # an entry of the leader's queue, not of this one
        settings = self.settings
        limited = settings.max_length is not None or settings.max_length_bytes is not None
        if limited and settings.overflow != "drop-head" and self._is_full():
            self.stats.dropped += 1
            self.totals.dropped += 1
            if settings.overflow == "reject-publish-dlx":
                self._dead_letter_new(message)
            return None
        entry = QueueEntry(self.next_seq, message)
        self.next_seq += 1
        max_priority = settings.max_priority
        if max_priority is not None and message.priority:
            entry.level = min(message.priority, max_priority)
        ttl = settings.message_ttl
        if message.expiration_ms is not None and (ttl is None or message.expiration_ms < ttl):
            ttl = message.expiration_ms
        spill = None
        if self.journal is not None and message.persistent:
            self.journal.enqueue(entry)  # first: what the journal refuses never enters the queue
        else:
            spill = self.host.spill
        self.ready.append(entry)
        # `size` of a paged message is a property: an in-memory one has its body at hand
        size = len(message.body) if type(message) is Message else message.size
        self.ready_bytes += size
        if spill is not None:  # transient: counted, and past the memory threshold paged out
            budget = spill.budget
            budget.room -= size + budget.entry_bytes
            if budget.room < 0:
                spill.enqueue(self, entry)
        self.stats.publish += 1
        self.totals.publish += 1
        if settings.delivery_limit is not None:
            self._set_delivery_count(entry)  # x-delivery-count: 0, as RabbitMQ's quorum queues
        if ttl is not None:
            self._add_deadline(entry, self.host.now() + ttl / 1000)
            if ttl == 0:
                self.due_now = entry
        if limited:
            self._enforce_limits()
        return entry

    def _add_deadline(self, entry: QueueEntry, deadline: float) -> None:
        if self.deadlines.add(entry, deadline):
            self.host.schedule(self, deadline)

    def _is_full(self) -> bool:
        settings = self.settings
        if settings.max_length is not None and len(self.ready) >= settings.max_length:
            return True
        return settings.max_length_bytes is not None and (
            self.ready_bytes >= settings.max_length_bytes
        )

    def _over_limit(self) -> bool:
        settings = self.settings
        if settings.max_length is not None and len(self.ready) > settings.max_length:
            return True
        return settings.max_length_bytes is not None and (
            self.ready_bytes > settings.max_length_bytes
        )

    def _enforce_limits(self) -> None:
        """drop-head: dead-letter (reason maxlen) from the head until within the limits."""
        if self.settings.overflow != "drop-head":
            return
        while len(self.ready) and self._over_limit():
            entry = self.take()
            if entry is None:
                return  # what was left had expired
            self.stats.dropped += 1
            self.totals.dropped += 1
            self.settle(entry)
            self._dead_letter(entry, "maxlen")

    # -- messages out ----------------------------------------------------------------------

    def take_in(self, message: Message, delivery_count: int) -> QueueEntry | None:
        """A message the leader elsewhere handed to this node's consumers (kept in memory only)."""
        leader, self.led_elsewhere = self.led_elsewhere, None
        try:
            entry = self.enqueue(message)
        finally:
            self.led_elsewhere = leader
        if entry is not None:
            entry.delivery_count = delivery_count
        return entry

    def settle(self, entry: QueueEntry, acked: bool = False) -> None:
        """An entry leaves the queue for good (acked, auto-acked, dropped): tell the journal."""
        if self.remote is not None:  # a delivery proxied from the leader: acked there
            self.remote.settled(entry)
        if self.journal is not None and entry.message.persistent and not self.deleted:
            self.journal.remove(entry)
        if acked and self.hooks is not None:
            self.hooks.after_ack(entry.message)

    def acked(self, entries: list[QueueEntry]) -> None:
        """Entries acked (a run of an ack multiple): counted, and settled where it tells anyone."""
        self.stats.ack += len(entries)
        if self.quiet_acks():
            return  # a transient queue without plugins: nothing to tell, entry by entry
        for entry in entries:
            self.settle(entry, True)

    def quiet_acks(self) -> bool:
        """True when an ack has nobody to tell (`settle` of an acked entry does nothing)."""
        return self.remote is None and self.journal is None and self.hooks is None

    def take(self) -> QueueEntry | None:
        """Remove the head entry for delivery; it becomes unacked (or gone if auto-acked).

        Entries past their deadline are expired here rather than delivered, so a message is
        never served late even while the timer's sweep is behind.
        """
        ready = self.ready
        while True:
            entry = ready.popleft()
            if entry is None:
                return None
            message = entry.message
            # `size` of a paged message is a property: an in-memory one has its body at hand
            self.ready_bytes -= len(message.body) if type(message) is Message else message.size
            expires_at = entry.expires_at
            if expires_at is not None:
                self.deadlines.remove(entry)
                if expires_at <= self.host.now() and entry is not self.due_now:
                    self._expired(entry)
                    continue
            if self.journal is not None and message.persistent:
                self.journal.delivered(entry)
            return entry

    def requeue(self, entry: QueueEntry, explicit: bool = False) -> None:
        """Return a delivered entry to its place (redelivered), or dead-letter it if it is spent.

        `explicit`: basic.reject/nack with requeue (retry with backoff may hold it back first).
        """
        if self.deleted:
            return
        if self.remote is not None and self.remote.returned(entry):
            return  # got from the leader by basic.get: requeued there
        limit = self.settings.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self.settle(entry)
            self._dead_letter(entry, "delivery_limit")
            return
        if entry.expires_at is not None and entry.expires_at <= self.host.now():
            self._expired(entry)
            return
        if limit is not None:
            self._set_delivery_count(entry)
        self.stats.requeue += 1
        self.totals.requeue += 1
        retry = self.retry
        if retry is not None and retry.applies(explicit):
            due = self.host.now() + retry.delay_ms(entry.delivery_count) / 1000
            self.delayed.hold(entry, due)
            self.host.schedule(self.delayed, due)
            return
        self._make_ready(entry)
        self._enforce_limits()

    def _make_ready(self, entry: QueueEntry) -> None:
        self.ready.requeue(entry)
        self.ready_bytes += entry.message.size
        if entry.expires_at is not None:
            self._add_deadline(entry, entry.expires_at)

    def _ready_again(self, entries: list[QueueEntry]) -> None:
        """Requeued entries whose retry delay is over go back to their place."""
        if self.deleted:
            return
        now = self.host.now()
        for entry in entries:
            if entry.expires_at is not None and entry.expires_at <= now:
                self._expired(entry)
            else:
                self._make_ready(entry)
        self._enforce_limits()
        if self.consumers:
            self.dispatch()

    def reject(self, entry: QueueEntry) -> None:
        """Rejected without requeue: dropped, or dead-lettered with reason rejected."""
        self.stats.reject += 1
        self.totals.reject += 1
        self.settle(entry)
        self._dead_letter(entry, "rejected")

    @staticmethod
    def _set_delivery_count(entry: QueueEntry) -> None:
        """Record the delivery count in the x-delivery-count header (the body stays shared)."""
        old = entry.message
        headers = dict(old.headers or {})
        headers["x-delivery-count"] = entry.delivery_count
        entry.message = derive(  # a paged body stays on disk, unread
            old,
            old.exchange,
            old.routing_key,
            replace_headers(old.properties_bin, headers),
            headers,
            old.expiration_ms,
        )

    def purge(self) -> int:
        """Drop every ready message and return how many there were."""
        count = len(self.ready) + len(self.delayed)
        entries = self.ready.clear() + self.delayed.clear()  # paged-out entries are just dropped
        self.ready_bytes = 0
        self.deadlines.clear()
        for entry in entries:
            self.settle(entry)
        if self.behind:
            self.host.set_behind(self, False)
        return count

    # -- TTL and queue expiry --------------------------------------------------------------

    def _expired(self, entry: QueueEntry) -> None:
        self.stats.expired += 1
        self.totals.expired += 1
        self.settle(entry)
        self._dead_letter(entry, "expired")

    def expire_due(self, now: float | None = None, budget: int = EXPIRE_BATCH) -> bool:
        """Expire ready messages whose deadline has passed; True if more are due."""
        if now is None:
            now = self.host.now()
        self.due_now = None
        deadlines = self.deadlines
        done = 0
        while done < budget:
            entry = deadlines.pop_due(now)
            if entry is None:
                return False
            self.ready.remove(entry)
            self.ready_bytes -= entry.message.size
            self._expired(entry)
            done += 1
        return deadlines.has_due(now)

    def paging_out(self, entries: list[QueueEntry]) -> None:
        """Ready entries leave memory for a paged tail: the TTL index lets go of them."""
        for entry in entries:
            if entry.expires_at is not None:
                self.deadlines.remove(entry)

    def paged_in(self, entries: list[QueueEntry]) -> None:
        """Entries read back from a paged tail: their deadlines (due or not) rejoin the index."""
        for entry in entries:
            if entry.expires_at is not None:
                self._add_deadline(entry, entry.expires_at)

    def expire_if_due_now(self) -> None:
        """Messages with TTL 0 that no consumer took at publish expire at once."""
        if self.due_now is not None:
            self.expire_due()

    def next_deadline(self) -> float | None:
        """The earliest moment something is due in this queue."""
        due = self.deadlines.next_deadline()
        expires = self.settings.expires
        if expires is not None and not self.consumers:
            at = self.last_used + expires / 1000
            due = at if due is None else min(due, at)
        return due

    def on_timer(self, now: float) -> float | None:
        """Timer callback: expire messages, delete the queue if unused too long."""
        if self.deleted:
            return None
        if self.expire_due(now):
            return now  # more are due: come back on the next turn
        expires = self.settings.expires
        if (
            expires is not None
            and not self.consumers
            and now >= self.last_used + expires / 1000
            and self.on_delete is not None
        ):
            self.on_delete(self)
            return None
        return self.next_deadline()

    # -- dead-lettering --------------------------------------------------------------------

    def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        if self.settings.dead_letter_exchange is None:
            return
        if self.host.dead_letter(self, entry, reason):
            self.stats.dead_lettered += 1
            self.totals.dead_lettered += 1

    def _dead_letter_new(self, message: Message) -> None:
        """reject-publish-dlx: a refused message is dead-lettered with reason maxlen."""
        self._dead_letter(QueueEntry(-1, message), "maxlen")

    # -- consumers -------------------------------------------------------------------------

    def add_consumer(self, consumer: QueueConsumer) -> None:
        """Attach a consumer (ordered by x-priority when priorities differ)."""
        self.consumers.append(consumer)
        self.had_consumer = True
        self._regroup()
        if self.remote is not None:
            self.remote.consumers_changed()

    def remove_consumer(self, consumer: QueueConsumer) -> None:
        """Detach a consumer; the queue's x-expires period starts when the last one leaves."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self._regroup()
        if not self.consumers:
            self.touch()
        if self.behind:
            self.update_behind()
        if self.remote is not None:
            self.remote.consumers_changed()

    def _regroup(self) -> None:
        priorities = sorted({c.priority for c in self.consumers}, reverse=True)
        if len(priorities) <= 1:
            self._groups = None
            return
        self._groups = [deque(c for c in self.consumers if c.priority == p) for p in priorities]

    @property
    def active_consumer(self) -> QueueConsumer | None:
        """With x-single-active-consumer or a consumer group: the one consumer that receives."""
        if self.partition is not None:
            return self.partition.active()
        return self.consumers[0] if self.consumers else None

    def dispatch(self) -> None:
        """Deliver ready messages to consumers that have room (round-robin, by priority)."""
        ready = self.ready
        before = ready.count
        if not before:
            if self.behind:
                self.host.set_behind(self, False)
            return
        if not self.consumers:
            return
        self.dispatch_passes += 1
        self._deliver_ready()
        left = ready.count
        if not left:
            if self.behind:
                self.host.set_behind(self, False)
        elif not self.behind or left != before:  # nothing delivered: still behind
            self.update_behind()

    def update_behind(self) -> None:
        """Behind: ready messages a consumer takes soon (output room or credit returns, flow.py)."""
        consumers = self.consumers
        if (self.settings.single_active_consumer or self.partition is not None) and consumers:
            active = self.active_consumer
            consumers = deque(() if active is None else (active,))
        behind = bool(len(self.ready)) and any(c.holds_publishers() for c in consumers)
        if behind is not self.behind:
            self.host.set_behind(self, behind)

    def _deliver_ready(self) -> None:
        ready = self.ready
        if self.settings.single_active_consumer or self.partition is not None:
            active = self.active_consumer
            if active is None:
                return
            while ready.count and active.can_take():
                entry = self.take()
                if entry is None:
                    return
                active.deliver(entry)
            return
        if self._groups is not None:
            self._dispatch_by_priority(self._groups)
            return
        consumers = self.consumers
        if len(consumers) == 1:  # the usual case: no round to make, its credit known at once
            consumer = consumers[0]
            has_room = consumer.room_check()
            credit = consumer.credit()  # only these deliveries change it meanwhile
            while credit > 0 and ready.count and has_room():
                entry = self.take()
                if entry is None:
                    return
                consumer.deliver(entry)
                credit -= 1
                if len(consumers) != 1 or consumers[0] is not consumer:
                    break  # the delivery changed the consumers: go round them below
            else:
                return
        while ready.count and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.can_take():
                    break
            else:
                return
            entry = self.take()
            if entry is None:
                return
            consumer.deliver(entry)

    def _dispatch_by_priority(self, groups: list[deque[QueueConsumer]]) -> None:
        ready = self.ready
        while ready.count and self._groups is groups:
            chosen: QueueConsumer | None = None
            for group in groups:
                for _ in range(len(group)):
                    consumer = group[0]
                    group.rotate(-1)
                    if consumer.can_take():
                        chosen = consumer
                        break
                if chosen is not None:
                    break
            if chosen is None:
                return
            entry = self.take()
            if entry is None:
                return
            chosen.deliver(entry)

    def _check(self) -> None:
        """Assert the queue's invariants (tests call this between operations)."""
        entries = list(self.ready)  # those in memory; paged ones are counted
        assert len(entries) + self.ready.paged_count == len(self.ready)
        assert self.ready_bytes == sum(e.message.size for e in entries) + self.ready.paged_bytes
        assert self.unacked_count >= 0
        assert all(e.ready for e in entries)
        for level in self.ready.levels:
            seqs = [e.seq for e in level]
            assert seqs == sorted(seqs)
        timed = [e for e in entries if e.expires_at is not None]
        assert sorted(map(id, timed)) == sorted(map(id, self.deadlines))
