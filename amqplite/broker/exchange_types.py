"""The built-in direct, fanout and headers exchange types (topic lives in topic.py), and their registry."""

from __future__ import annotations

import datetime
import decimal
import enum
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, Final

import attrs

from amqplite.broker.plugin_api import (
    Arguments,
    Destination,
    ExchangeTypeRegistry,
    assert_args_equivalence,
)
from amqplite.broker.topic import TopicExchangeType
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException

__all__ = [
    "DirectExchangeType",
    "DirectRouter",
    "FanoutExchangeType",
    "FanoutRouter",
    "HeadersExchangeType",
    "HeadersRouter",
    "XMatch",
    "builtin_registry",
    "header_values_equal",
]


def _add(counts: dict[Destination, int], destination: Destination) -> None:
    """Count one more binding of `destination`."""
    counts[destination] = counts.get(destination, 0) + 1


def _remove(counts: dict[Destination, int], destination: Destination) -> None:
    """Count one binding of `destination` fewer, forgetting it at zero; absent is a no-op."""
    left = counts.get(destination, 0) - 1
    if left > 0:
        counts[destination] = left
    else:
        counts.pop(destination, None)


# --- direct -------------------------------------------------------------------------------


class DirectRouter:
    """Exact routing-key match: one dict lookup per message."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, dict[Destination, int]] = {}

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add a binding of `destination` for `routing_key`."""
        _add(self._by_key.setdefault(routing_key, {}), destination)

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding of `destination` for `routing_key`."""
        counts = self._by_key.get(routing_key)
        if counts is None:
            return
        _remove(counts, destination)
        if not counts:
            del self._by_key[routing_key]

    def route(self, routing_key: str, headers: Arguments | None) -> tuple[Destination, ...]:
        """Return the destinations bound with exactly `routing_key`."""
        counts = self._by_key.get(routing_key)
        return tuple(counts) if counts else ()

    def binding_count(self) -> int:
        """Return how many bindings the router holds."""
        return sum(sum(counts.values()) for counts in self._by_key.values())

    def _check(self) -> None:
        """Assert the invariants: no empty keys, only positive counts."""
        for counts in self._by_key.values():
            assert counts, "empty routing-key entry left behind"
            assert all(n > 0 for n in counts.values())


@attrs.frozen(slots=True)
class DirectExchangeType:
    """AMQP direct exchange: a message goes to the bindings whose key equals its routing key."""

    name: ClassVar[str] = "direct"

    def validate(self, arguments: Arguments) -> None:
        """Accept any declare arguments, as RabbitMQ does."""

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Accept any binding."""

    def create_router(self) -> DirectRouter:
        """Return an empty direct router."""
        return DirectRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ."""
        assert_args_equivalence(resource, current, received)


# --- fanout -------------------------------------------------------------------------------


class FanoutRouter:
    """Every bound destination, whatever the routing key."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[Destination, int] = {}

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add a binding of `destination` (the key only tells bindings apart)."""
        _add(self._counts, destination)

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding of `destination`."""
        _remove(self._counts, destination)

    def route(self, routing_key: str, headers: Arguments | None) -> tuple[Destination, ...]:
        """Return every bound destination."""
        return tuple(self._counts)

    def binding_count(self) -> int:
        """Return how many bindings the router holds."""
        return sum(self._counts.values())

    def _check(self) -> None:
        """Assert the invariants: only positive counts."""
        assert all(n > 0 for n in self._counts.values())


@attrs.frozen(slots=True)
class FanoutExchangeType:
    """AMQP fanout exchange: a message goes to every binding."""

    name: ClassVar[str] = "fanout"

    def validate(self, arguments: Arguments) -> None:
        """Accept any declare arguments, as RabbitMQ does."""

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Accept any binding."""

    def create_router(self) -> FanoutRouter:
        """Return an empty fanout router."""
        return FanoutRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ."""
        assert_args_equivalence(resource, current, received)


# --- headers ------------------------------------------------------------------------------


class XMatch(enum.Enum):
    """How a headers binding combines its arguments (the `x-match` binding argument)."""

    ALL = "all"
    ANY = "any"
    ALL_WITH_X = "all-with-x"
    ANY_WITH_X = "any-with-x"


_VOID: Final = ("void",)


