"""Helpers for the queue-feature unit tests: a fake clock, a recording client, message builders."""

from __future__ import annotations

from typing import Any

import attrs

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, QueueEntry
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.properties import read_facts

WALL = 1_700_000_000.0


@attrs.define
class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@attrs.define
class Wall(FakeClock):
    """A settable POSIX clock."""

    now: float = WALL


@attrs.define
class Client:
    """A client connection as the core sees it; closes channels the way the session does."""

    broker: Broker | None = None
    delivered: list[tuple[int, str, int, QueueEntry]] = attrs.field(factory=list)
    messages: list[Message] = attrs.field(factory=list)  # as they were when delivered
    closed: list[tuple[int, int, str]] = attrs.field(factory=list)
    channels: dict[int, DeliveryChannel] = attrs.field(factory=dict)
    room: bool = True
    moving: bool = True

    def channel(self, channel_id: int = 1) -> DeliveryChannel:
        channel = self.channels[channel_id] = DeliveryChannel(channel_id, self)
        return channel

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        self.delivered.append((channel_id, consumer_tag, delivery_tag, entry))
        self.messages.append(entry.message)

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        pass

    def has_capacity(self) -> bool:
        return self.room

    def output_moving(self) -> bool:
        return self.moving

    def close_channel(self, channel_id: int, reply_code: ReplyCode, reply_text: str) -> None:
        self.closed.append((channel_id, int(reply_code), reply_text))
        assert self.broker is not None
        self.broker.close_channel(self.broker.vhosts["/"], self.channels.pop(channel_id))

    def bodies(self) -> list[bytes]:
        return [d[3].message.body for d in self.delivered]

    def tags(self) -> list[str]:
        return [d[1] for d in self.delivered]


def make_broker(clock: FakeClock, **kwargs: Any) -> Broker:
    broker = Broker(clock=clock, wall_clock=lambda: WALL, **kwargs)
    broker.add_vhost("/")
    return broker


def msg(
    body: bytes,
    routing_key: str = "q",
    *,
    priority: int = 0,
    expiration_ms: int | None = None,
    exchange: str = "",
) -> Message:
    return Message(
        exchange, routing_key, b"\x00\x00", body, priority=priority, expiration_ms=expiration_ms
    )


def headers_of(message: Message) -> dict[str, Any]:
    """The headers as a client would decode them from the delivered properties."""
    return read_facts(message.properties_bin).headers or {}


def get_all(broker: Broker, queue: str) -> list[bytes]:
    """Take every ready message with basic.get (auto-ack), in delivery order."""
    channel = DeliveryChannel(99, Client())
    out: list[bytes] = []
    q = broker.vhosts["/"].queue(queue)
    while (got := channel.get(q, no_ack=True)) is not None:
        out.append(got[1].message.body)
    return out


@attrs.define
class JournalRefusingOnce:
    """The store's side of a durable queue (the QueueJournal seam): its first removal fails."""

    failures: int = 1
    removed: list[int] = attrs.field(factory=list)

    def enqueue(self, entry: QueueEntry) -> None:
        pass

    def delivered(self, entry: QueueEntry) -> None:
        pass

    def remove(self, entry: QueueEntry) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.removed.append(entry.seq)


def persistent(body: bytes, expiration_ms: int) -> Message:
    return Message("", "q", b"\x00\x00", body, persistent=True, expiration_ms=expiration_ms)
