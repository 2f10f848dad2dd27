"""Consumers and the broker's side of a channel: delivery tags, unacked messages and QoS."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Final, NamedTuple, Protocol

import attrs

from amqplite.broker.message import QueueEntry
from amqplite.broker.queue import Queue
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException


class DeliverySink(Protocol):
    """What the core needs from a client connection to hand it deliveries."""

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        """Send basic.deliver with the entry's message."""

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        """Send a server-initiated basic.cancel (the queue went away)."""

    def has_capacity(self) -> bool:
        """False while the connection's outbound buffer is full."""

    def output_moving(self) -> bool:
        """True unless the peer stopped taking output (a full buffer then is its own doing)."""


class Unacked(NamedTuple):
    """A delivered message awaiting ack: where it came from and who got it (a tuple: cheap)."""

    entry: QueueEntry
    queue: Queue
    consumer: Consumer | None
    deadline: float | None = None  # consumer acknowledgement timeout (monotonic seconds)
    timeout_ms: int = 0


NO_LIMIT: Final = 1 << 62  # Consumer.credit without a prefetch limit
_new_unacked = tuple.__new__  # an Unacked without the Python call of its __new__


@attrs.define(eq=False)
class Consumer:
    """A basic.consume subscription of one channel to one queue."""

    tag: str
    queue: Queue
    channel: DeliveryChannel
    no_ack: bool = False
    exclusive: bool = False
    prefetch_count: int = 0
    arguments: dict[str, Any] = attrs.field(factory=dict)
    unacked: int = 0
    priority: int = 0  # x-priority: higher-priority consumers receive first

    def queue_gone(self) -> None:
        """The queue was deleted: forget the consumer on its channel, tell the client."""
        channel = self.channel
        channel.consumers.pop(self.tag, None)
        channel.sink.cancel_consumer(channel.channel_id, self.tag)

    def can_take(self) -> bool:
        """True when a delivery now would respect prefetch, flow and the outbound buffer."""
        channel = self.channel
        if not channel.active or not channel.sink.has_capacity():
            return False
        if self.no_ack:
            return True
        if self.prefetch_count and self.unacked >= self.prefetch_count:
            return False
        return not (channel.global_prefetch and channel.global_unacked >= channel.global_prefetch)

    def credit(self) -> int:
        """How many deliveries prefetch and flow allow now, output room aside (NO_LIMIT: any)."""
        channel = self.channel
        if not channel.active:
            return 0
        if self.no_ack:
            return NO_LIMIT
        room = self.prefetch_count - self.unacked if self.prefetch_count else NO_LIMIT
        if channel.global_prefetch:
            room = min(room, channel.global_prefetch - channel.global_unacked)
        return room

    def room_check(self) -> Callable[[], bool]:
        """What tells whether its connection's output has room (taken once per dispatch)."""
        return self.channel.sink.has_capacity

    def holds_publishers(self) -> bool:
        """True when it takes more soon: it waits for output room, or its credit returns (flow.py)."""
        channel = self.channel
        if not channel.active:
            return False
        if not self.no_ack and (
            (self.prefetch_count and self.unacked >= self.prefetch_count)
            or (channel.global_prefetch and channel.global_unacked >= channel.global_prefetch)
        ):
            if not (channel.credit_returning and channel.reading):
                return False
        elif channel.sink.has_capacity():
            return False
        return channel.sink.output_moving()

    def deliver(self, entry: QueueEntry) -> None:
        """Hand one entry taken from the queue to this consumer's channel.

        The channel assigns a delivery tag and tracks the message unless it is auto-acked.
        """
        channel = self.channel
        tag = channel.next_tag
        channel.next_tag = tag + 1
        queue = self.queue
        stats, totals = queue.stats, queue.totals
        if entry.delivery_count:
            stats.redeliver += 1
            totals.redeliver += 1
        if self.no_ack:
            stats.deliver_no_ack += 1
            totals.deliver_no_ack += 1
            channel.sink.deliver(channel.channel_id, self.tag, tag, entry)
            entry.delivery_count += 1
            queue.settle(entry, True)
            return
        stats.deliver += 1
        totals.deliver += 1
        timeout = queue.ack_timeout_ms
        if timeout:  # `track` inline (a consumer timeout is on by default): no call but the clock's
            deadline = queue.host.clock() + queue.ack_timeout
            channel.unacked[tag] = _new_unacked(Unacked, (entry, queue, self, deadline, timeout))
            if channel.timer_due is None:
                queue.host.schedule(channel, deadline)
        else:
            channel.unacked[tag] = _new_unacked(Unacked, (entry, queue, self, None, 0))
        self.unacked += 1
        channel.global_unacked += 1
        queue.unacked_count += 1
        channel.sink.deliver(channel.channel_id, self.tag, tag, entry)
        entry.delivery_count += 1


