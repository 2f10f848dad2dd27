"""Example plugin: the "x-consistent-hash" exchange type, spreading messages over a hash ring.

Each binding's routing key is a positive integer weight. A destination gets as many points on a
64-bit ring as the sum of its binding weights; a message goes to the owner of the first point at
or after the hash of its routing key. Adding or removing a destination only moves the messages
that hash near its points, so a key keeps going to the same queue while the bindings stay.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import ClassVar

from amqplite.broker.plugin_api import (
    Arguments,
    ChannelException,
    Destination,
    ExchangeTypeRegistry,
    ReplyCode,
    assert_args_equivalence,
)

__all__ = ["MAX_WEIGHT", "ConsistentHashExchangeType", "ConsistentHashRouter", "register"]

_UNSUPPORTED_ARGUMENTS = ("hash-header", "hash-property")
MAX_WEIGHT = 1000
"""The largest weight one binding may name: each unit of weight is a point on the ring."""


def _hash64(text: str) -> int:
    """Return a stable 64-bit hash of `text` (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _weight(routing_key: str) -> int | None:
    """Return the weight a binding key names, or None if it is not an integer in 1..MAX_WEIGHT."""
    if not routing_key.isascii() or not routing_key.isdigit() or len(routing_key) > 6:
        return None
    weight = int(routing_key)
    return weight if 0 < weight <= MAX_WEIGHT else None


class ConsistentHashRouter:
    """The hash ring of one exchange; rebuilt lazily after bindings change."""

    __slots__ = ("_owners", "_points", "_stale", "_weights")

    def __init__(self) -> None:
        self._weights: dict[Destination, int] = {}  # summed over the destination's bindings
        self._points: list[int] = []
        self._owners: list[Destination] = []
        self._stale = False

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Give `destination` as many more ring points as the weight `routing_key` names."""
        self._weights[destination] = self._weights.get(destination, 0) + (_weight(routing_key) or 1)
        self._stale = True

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Take back the ring points that the matching bind() gave."""
        left = self._weights.get(destination, 0) - (_weight(routing_key) or 1)
        if left > 0:
            self._weights[destination] = left
        else:
            self._weights.pop(destination, None)
        self._stale = True

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """Return the one destination that owns the hash of `routing_key`, if any is bound."""
        if self._stale:
            self._rebuild()
        if not self._points:
            return []
        index = bisect.bisect_left(self._points, _hash64(routing_key)) % len(self._points)
        return [self._owners[index]]

    def _rebuild(self) -> None:
        """Recompute the sorted ring from the weights."""
        ring = sorted(
            (_hash64(f"{destination.kind}\0{destination.name}\0{point}"), destination)
            for destination, weight in self._weights.items()
            for point in range(weight)
        )
        self._points = [point for point, _ in ring]
        self._owners = [destination for _, destination in ring]
        self._stale = False


class ConsistentHashExchangeType:
    """Exchange type "x-consistent-hash": weighted consistent hashing on the routing key."""

    name: ClassVar[str] = "x-consistent-hash"

    def validate(self, arguments: Arguments) -> None:
        """Refuse the hash-header / hash-property arguments, which this example does not do."""
        for key in _UNSUPPORTED_ARGUMENTS:
            if key in arguments:
                raise ChannelException(
                    ReplyCode.PRECONDITION_FAILED,
                    f"argument {key!r} is not supported by exchange type {self.name!r}",
                )

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Require the binding key to be an integer weight from 1 to MAX_WEIGHT (406 otherwise)."""
        if _weight(routing_key) is None:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"binding key {routing_key!r} must be an integer weight from 1 to {MAX_WEIGHT}",
            )

    def create_router(self) -> ConsistentHashRouter:
        """Return an empty ring."""
        return ConsistentHashRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ's plugin."""
        assert_args_equivalence(resource, current, received)


def register(registry: ExchangeTypeRegistry) -> None:
    """Add this plugin's exchange type to `registry`."""
    registry.register(ConsistentHashExchangeType())
