"""What a queue needs of its consumers: the QueueConsumer protocol, and who of them may receive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from amqplite.broker.message import QueueEntry


class QueueConsumer(Protocol):
    """A subscription as its queue sees it (implemented by broker.consumer.Consumer)."""

    tag: str
    no_ack: bool
    exclusive: bool
    prefetch_count: int
    arguments: dict[str, Any]
    unacked: int  # deliveries not yet acked
    priority: int  # x-priority: higher-priority consumers receive first

    def can_take(self) -> bool:
        """True when a delivery now would respect prefetch, flow and the outbound buffer."""
        ...

    def credit(self) -> int:
        """How many deliveries prefetch and flow allow now, output room aside."""
        ...

    def room_check(self) -> Callable[[], bool]:
        """What tells whether its connection's output has room (taken once per dispatch)."""
        ...

    def holds_publishers(self) -> bool:
        """True when it takes more soon: it waits for output room, or its credit returns (flow.py)."""
        ...

    def deliver(self, entry: QueueEntry) -> None:
        """Hand one entry taken from the queue to this consumer's channel."""
        ...

    def queue_gone(self) -> None:
        """The queue was deleted: forget the consumer on its channel, tell the client."""
        ...


class ActivePicker(Protocol):
    """Who of a queue's consumers may receive now (a consumer group's partition)."""

    def active(self) -> QueueConsumer | None:
        """The consumer that may receive now, or None."""
        ...