@attrs.define(eq=False)
class DeliveryChannel:
    """The broker's view of one AMQP channel: delivery tags, unacked messages, prefetch."""

    channel_id: int
    sink: DeliverySink
    prefetch_count: int = 0
    global_prefetch: int = 0
    global_unacked: int = 0
    active: bool = True
    next_tag: int = 1
    unacked: dict[int, Unacked] = attrs.field(factory=dict)
    consumers: dict[str, Consumer] = attrs.field(factory=dict)
    timer_due: float | None = None
    timed_out: bool = False
    acks: int = 0  # basic.ack/nack/reject frames settled (pacing watches it move, flow.py)
    acks_swept: int = -1  # `acks` at the last sweep
    credit_returning: bool = False  # acked lately: credit its consumers are out of comes back
    reading: bool = True  # False while its connection is not read (it waits for pacing)

    def _new_tag(self) -> int:
        tag = self.next_tag
        self.next_tag += 1
        return tag

    def get(self, queue: Queue, no_ack: bool) -> tuple[int, QueueEntry, bool] | None:
        """basic.get: take the head (tag, entry, redelivered), tracked as unacked unless no_ack."""
        queue.check_led_here(ClassId.BASIC, 70)
        if queue.settings.expires is not None:
            queue.touch()
        entry = queue.take()
        if entry is None:
            return None
        return self.took(queue, entry, no_ack)

    def took(self, queue: Queue, entry: QueueEntry, no_ack: bool) -> tuple[int, QueueEntry, bool]:
        """basic.get's entry (taken here, or got from the leader elsewhere): tracked unless no_ack."""
        tag = self._new_tag()
        redelivered = entry.redelivered
        entry.delivery_count += 1
        for stats in (queue.stats, queue.totals):
            if redelivered:
                stats.redeliver += 1
            if no_ack:
                stats.get_no_ack += 1
            else:
                stats.get += 1
        if no_ack:
            queue.settle(entry, True)
        else:
            self.unacked[tag] = self.track(entry, queue, None)
            queue.unacked_count += 1
        return tag, entry, redelivered

    def track(self, entry: QueueEntry, queue: Queue, consumer: Consumer | None) -> Unacked:
        """An unacked delivery, with its acknowledgement deadline when the queue has a timeout."""
        timeout = queue.ack_timeout_ms
        if not timeout:
            return _new_unacked(Unacked, (entry, queue, consumer, None, 0))
        host = queue.host
        deadline = host.clock() + queue.ack_timeout
        if self.timer_due is None:
            host.schedule(self, deadline)
        return _new_unacked(Unacked, (entry, queue, consumer, deadline, timeout))

    def on_timer(self, now: float) -> float | None:
        """Timer callback: a delivery unacked past its deadline closes the channel (406)."""
        due: float | None = None
        for tag, item in self.unacked.items():
            if item.deadline is None:
                continue
            if item.deadline <= now:
                self._time_out(tag, item)
                return None
            if due is None or item.deadline < due:
                due = item.deadline
        return due

    def _time_out(self, tag: int, item: Unacked) -> None:
        """Tell the client why (406, as RabbitMQ words it); its unacked messages are requeued."""
        self.timed_out = True
        text = (
            f"delivery acknowledgement on channel {self.channel_id} timed out. Timeout value "
            f"used: {item.timeout_ms} ms. This timeout value can be configured, see consumers "
            "doc guide to learn more"
        )
        closer = getattr(self.sink, "close_channel", None)
        if closer is not None:
            closer(self.channel_id, ReplyCode.PRECONDITION_FAILED, text)
            return
        queues: dict[int, Queue] = {}
        for unacked in self.settle_all():  # a sink that cannot close channels: requeue anyway
            unacked.queue.requeue(unacked.entry)
            queues[id(unacked.queue)] = unacked.queue
        for queue in queues.values():
            queue.dispatch()

    def _settle(self, tag: int) -> Unacked:
        """Remove one unacked delivery and release the prefetch credit it held."""
        item = self.unacked.pop(tag)
        item.queue.unacked_count -= 1
        if item.consumer is not None:
            item.consumer.unacked -= 1
            self.global_unacked -= 1
        return item

    def settle(self, delivery_tag: int, multiple: bool) -> list[Unacked]:
        """Remove the deliveries an ack/nack/reject names; unknown tags are a 406."""
        if multiple:
            return self._settle_up_to(delivery_tag)
        if delivery_tag not in self.unacked:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}"
            )
        return [self._settle(delivery_tag)]

    def _settle_up_to(self, delivery_tag: int) -> list[Unacked]:
        """`settle` with multiple: the unacked tags up to delivery_tag, taken as one run."""
        unacked = self.unacked
        count = len(unacked)
        if count and (not delivery_tag or delivery_tag >= next(reversed(unacked))):
            items = list(unacked.values())  # all of them: ack multiple of the latest tag
            unacked.clear()
        else:
            first = next(iter(unacked)) if count else 0
            if count and next(reversed(unacked)) - first + 1 == count:  # tags without gaps
                taken = max(0, delivery_tag - first + 1)
                tags = list(islice(unacked, taken))
            else:
                tags = list(self._tags_up_to(delivery_tag))
            if delivery_tag and not tags and delivery_tag not in unacked:
                raise ChannelException(
                    ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}"
                )
            items = list(map(unacked.pop, tags))
        held = 0
        for item in items:  # release the credit they held
            item.queue.unacked_count -= 1
            consumer = item.consumer
            if consumer is not None:
                consumer.unacked -= 1
                held += 1
        self.global_unacked -= held
        return items

    def settle_each(self, tags: Sequence[int], queues: dict[int, Queue]) -> tuple[int, int | None]:
        """Settle single acks in order, their queues into `queues`: (how many, unknown tag).

        Stops at the first unknown tag (None: all known). The counters of a queue and of a
        consumer move once per run of acks to them, unless the queue has someone to tell of
        each ack (`Queue.quiet_acks`): then as one ack at a time.
        """
        pop = self.unacked.pop
        queue: Queue | None = None
        consumer: Consumer | None = None
        quiet = True
        run = done = 0  # run: acks to `queue` and `consumer` not counted yet
        unknown: int | None = None
        try:
            for tag in tags:
                item = pop(tag, None)
                if item is None:
                    unknown = tag
                    break
                if item[1] is not queue or item[2] is not consumer:
                    if run:
                        done += self._count_acks(queue, consumer, run)
                    queue, consumer, run = item[1], item[2], 0
                    quiet = queue.quiet_acks()
                    queues[id(queue)] = queue
                run += 1
                if not quiet:  # counted first, then settled: as one ack at a time
                    done += self._count_acks(queue, consumer, run)
                    run = 0
                    queue.settle(item[0], True)
        finally:
            if run:
                done += self._count_acks(queue, consumer, run)
        return done, unknown

    def _count_acks(self, queue: Queue | None, consumer: Consumer | None, count: int) -> int:
        """`count` deliveries of `queue` to `consumer` acked: the credit they held comes back."""
        assert queue is not None
        queue.unacked_count -= count
        queue.stats.ack += count
        if consumer is not None:  # not basic.get's
            consumer.unacked -= count
            self.global_unacked -= count
        return count

    def _tags_up_to(self, delivery_tag: int) -> Iterator[int]:
        """Unacked tags up to and including delivery_tag (all of them for 0), oldest first."""
        for tag in self.unacked:
            if delivery_tag and tag > delivery_tag:
                break
            yield tag

    def settle_all(self) -> list[Unacked]:
        """Remove every unacked delivery (channel close, recover)."""
        return [self._settle(t) for t in list(self.unacked)]

    def queues_with_consumers(self) -> list[Queue]:
        """The distinct queues this channel consumes from."""
        seen: dict[int, Queue] = {}
        for consumer in self.consumers.values():
            seen.setdefault(id(consumer.queue), consumer.queue)
        return list(seen.values())


def consumer_priority(arguments: Mapping[str, Any] | None) -> int:
    """The x-priority consume argument (406 unless an integer)."""
    value = (arguments or {}).get("x-priority", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg 'x-priority' for consumer: {value!r}",
            ClassId.BASIC,
            20,
        )
    return value
