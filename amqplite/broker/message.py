"""Message: the body and raw properties stored once, plus the routing facts the core reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

from amqplite.protocol.properties import read_message_id

if TYPE_CHECKING:
    from amqplite.protocol.writers import DeliverTail


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
    deliver_tail: DeliverTail | None = attrs.field(default=None, init=False)
    """The encoded part of a basic.deliver all its queues share (set by the first delivery)."""

    @property
    def size(self) -> int:
        """Body size in bytes (what x-max-length-bytes counts)."""
        return len(self.body)

    @property
    def message_id(self) -> str | None:
        """The message_id property, read from the raw properties (for plugins; not cached)."""
        return read_message_id(self.properties_bin)


class BodyLocation(Protocol):
    """Where the store keeps a body that is no longer in memory."""

    length: int

    def read(self) -> bytes:
        """The body, read back from disk."""
        ...


_BODY_SLOT: Any = Message.__dict__["body"]  # the slot: a PagedMessage keeps its BodyLocation there
_COPIED = (
    "exchange",
    "routing_key",
    "properties_bin",
    "persistent",
    "priority",
    "expiration_ms",
    "headers",
    "deliver_tail",
)


_PROPERTIES: dict[bytes, bytes] = {}


def shared_properties(value: bytes) -> bytes:
    """One object per distinct short properties_bin: a paged backlog keeps millions of equal ones."""
    if len(value) > 256:
        return value
    if len(_PROPERTIES) < 4096:
        return _PROPERTIES.setdefault(value, value)
    return _PROPERTIES.get(value, value)


class PagedMessage(Message):
    """A message whose body was dropped from memory; every read of `body` goes to the store."""

    __slots__ = ()

    @classmethod
    def of(cls, message: Message, location: BodyLocation) -> PagedMessage:
        """A copy of message (for one queue entry) whose body lives at location."""
        paged = object.__new__(cls)
        for name in _COPIED:
            setattr(paged, name, getattr(message, name))
        paged.properties_bin = shared_properties(message.properties_bin)
        _BODY_SLOT.__set__(paged, location)
        return paged

    @property
    def body(self) -> bytes:
        """The body, read back from disk."""
        location: BodyLocation = _BODY_SLOT.__get__(self)
        return location.read()

    @body.setter
    def body(self, value: bytes) -> None:
        """Only the constructor sets it, with the body's location."""
        if isinstance(value, bytes | bytearray | memoryview):
            raise AttributeError("a paged message's body cannot be replaced by bytes")
        _BODY_SLOT.__set__(self, value)

    @property
    def location(self) -> BodyLocation:
        """Where the body is."""
        location: BodyLocation = _BODY_SLOT.__get__(self)
        return location

    @location.setter
    def location(self, value: BodyLocation) -> None:
        _BODY_SLOT.__set__(self, value)

    @property
    def size(self) -> int:
        """Body size in bytes, without reading it."""
        return _BODY_SLOT.__get__(self).length  # type: ignore[no-any-return]


def derive(
    message: Message,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    headers: dict[str, Any] | None,
    expiration_ms: int | None,
) -> Message:
    """A copy with other routing facts and properties sharing the body (a paged one stays unread)."""
    paged = isinstance(message, PagedMessage)
    copy = Message(
        exchange,
        routing_key,
        properties_bin,
        b"" if paged else message.body,
        persistent=message.persistent,
        priority=message.priority,
        expiration_ms=expiration_ms,
        headers=headers,
    )
    if isinstance(message, PagedMessage):
        return PagedMessage.of(copy, message.location)
    return copy


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
