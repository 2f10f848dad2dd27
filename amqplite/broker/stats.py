"""Message counters kept in O(1) per message: per queue, and broker-wide totals."""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class MessageStats:
    """Counts of what happened to messages (RabbitMQ's message_stats field names)."""

    publish: int = 0  # messages enqueued
    deliver: int = 0  # basic.deliver to consumers (manual ack)
    deliver_no_ack: int = 0  # basic.deliver to auto-ack consumers
    get: int = 0  # basic.get-ok, manual ack
    get_no_ack: int = 0  # basic.get-ok, auto ack
    redeliver: int = 0  # deliveries with the redelivered flag
    ack: int = 0  # acknowledged by clients
    reject: int = 0  # nacked/rejected without requeue (dropped or dead-lettered)
    requeue: int = 0  # returned to the queue (nack/reject/recover/channel close)
    dead_lettered: int = 0
    expired: int = 0
    dropped: int = 0  # removed by a length limit or purge-like overflow
    received: int = 0  # messages published (totals only: counted once, however many queues)
    unroutable: int = 0  # published messages no queue took (totals only)
    returned: int = 0  # unroutable mandatory messages sent back with basic.return (totals only)
    confirm: int = 0  # publisher confirms (basic.ack) owed to confirm-mode publishers (totals)
    get_empty: int = 0  # basic.get that found the queue empty

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict (for the management API and metrics)."""
        return attrs.asdict(self)


@attrs.define(slots=True)
class Churn:
    """Objects created and closed since boot (RabbitMQ's churn_rates); counted at open/close."""

    connection_created: int = 0
    connection_closed: int = 0
    channel_created: int = 0
    channel_closed: int = 0
    queue_declared: int = 0
    queue_created: int = 0
    queue_deleted: int = 0
