"""Message: the body and raw properties stored once, plus the routing facts the core reads."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(slots=True, eq=False)
class Message:
    """One published message; shared by every queue it is routed to (the body is stored once)."""

    exchange: str
    routing_key: str
    properties_bin: bytes
    body: bytes
    persistent: bool = False
    priority: int = 0
    expiration_ms: int | None = None
    headers: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        """Body size in bytes (what x-max-length-bytes counts)."""
        return len(self.body)


@attrs.define(slots=True, eq=False)
class QueueEntry:
    """A message's place in one queue: its sequence number and delivery history there."""

    seq: int
    message: Message
    delivery_count: int = 0
    level: int = 0  # priority level in the queue (0 when the queue has no x-max-priority)
    expires_at: float | None = None  # monotonic deadline from the message and queue TTLs
    ready: bool = False  # in the queue's ready list (False once taken, expired or dropped)

    @property
    def redelivered(self) -> bool:
        """True once the message has been delivered from this queue before."""
        return self.delivery_count > 0
