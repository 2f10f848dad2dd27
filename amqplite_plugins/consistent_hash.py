"""Bundled plugin: the "x-consistent-hash" exchange type (routing key, header or property hashing).

Each binding's routing key is a positive integer weight. A message goes to exactly one bound
destination, chosen by weighted rendezvous hashing of its routing key (or of the header named by
the `hash-header` exchange argument, or the property named by `hash-property`): every destination
scores hash(value, destination) scaled by its weight and the highest score wins. So a value keeps
going to the same destination while the bindings stay, the spread follows the weights closely,
and adding or removing a destination only moves the values it wins or won.

As in RabbitMQ's rabbitmq_consistent_hash_exchange, `hash-header` and `hash-property` are mutually
exclusive, `hash-property` is one of correlation_id, message_id or timestamp, and a message
without the header or property is not routed (it is returned if mandatory, or goes to the
alternate exchange).
"""

from __future__ import annotations

import datetime
import hashlib
import math
from typing import Any, ClassVar, Final

from amqplite.broker.plugin_api import (
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeTypeRegistry,
    HeldMessage,
    ReplyCode,
    assert_args_equivalence,
    basic_property,
)

__all__ = [
    "HASH_PROPERTIES",
    "MAX_WEIGHT",
    "ConsistentHashExchangeType",
    "ConsistentHashRouter",
    "register",
]

MAX_WEIGHT = 1000
"""The largest weight one binding may name."""
HASH_PROPERTIES: Final = ("correlation_id", "message_id", "timestamp")
"""The message properties `hash-property` may name (RabbitMQ's list)."""
_MASK: Final = (1 << 64) - 1


def _hash64(text: str) -> int:
    """Return a stable 64-bit hash of `text` (the same in every process, unlike hash())."""
    data = text.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


_SPREAD: Final = 0x9E3779B97F4A7C15  # odd: multiplying by it mod 2**64 spreads the bits upward


def _score(key: int, seed: int) -> int:
    """A 64-bit pseudo-random score of a (value, destination) pair."""
    return ((key ^ seed) * _SPREAD) & _MASK


def _weight(routing_key: str) -> int | None:
    """Return the weight a binding key names, or None if it is not an integer in 1..MAX_WEIGHT."""
    if not routing_key.isascii() or not routing_key.isdigit() or len(routing_key) > 6:
        return None
    weight = int(routing_key)
    return weight if 0 < weight <= MAX_WEIGHT else None


def _text(value: Any) -> str | None:
    """The text a header or property value is hashed as (None: absent, the message is unroutable)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    if isinstance(value, datetime.datetime):  # a timestamp: POSIX seconds, as RabbitMQ hashes it
        return str(int(value.timestamp()))
    return str(value)


class ConsistentHashRouter:
    """The weighted destinations of one exchange, and what the exchange hashes on."""

    __slots__ = ("_candidates", "_header", "_property", "_uniform", "_weights")

    def __init__(self, header: str | None = None, property_name: str | None = None) -> None:
        self._weights: dict[Destination, int] = {}  # summed over the destination's bindings
        self._candidates: list[tuple[Destination, int, float]] | None = None
        self._uniform = True  # every destination has the same weight
        self._header = header
        self._property = property_name

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add the weight `routing_key` names to `destination`'s."""
        self._weights[destination] = self._weights.get(destination, 0) + (_weight(routing_key) or 1)
        self._candidates = None

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Take back the weight that the matching bind() added."""
        left = self._weights.get(destination, 0) - (_weight(routing_key) or 1)
        if left > 0:
            self._weights[destination] = left
        else:
            self._weights.pop(destination, None)
        self._candidates = None

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """The one destination for a routing key (or the configured header), if any is bound."""
        if self._property is not None:
            return []  # route_message() reads the property; a bare key cannot
        if self._header is not None:
            return self._winner(_text((headers or {}).get(self._header)))
        return self._winner(routing_key)

    def route_message(self, message: HeldMessage) -> list[Destination]:
        """The one destination for a published message (reads the property when configured)."""
        if self._property is not None:
            return self._winner(_text(basic_property(message, self._property)))
        return self.route(message.routing_key, message.headers)

    def _winner(self, value: str | None) -> list[Destination]:
        """The destination with the highest (weighted) score for `value`."""
        if value is None:
            return []
        candidates = self._candidates
        if candidates is None:
            candidates = self._candidates = [
                (destination, _hash64(f"{destination.kind}\0{destination.name}"), float(weight))
                for destination, weight in sorted(self._weights.items())
            ]
            self._uniform = len({weight for _, _, weight in candidates}) <= 1
        if not candidates:
            return []
        key = _hash64(value)
        best, best_score = candidates[0][0], -1.0
        if self._uniform:  # equal weights: the highest raw score wins (what the formula gives)
            for destination, seed, _ in candidates:
                raw = _score(key, seed)
                if raw > best_score:
                    best, best_score = destination, raw
            return [best]
        for destination, seed, weight in candidates:
            score = weight / -math.log((_score(key, seed) + 1) / (_MASK + 2))
            if score > best_score:
                best, best_score = destination, score
        return [best]


def _hash_arguments(arguments: Arguments) -> tuple[str | None, str | None]:
    """The (hash-header, hash-property) pair of exchange arguments, checked (406 otherwise)."""
    header, prop = arguments.get("hash-header"), arguments.get("hash-property")
    for key, value in (("hash-header", header), ("hash-property", prop)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"invalid arg '{key}' for exchange type 'x-consistent-hash': "
                f"expected a non-empty string, got {value!r}",
            )
    if header is not None and prop is not None:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED, "hash-header and hash-property are mutually exclusive"
        )
    if prop is not None and prop not in HASH_PROPERTIES:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"Unsupported property: {prop} (hash-property must be one of "
            f"{', '.join(HASH_PROPERTIES)})",
        )
    return header, prop


class ConsistentHashExchangeType:
    """Exchange type "x-consistent-hash": weighted consistent hashing of one message value."""

    name: ClassVar[str] = "x-consistent-hash"

    def validate(self, arguments: Arguments) -> None:
        """Check hash-header / hash-property (406 PRECONDITION_FAILED when bad)."""
        _hash_arguments(arguments)

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Require the binding key to be an integer weight from 1 to MAX_WEIGHT (406 otherwise)."""
        if _weight(routing_key) is None:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"binding key {routing_key!r} must be an integer weight from 1 to {MAX_WEIGHT}",
            )

    def create_router(self) -> ConsistentHashRouter:
        """Return an empty router hashing the routing key."""
        return ConsistentHashRouter()

    def create_router_in(self, context: ExchangeContext) -> ConsistentHashRouter:
        """Return an empty router hashing what the exchange's arguments name."""
        header, prop = _hash_arguments(context.arguments)
        return ConsistentHashRouter(header, prop)

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ's plugin."""
        assert_args_equivalence(resource, current, received)


def register(registry: ExchangeTypeRegistry) -> None:
    """Add this plugin's exchange type to `registry`."""
    registry.register(ConsistentHashExchangeType())
