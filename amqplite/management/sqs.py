"""SQS-style messaging over HTTP: receive with a receipt handle and a visibility timeout, delete.

A received message is a delivery on a management-owned DeliveryChannel, so it is unacked in
its queue like any AMQP delivery. Deleting it acks it; when its visibility timeout passes it
is rejected with requeue, back to its original place, redelivered to the next receiver or
AMQP consumer. Delayed publishes wait here until they are due. Pure: `now` is passed in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import attrs
from sortedcontainers import SortedKeyList

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.queue import Queue

MAX_VISIBILITY_TIMEOUT = 12 * 3600.0  # SQS's limit
MAX_RECEIVE = 1000
MAX_DELAY = 15 * 60.0  # SQS's limit


@attrs.define(eq=False)
class InFlight:
    """A received message: its delivery tag on the management channel and when it reappears."""

    receipt: str
    tag: int
    entry: QueueEntry
    queue: Queue
    deadline: float


@attrs.define(eq=False)
class Delayed:
    """A publish waiting for its delay to pass."""

    due: float
    vhost: str
    queue: str
    message: Message


@attrs.frozen
class Received:
    """One message handed to an HTTP receiver."""

    receipt: str
    entry: QueueEntry
    redelivered: bool


class NoSink:
    """A management channel has no consumers: nothing is ever pushed to it."""

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        """Unused."""

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        """Unused."""

    def has_capacity(self) -> bool:
        """Always room."""
        return True

    def output_moving(self) -> bool:
        """Never stalled."""
        return True


def management_channel() -> DeliveryChannel:
    """A delivery channel of management's own (HTTP get and receive, the aliveness test)."""
    return DeliveryChannel(0, NoSink())


def _noop() -> None:
    """Default change notification."""


class SqsMessaging:
    """Receipt handles, visibility deadlines and delayed publishes for the HTTP messaging API."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.channel = management_channel()
        self.in_flight: dict[str, InFlight] = {}
        self._deadlines: SortedKeyList[InFlight] = SortedKeyList(key=lambda f: f.deadline)
        self._delayed: SortedKeyList[Delayed] = SortedKeyList(key=lambda d: d.due)
        self.on_change: Callable[[], None] = _noop  # the server re-arms its timer

    def publish(self, vhost: str, queue: str, message: Message, delay: float, now: float) -> bool:
        """Publish to the queue through the default exchange, now or after `delay` seconds."""
        if delay > 0:
            self._delayed.add(Delayed(now + delay, vhost, queue, message))
            self.on_change()
            return True
        return self._publish(vhost, message)

    def _publish(self, vhost_name: str, message: Message) -> bool:
        vhost = self.broker.vhosts.get(vhost_name)
        if vhost is None:
            return False
        return bool(self.broker.publish(vhost, "", message))

    def receive(
        self, queue: Queue, max_count: int, visibility: float, now: float
    ) -> list[Received]:
        """Take up to max_count ready messages; each stays invisible until its deadline."""
        out: list[Received] = []
        for _ in range(max_count):
            got = self.channel.get(queue, False)
            if got is None:
                break
            tag, entry, redelivered = got
            receipt = secrets.token_urlsafe(18)
            flight = InFlight(receipt, tag, entry, queue, now + visibility)
            self.in_flight[receipt] = flight
            self._deadlines.add(flight)
            out.append(Received(receipt, entry, redelivered))
        if out:
            self.on_change()
        return out

    def delete(self, receipt: str, queue: Queue | None = None) -> bool:
        """Acknowledge a received message; False if the receipt is unknown or expired."""
        flight = self.in_flight.get(receipt)
        if flight is None or (queue is not None and flight.queue is not queue):
            return False
        del self.in_flight[receipt]
        self._deadlines.remove(flight)
        if flight.tag not in self.channel.unacked:  # requeued meanwhile (consumer timeout)
            return False
        self.broker.ack(self.channel, flight.tag, False)
        return True

    def change_visibility(self, receipt: str, visibility: float, now: float) -> bool:
        """Move a received message's deadline to now + visibility; False if unknown."""
        flight = self.in_flight.get(receipt)
        if flight is None:
            return False
        self._deadlines.remove(flight)
        flight.deadline = now + visibility
        self._deadlines.add(flight)
        self.on_change()
        return True

    def expire(self, now: float) -> int:
        """Requeue the messages whose visibility passed, publish the due delayed ones; how many."""
        done = 0
        while self._deadlines and self._deadlines[0].deadline <= now:
            flight = self._deadlines.pop(0)
            del self.in_flight[flight.receipt]
            if flight.tag in self.channel.unacked:  # else already requeued by a consumer timeout
                self.broker.reject(self.channel, flight.tag, False, requeue=True)
            done += 1
        while self._delayed and self._delayed[0].due <= now:
            delayed = self._delayed.pop(0)
            self._publish(delayed.vhost, delayed.message)
            done += 1
        return done

    def next_deadline(self) -> float | None:
        """When expire() next has work, or None."""
        times = []
        if self._deadlines:
            times.append(self._deadlines[0].deadline)
        if self._delayed:
            times.append(self._delayed[0].due)
        return min(times) if times else None

    def in_flight_count(self, queue: Queue) -> int:
        """Messages of the queue received over HTTP and not yet deleted or expired."""
        return sum(1 for f in self.in_flight.values() if f.queue is queue)