def _normalise(value: Any) -> Hashable:
    """Return a hashable form of a field value that compares as RabbitMQ compares values.

    RabbitMQ compares header values with Erlang's `==` and ignores the field type: a long
    string equals a byte array with the same bytes, the integer 1 equals the float 1.0, but a
    boolean never equals a number and a decimal never equals an integer.
    """
    if value is None:
        return _VOID
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("bin", value.encode("utf-8", "surrogateescape"))
    if isinstance(value, bytes | bytearray | memoryview):
        return ("bin", bytes(value))
    if isinstance(value, decimal.Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, datetime.datetime):
        return ("timestamp", value)
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), _normalise(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(_normalise(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("other", repr(value))
    return ("other", type(value).__name__, value)


def header_values_equal(binding_value: Any, header_value: Any) -> bool:
    """Return whether a header value satisfies a binding value (a void binding value: any)."""
    return binding_value is None or _normalise(binding_value) == _normalise(header_value)


def _parse_x_match(arguments: Arguments) -> XMatch:
    """Return the x-match mode of binding arguments; absent or unknown means all, as RabbitMQ."""
    raw = arguments.get("x-match")
    if isinstance(raw, str):
        try:
            return XMatch(raw)
        except ValueError:
            pass
    return XMatch.ALL


@attrs.frozen(slots=True)
class _HeadersBinding:
    """One headers binding compiled for matching: the mode and the (key, value) pairs tested.

    A value of None in `pairs` stands for a void binding value: the header only has to be present.
    """

    destination: Destination
    mode: XMatch
    pairs: tuple[tuple[str, Hashable | None], ...]

    @classmethod
    def compile(cls, destination: Destination, arguments: Arguments) -> _HeadersBinding:
        """Compile binding arguments, dropping x-match and (unless *-with-x) other x- keys."""
        mode = _parse_x_match(arguments)
        with_x = mode in (XMatch.ALL_WITH_X, XMatch.ANY_WITH_X)
        pairs = tuple(
            sorted(  # sorted so that equal arguments in any order compile to equal bindings
                (key, None if value is None else _normalise(value))
                for key, value in arguments.items()
                if key != "x-match" and (with_x or not key.startswith("x-"))
            )
        )
        return cls(destination, mode, pairs)

    def matches(self, headers: Mapping[str, Hashable]) -> bool:
        """Return whether normalised message headers satisfy this binding."""
        missing = object()
        if self.mode is XMatch.ALL or self.mode is XMatch.ALL_WITH_X:
            for key, expected in self.pairs:
                actual = headers.get(key, missing)
                if actual is missing or (expected is not None and expected != actual):
                    return False
            return True
        for key, expected in self.pairs:
            actual = headers.get(key, missing)
            if actual is not missing and (expected is None or expected == actual):
                return True
        return False


class HeadersRouter:
    """Matches message headers against each binding's arguments (x-match all/any/...-with-x)."""

    __slots__ = ("_bindings",)

    def __init__(self) -> None:
        self._bindings: dict[_HeadersBinding, int] = {}

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Add a binding; the routing key only tells bindings apart."""
        compiled = _HeadersBinding.compile(destination, arguments)
        self._bindings[compiled] = self._bindings.get(compiled, 0) + 1

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding with these arguments; absent is a no-op."""
        compiled = _HeadersBinding.compile(destination, arguments)
        left = self._bindings.get(compiled, 0) - 1
        if left > 0:
            self._bindings[compiled] = left
        else:
            self._bindings.pop(compiled, None)

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """Return the destinations of the bindings that the message headers satisfy."""
        if not self._bindings:
            return []
        normalised = {key: _normalise(value) for key, value in (headers or {}).items()}
        return [b.destination for b in self._bindings if b.matches(normalised)]

    def binding_count(self) -> int:
        """Return how many bindings the router holds."""
        return sum(self._bindings.values())

    def _check(self) -> None:
        """Assert the invariants: only positive counts."""
        assert all(n > 0 for n in self._bindings.values())


@attrs.frozen(slots=True)
class HeadersExchangeType:
    """AMQP headers exchange: routes on message headers, ignoring the routing key."""

    name: ClassVar[str] = "headers"

    def validate(self, arguments: Arguments) -> None:
        """Accept any declare arguments, as RabbitMQ does."""

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Refuse an x-match that is not a string naming one of the four modes (406)."""
        if "x-match" not in arguments:
            return
        raw = arguments["x-match"]
        if not isinstance(raw, str):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"Invalid x-match field type {_type_name(raw)} (value {raw!r}); expected longstr",
            )
        if raw not in XMatch._value2member_map_:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"Invalid x-match field value {raw!r}; "
                "expected all, any, all-with-x, or any-with-x",
            )

    def create_router(self) -> HeadersRouter:
        """Return an empty headers router."""
        return HeadersRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare only alternate-exchange must match, as in RabbitMQ."""
        assert_args_equivalence(resource, current, received)


def _type_name(value: Any) -> str:
    """Return the AMQP-ish name of a field value's type, for error texts."""
    names: dict[type, str] = {
        type(None): "void",
        bool: "bool",
        int: "signedint",
        float: "double",
        bytes: "binary",
        bytearray: "binary",
        decimal.Decimal: "decimal",
        datetime.datetime: "timestamp",
        dict: "table",
        list: "array",
    }
    return names.get(type(value), type(value).__name__)


def builtin_registry() -> ExchangeTypeRegistry:
    """Return a new registry holding direct, fanout, topic and headers."""
    registry = ExchangeTypeRegistry()
    for exchange_type in (
        DirectExchangeType(),
        FanoutExchangeType(),
        TopicExchangeType(),
        HeadersExchangeType(),
    ):
        registry.register(exchange_type)
    return registry
