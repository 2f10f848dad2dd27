"""Bundled plugin: the "x-delayed-message" exchange type, holding messages back by `x-delay` ms.

An exchange of this type routes as its `x-delayed-type` argument says (direct, topic, ...), but a
message with a positive integer `x-delay` header (milliseconds) is held and routed only when its
time comes, through the bindings the exchange has then. Messages due at the same time are routed
in the order they were published. A persistent message held by a durable exchange is written to
the plugin state (on disk before its confirm) with its due time as POSIX milliseconds, so it
comes back at boot and is routed on time (at once, if its time passed while the broker was down).
"""

from __future__ import annotations

import heapq
import itertools
from typing import ClassVar

from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeTypeRegistry,
    HeldMessage,
    ReplyCode,
    Router,
    Scheduled,
    Scheduler,
    assert_args_equivalence,
)

__all__ = ["DelayedMessageExchangeType", "DelayedRouter", "delay_of", "register"]

TYPE_ARGUMENT = "x-delayed-type"
DELAY_HEADER = "x-delay"


def delay_of(headers: Arguments | None) -> int:
    """The message's delay in ms from its `x-delay` header (0 when absent or not a number)."""
    value = (headers or {}).get(DELAY_HEADER)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


class DelayedRouter:
    """Routes like its inner router; holds delayed messages in a heap with one timer for the first."""

    def __init__(self, inner: Router, context: ExchangeContext) -> None:
        self.inner = inner
        self.scheduler: Scheduler = context.scheduler
        self.release = context.release
        self.state = context.state
        self.encode = context.encode
        # (due, publish order, state key or "" if not on disk, message)
        self.held: list[tuple[float, int, str, HeldMessage]] = []
        self._timer: Scheduled | None = None
        self._timer_due: float | None = None
        self._order = itertools.count(self._restore(context))
        self._arm()

    def _restore(self, context: ExchangeContext) -> int:
        """Hold again the messages the state kept; the next publish order number."""
        records = self.state.load()
        now, wall = self.scheduler.now(), self.scheduler.wall_time()
        for key, record in records.items():
            due = now + (int(record["due"]) / 1000 - wall)
            self.held.append((due, int(key), key, context.decode(record["message"])))
        heapq.heapify(self.held)
        return max((int(key) for key in records), default=-1) + 1

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """A binding of the inner type."""
        self.inner.bind(destination, routing_key, arguments)

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove a binding of the inner type."""
        self.inner.unbind(destination, routing_key, arguments)

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """Where the inner type routes (for released and undelayed messages)."""
        return list(self.inner.route(routing_key, headers))

    def hold(self, message: HeldMessage) -> bool:
        """Keep a message with a positive x-delay until its time; others route now."""
        delay = delay_of(message.headers)
        if delay <= 0:
            return False
        due = self.scheduler.now() + delay / 1000
        order = next(self._order)
        key = ""
        if message.persistent and self.state.durable:
            key = str(order)
            due_ms = round(self.scheduler.wall_time() * 1000) + delay
            self.state.put(key, {"due": due_ms, "message": self.encode(message)})
        heapq.heappush(self.held, (due, order, key, message))
        self._arm()
        return True

    @property
    def next_due(self) -> float | None:
        """When the first held message is due (monotonic seconds), or None."""
        return self.held[0][0] if self.held else None

    def close(self) -> None:
        """The exchange was deleted: drop the held messages and the timer."""
        self.held.clear()
        self.state.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_due = None

    def _arm(self) -> None:
        """Keep one timer, at the first due time."""
        due = self.next_due
        if due is None or due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.scheduler.call_at(due, self._fire)

    def _fire(self, now: float) -> None:
        """Release every message due by now, earliest first."""
        self._timer = self._timer_due = None
        while self.held and self.held[0][0] <= now:
            _, _, key, message = heapq.heappop(self.held)
            if key:
                self.state.delete(key)
            self.release(message)
        self._arm()


class DelayedMessageExchangeType:
    """Exchange type "x-delayed-message": the routing of `x-delayed-type`, after `x-delay` ms."""

    name: ClassVar[str] = "x-delayed-message"

    def validate(self, arguments: Arguments) -> None:
        """Require x-delayed-type to name another exchange type (406 otherwise)."""
        inner = arguments.get(TYPE_ARGUMENT)
        if not isinstance(inner, str) or not inner or inner == self.name:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"Invalid argument, '{TYPE_ARGUMENT}' must be an existing exchange type",
            )

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Any binding: the inner type's router decides what it means."""

    def create_router(self) -> Router:
        """Not used: the broker calls create_router_in, which knows the exchange's arguments."""
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED, f"exchange type {self.name!r} needs its arguments"
        )

    def create_router_in(self, context: ExchangeContext) -> DelayedRouter:
        """A router holding delayed messages, routing through a router of the inner type."""
        inner_name = str(context.arguments.get(TYPE_ARGUMENT))
        inner = context.registry.get(inner_name)
        if inner is None or inner.name == self.name:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"Invalid argument, '{TYPE_ARGUMENT}' must be an existing exchange type "
                f"(got {inner_name!r})",
            )
        return DelayedRouter(inner.create_router(), context)

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare x-delayed-type must match (and alternate-exchange)."""
        assert_args_equivalence(
            resource, current, received, (*COMMON_EQUIVALENT_ARGUMENTS, TYPE_ARGUMENT)
        )


def register(registry: ExchangeTypeRegistry) -> None:
    """Add this plugin's exchange type to `registry`."""
    registry.register(DelayedMessageExchangeType())
