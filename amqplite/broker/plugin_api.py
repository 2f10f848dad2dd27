"""The plugin contract (exchange types, queue hooks, scheduler): the only module plugins import."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, Protocol

import attrs

from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.properties import decode_properties

__all__ = [
    "COMMON_EQUIVALENT_ARGUMENTS",
    "Arguments",
    "ChannelException",
    "Destination",
    "ExchangeContext",
    "ExchangeType",
    "ExchangeTypeRegistry",
    "HeldMessage",
    "HoldingRouter",
    "MessageSpool",
    "PluginState",
    "QueueContext",
    "QueueHooks",
    "QueuePlugin",
    "ReplyCode",
    "Router",
    "Scheduled",
    "ScheduledInfo",
    "Scheduler",
    "SchedulingRouter",
    "Verdict",
    "assert_args_equivalence",
    "basic_property",
    "format_argument",
    "freeze",
]

Arguments = dict[str, Any]
"""A decoded AMQP field table (exchange or binding arguments, message headers)."""

COMMON_EQUIVALENT_ARGUMENTS: Final = ("alternate-exchange",)
"""Exchange arguments every type compares on redeclare (RabbitMQ's rabbit_exchange default)."""


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of a decoded field value (for identity and equality)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def format_argument(value: Any) -> str:
    """Render a value the way RabbitMQ's inequivalent-arg messages do."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def assert_args_equivalence(
    resource: str,
    current: Arguments,
    received: Arguments,
    keys: Iterable[str] = COMMON_EQUIVALENT_ARGUMENTS,
) -> None:
    """406 naming the first of `keys` whose received value differs (absent is a value too)."""
    for key in keys:
        now, new = current.get(key), received.get(key)
        if freeze(new) != freeze(now):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{key}' for {resource}: received "
                f"'{format_argument(new)}' but current is '{format_argument(now)}'",
                ClassId.EXCHANGE,
                10,
            )


@attrs.frozen(slots=True, order=True)
class Destination:
    """Where a binding points: a queue, or an exchange for exchange-to-exchange bindings."""

    kind: Literal["queue", "exchange"]
    name: str

    @classmethod
    def queue(cls, name: str) -> Destination:
        """Return the destination of the queue called `name`."""
        return cls("queue", name)

    @classmethod
    def exchange(cls, name: str) -> Destination:
        """Return the destination of the exchange called `name`."""
        return cls("exchange", name)

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}'"


class Router(Protocol):
    """The binding state of one exchange: what bind/unbind built, and how route() reads it."""

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add one distinct binding (the vhost has already deduplicated identical ones)."""
        ...

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding that bind() added; other bindings of `destination` stay."""
        ...

    def route(self, routing_key: str, headers: Arguments | None) -> Iterable[Destination]:
        """Return the destinations a message goes to (duplicates allowed, the caller dedups).

        A router that reads more of a message (a property) may also define
        `route_message(message: HeldMessage) -> Iterable[Destination]`: the vhost then calls
        it instead of route() for a published message (see basic_property()).
        """
        ...


_PAMQP_NAMES: Final = {"type": "message_type"}
"""AMQP property names pamqp spells otherwise."""


def basic_property(message: HeldMessage, name: str) -> Any:
    """One basic property of a message by its AMQP name ("message_id", "type"...), or None."""
    return getattr(decode_properties(message.properties_bin), _PAMQP_NAMES.get(name, name), None)


class ExchangeType(Protocol):
    """An exchange type registered by name: validation plus a router per exchange."""

    @property
    def name(self) -> str:
        """The type name used in exchange.declare: "direct", "topic", or a plugin's name."""
        ...

    def validate(self, arguments: Arguments) -> None:
        """Check exchange.declare arguments; raise ChannelException(PRECONDITION_FAILED) if bad."""
        ...

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Check a binding before bind(); raise ChannelException(PRECONDITION_FAILED) if bad."""
        ...

    def create_router(self) -> Router:
        """Return an empty router for one new exchange of this type."""
        ...

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare: 406 if `received` differs from `current` in an argument that matters.

        `resource` names the exchange for the message ("exchange 'x' in vhost '/'"). Call the
        module function assert_args_equivalence with COMMON_EQUIVALENT_ARGUMENTS plus the
        type's own keys; arguments not compared may differ, as in RabbitMQ.
        """
        ...


class ExchangeTypeRegistry:
    """Exchange types by name; the broker owns one (there is no module-level singleton)."""

    __slots__ = ("_queue_plugins", "_types")

    def __init__(self) -> None:
        self._types: dict[str, ExchangeType] = {}
        self._queue_plugins: list[QueuePlugin] = []

    def register(self, exchange_type: ExchangeType) -> None:
        """Add `exchange_type` under its name; a name taken already raises ValueError."""
        name = exchange_type.name
        if not name:
            raise ValueError("an exchange type needs a non-empty name")
        if name in self._types:
            raise ValueError(f"exchange type {name!r} is already registered")
        self._types[name] = exchange_type

    def get(self, name: str) -> ExchangeType | None:
        """Return the exchange type called `name`, or None if there is none."""
        return self._types.get(name)

    def names(self) -> list[str]:
        """Return the registered type names, sorted."""
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def register_queue_plugin(self, plugin: QueuePlugin) -> None:
        """Offer every new queue to `plugin` (QueuePlugin.attach), after those registered before."""
        if any(p.name == plugin.name for p in self._queue_plugins):
            raise ValueError(f"queue plugin {plugin.name!r} is already registered")
        self._queue_plugins.append(plugin)

    def queue_plugins(self) -> list[QueuePlugin]:
        """The queue plugins, in registration order."""
        return list(self._queue_plugins)


# -- beyond pure routing: time, and holding messages back -------------------------------------


class Scheduled(Protocol):
    """A callback handed to Scheduler.call_at; cancel() before it runs and it never does."""

    def cancel(self) -> None:
        """Do not run the callback (nothing happens if it ran already)."""
        ...


class Scheduler(Protocol):
    """The broker's clocks and timer wheel, as a plugin sees them (virtual time in tests)."""

    def now(self) -> float:
        """Monotonic seconds (deadlines for call_at are on this clock)."""
        ...

    def wall_time(self) -> float:
        """POSIX seconds (for times that must mean the same after a restart)."""
        ...

    def call_at(self, deadline: float, callback: Callable[[float], None]) -> Scheduled:
        """Call callback(now) from the broker's core at (or soon after) the monotonic deadline."""
        ...


class HeldMessage(Protocol):
    """A published message as a holding router sees it; hand it back to ExchangeContext.release."""

    @property
    def properties_bin(self) -> bytes:
        """The encoded basic properties (read one with basic_property())."""
        ...

    @property
    def routing_key(self) -> str:
        """The routing key it was published with."""
        ...

    @property
    def headers(self) -> Arguments | None:
        """The decoded message headers, or None."""
        ...

    @property
    def persistent(self) -> bool:
        """Published with delivery mode 2 (a durable exchange keeps it on disk)."""
        ...

    @property
    def message_id(self) -> str | None:
        """The message_id property, or None (read from the raw properties on each access)."""
        ...


class PluginState(Protocol):
    """Durable records of one exchange or queue, written through the store's metadata log.

    A put() made while routing a publish is on disk before that publish is confirmed; records
    come back with load() when the exchange or queue is restored at boot. Without a store (or
    for a transient exchange or queue) `durable` is False and put/delete/clear do nothing.
    """

    @property
    def durable(self) -> bool:
        """True when records reach the disk."""
        ...

    def load(self) -> dict[str, Arguments]:
        """The records as last written, by key."""
        ...

    def put(self, key: str, value: Arguments) -> None:
        """Write (or replace) one record: a field table (use bytearray for raw bytes)."""
        ...

    def delete(self, key: str) -> None:
        """Forget one record."""
        ...

    def clear(self) -> None:
        """Forget every record."""
        ...


class MessageSpool(Protocol):
    """Held messages of one exchange paged out to disk: the router keeps only their handles.

    A handle is an int that sorts in the order messages were added. A persistent message added
    by a durable exchange is on disk before its publish is confirmed and comes back from
    restored() after a restart or a crash; others are dropped at a restart. Without a store the
    messages stay in memory.
    """

    def add(self, message: HeldMessage, due_ms: int) -> int:
        """Keep a message due at `due_ms` (POSIX ms); return its handle."""
        ...

    def message(self, handle: int) -> HeldMessage:
        """The message of a handle (its body read back from disk)."""
        ...

    def release(self, handle: int) -> None:
        """Route the message through the exchange now; forget it once its copies are on disk."""
        ...

    def cancel(self, handle: int) -> None:
        """Forget a message without routing it."""
        ...

    def restored(self) -> list[tuple[int, int]]:
        """(handle, due ms) of the messages kept from before a restart."""
        ...

    def clear(self) -> None:
        """Forget every message (the exchange was deleted)."""
        ...


@attrs.frozen
class ScheduledInfo:
    """One held message as the management API shows it."""

    handle: int
    due_ms: int
    """POSIX ms."""
    message: HeldMessage


@attrs.frozen
class ExchangeContext:
    """What the broker hands a router it creates through ExchangeType.create_router_in."""

    vhost: str
    name: str
    durable: bool
    arguments: Arguments
    scheduler: Scheduler
    registry: ExchangeTypeRegistry
    release: Callable[[HeldMessage], None]
    """Route a held message now through this exchange's route() (and on, as any publish)."""
    state: PluginState
    encode: Callable[[HeldMessage], Arguments]
    """A held message as a field table to put() in the state."""
    decode: Callable[[Arguments], HeldMessage]
    """The message a table from encode() describes."""
    spool: MessageSpool


class HoldingRouter(Router, Protocol):
    """A router that may hold a published message back (the vhost calls hold() before route())."""

    def hold(self, message: HeldMessage) -> bool:
        """Take the message to release later (True), or let it route now (False)."""
        ...

    def close(self) -> None:
        """The exchange is gone: cancel timers, drop held messages."""
        ...


# -- queue hooks ------------------------------------------------------------------------------


class Verdict(enum.Enum):
    """What QueueHooks.before_enqueue decides for one message offered to its queue."""

    ACCEPT = "accept"
    """Enqueue it as usual."""
    DROP = "drop"
    """Do not enqueue it; the publish still counts as delivered (confirmed, not returned)."""
    HOLD = "hold"
    """The plugin keeps it and hands it back later with QueueContext.release (also confirmed)."""


@attrs.frozen
class QueueContext:
    """What the broker hands a QueuePlugin when a queue is created (declared or restored)."""

    vhost: str
    name: str
    durable: bool
    """Durable and not exclusive: the queue (and its state) comes back at boot."""
    arguments: Arguments
    scheduler: Scheduler
    state: PluginState
    """Durable records of this queue for this plugin (cleared by the plugin's close())."""
    release: Callable[[HeldMessage], None]
    """Enqueue a held message now (before_enqueue is not asked again) and dispatch it."""
    encode: Callable[[HeldMessage], Arguments]
    """A message as a field table to put() in the state."""
    decode: Callable[[Arguments], HeldMessage]
    """The message a table from encode() describes."""
    messages: Callable[[], Iterable[HeldMessage]]
    """The ready messages in the queue now, in queue order (after a boot: those restored)."""


class QueueHooks(Protocol):
    """One plugin's hooks on one queue; the queue calls them inside the broker's core."""

    def before_enqueue(self, message: HeldMessage) -> Verdict:
        """A published (or exchange-released) message is about to enter the queue."""
        ...

    def refused(self, message: HeldMessage) -> None:
        """The queue refused a message this hook accepted (a length limit): forget it."""
        ...

    def after_ack(self, message: HeldMessage) -> None:
        """A message left the queue acknowledged (basic.ack, or delivered with auto-ack)."""
        ...

    def close(self) -> None:
        """The queue was deleted: cancel timers, clear the state."""
        ...


class QueuePlugin(Protocol):
    """Registered with ExchangeTypeRegistry.register_queue_plugin; offered every new queue."""

    @property
    def name(self) -> str:
        """The plugin's name (unique among queue plugins)."""
        ...

    def attach(self, context: QueueContext) -> QueueHooks | None:
        """Hooks for this queue, or None to leave it alone (406 ChannelException: bad arguments)."""


class SchedulingRouter(HoldingRouter, Protocol):
    """A holding router whose held messages can be listed and cancelled (management API, ctl)."""

    def scheduled_count(self) -> int:
        """How many messages are held."""
        ...

    def next_due_ms(self) -> int | None:
        """When the first held message is due (POSIX ms), or None."""
        ...

    def scheduled(self, limit: int) -> list[ScheduledInfo]:
        """The first `limit` held messages, earliest first."""
        ...

    def scheduled_message(self, handle: int) -> ScheduledInfo | None:
        """One held message, or None."""
        ...

    def cancel(self, handle: int) -> bool:
        """Drop one held message; False if there is none with that handle."""
        ...
