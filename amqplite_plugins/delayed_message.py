"""Bundled plugin: the "x-delayed-message" exchange type, holding messages back by `x-delay` ms.

An exchange of this type routes as its `x-delayed-type` argument says (direct, topic, ...), but a
message with a positive integer `x-delay` header (milliseconds) is held and routed only when its
time comes, through the bindings the exchange has then. Messages due at the same time are routed
in the order they were published. Held messages are paged out to the broker's spool (one
append-only file set per exchange): memory keeps a (due, handle) pair per message, not its body.
A persistent message held by a durable exchange is on disk before its confirm with its due time
as POSIX milliseconds, so it comes back at boot and is routed on time (at once, if its time
passed while the broker was down). Its record is forgotten only once the queues it was routed to
have it on disk, so a crash around the release can route it twice, never lose it. The held
messages can be counted, looked at and cancelled (management API, `amqplite ctl`).
"""

from __future__ import annotations

import heapq
from typing import ClassVar

from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeTypeRegistry,
    HeldMessage,
    MessageSpool,
    ReplyCode,
    Router,
    Scheduled,
    ScheduledInfo,
    Scheduler,
    assert_args_equivalence,
)

__all__ = ["DelayedMessageExchangeType", "DelayedRouter", "delay_of", "register"]

TYPE_ARGUMENT = "x-delayed-type"
DELAY_HEADER = "x-delay"
RELEASE_BATCH = 1000  # messages released per timer turn: a million due at once never stalls
NEXT_TURN_S = 0.0005  # the next batch's deadline: past this turn of the broker's timers


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
        self.spool: MessageSpool = context.spool
        # (due monotonic seconds, spool handle): handles sort in publish order
        self.held: list[tuple[float, int]] = []
        self._timer: Scheduled | None = None
        self._timer_due: float | None = None
        self._restore(context)
        self._arm()

    def _restore(self, context: ExchangeContext) -> None:
        """Hold again the messages the spool kept (and those of the older plugin-state records)."""
        now, wall = self.scheduler.now(), self.scheduler.wall_time()
        for handle, due_ms in self.spool.restored():
            self.held.append((now + (due_ms / 1000 - wall), handle))
        legacy = context.state.load()  # written by the first version of this plugin
        for _key, record in sorted(legacy.items(), key=lambda item: int(item[0])):
            due_ms = int(record["due"])
            handle = self.spool.add(context.decode(record["message"]), due_ms)
            self.held.append((now + (due_ms / 1000 - wall), handle))
        if legacy:
            context.state.clear()
        heapq.heapify(self.held)

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
        due_ms = round(self.scheduler.wall_time() * 1000) + delay
        handle = self.spool.add(message, due_ms)
        heapq.heappush(self.held, (due, handle))
        self._arm()
        return True

    @property
    def next_due(self) -> float | None:
        """When the first held message is due (monotonic seconds), or None."""
        return self.held[0][0] if self.held else None

    def close(self) -> None:
        """The exchange was deleted: drop the held messages and the timer."""
        self.held.clear()
        self.spool.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_due = None

    # -- listing and cancelling (plugin_api.SchedulingRouter) --------------------------------

    def _due_ms(self, due: float) -> int:
        return round((self.scheduler.wall_time() + due - self.scheduler.now()) * 1000)

    def scheduled_count(self) -> int:
        """How many messages are held."""
        return len(self.held)

    def next_due_ms(self) -> int | None:
        """When the first held message is due (POSIX ms), or None."""
        return None if not self.held else self._due_ms(self.held[0][0])

    def scheduled(self, limit: int) -> list[ScheduledInfo]:
        """The first `limit` held messages, earliest first."""
        return [
            ScheduledInfo(handle, self._due_ms(due), self.spool.message(handle))
            for due, handle in heapq.nsmallest(limit, self.held)
        ]

    def scheduled_message(self, handle: int) -> ScheduledInfo | None:
        """One held message (a scan: the heap is not indexed, to keep memory per message low)."""
        for due, known in self.held:
            if known == handle:
                return ScheduledInfo(handle, self._due_ms(due), self.spool.message(handle))
        return None

    def cancel(self, handle: int) -> bool:
        """Drop one held message; False if none has that handle."""
        for index, (_, known) in enumerate(self.held):
            if known == handle:
                last = self.held.pop()
                if index < len(self.held):
                    self.held[index] = last
                    heapq.heapify(self.held)
                self.spool.cancel(handle)
                self._arm()
                return True
        return False

    def _arm(self) -> None:
        """Keep one timer, at the first due time."""
        due = self.next_due
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_due = None
        if due is not None:
            self._timer_due = due
            self._timer = self.scheduler.call_at(due, self._fire)

    def _fire(self, now: float) -> None:
        """Release the messages due by now, earliest first, RELEASE_BATCH per timer turn."""
        self._timer = self._timer_due = None
        held = self.held
        for _ in range(RELEASE_BATCH):
            if not held or held[0][0] > now:
                break
            _, handle = heapq.heappop(held)
            self.spool.release(handle)
        if held and held[0][0] <= now:  # more are due: after the connections had a turn
            self._timer_due = now + NEXT_TURN_S
            self._timer = self.scheduler.call_at(self._timer_due, self._fire)
            return
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
