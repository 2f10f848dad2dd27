"""The exchange-type contract: the only module of amqplite that plugins/ may import."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Protocol

import attrs

from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException

__all__ = [
    "Arguments",
    "ChannelException",
    "Destination",
    "ExchangeType",
    "ExchangeTypeRegistry",
    "ReplyCode",
    "Router",
]

Arguments = dict[str, Any]
"""A decoded AMQP field table (exchange or binding arguments, message headers)."""


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
        """Return the destinations a message goes to (duplicates allowed, the caller dedups)."""
        ...


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


class ExchangeTypeRegistry:
    """Exchange types by name; the broker owns one (there is no module-level singleton)."""

    __slots__ = ("_types",)

    def __init__(self) -> None:
        self._types: dict[str, ExchangeType] = {}

    @classmethod
    def with_builtins(cls) -> ExchangeTypeRegistry:
        """Return a registry holding direct, fanout, topic and headers."""
        from amqplite.broker.exchange_types import (
            DirectExchangeType,
            FanoutExchangeType,
            HeadersExchangeType,
        )
        from amqplite.broker.topic import TopicExchangeType

        registry = cls()
        for exchange_type in (
            DirectExchangeType(),
            FanoutExchangeType(),
            TopicExchangeType(),
            HeadersExchangeType(),
        ):
            registry.register(exchange_type)
        return registry

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
