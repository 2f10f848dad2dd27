"""A test plugin using every hook of amqplite's plugin API, logging each call it gets.

Loaded by name as `tests.plugins.every_hook_plugin` (a dotted module path the loader imports;
`amqplite serve` runs from the repository root). Each hook appends one line to EVENTS and, when
the AMQPLITE_EVERY_HOOK_LOG environment variable names a file, to that file (for a broker
running as a subprocess). Exchange type `x-every-hook`: fanout; a message with an `x-hold-ms`
header is held, written to the durable state when persistent, and released by a scheduler timer.
Queues declared with `x-every-hook: true` get queue hooks: header `x-verdict` "drop" or "hold"
(released after `x-queue-hold-ms`), and after each ack the plugin enqueues a copy whose body is
"acked:" plus the acked body, so a client can see after_ack fire.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, ClassVar

from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeTypeRegistry,
    HeldMessage,
    QueueContext,
    ReplyCode,
    Router,
    Scheduled,
    Verdict,
    assert_args_equivalence,
)

LOG_ENV = "AMQPLITE_EVERY_HOOK_LOG"
EVENTS: list[str] = []


def log(event: str) -> None:
    """Note one hook call (in memory, and in the log file when one is named)."""
    EVENTS.append(event)
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(event + "\n")


def hold_ms(message: HeldMessage, header: str = "x-hold-ms") -> int:
    value = (message.headers or {}).get(header)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class EveryHookRouter:
    """Fanout that holds messages with x-hold-ms on the scheduler and in the durable state."""

    def __init__(self, context: ExchangeContext) -> None:
        self.context = context
        self.bound: dict[Destination, int] = {}
        self.timers: dict[str, Scheduled] = {}
        records = context.state.load()
        self.order = itertools.count(max((int(key) for key in records), default=-1) + 1)
        log(f"state.load {context.name} {len(records)}")
        now, wall = context.scheduler.now(), context.scheduler.wall_time()
        for key, record in sorted(records.items()):
            due = now + max(0.0, int(record["due"]) / 1000 - wall)
            self._arm(key, due, context.decode(record["message"]))

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        log(f"bind {destination.name}")
        self.bound[destination] = self.bound.get(destination, 0) + 1

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        log(f"unbind {destination.name}")
        left = self.bound.pop(destination) - 1
        if left:
            self.bound[destination] = left

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        log(f"route {routing_key}")
        return list(self.bound)

    def hold(self, message: HeldMessage) -> bool:
        delay = hold_ms(message)
        if delay <= 0:
            return False
        key = f"{next(self.order):08d}"
        scheduler, state = self.context.scheduler, self.context.state
        if message.persistent and state.durable:
            due_ms = round(scheduler.wall_time() * 1000) + delay
            state.put(key, {"due": due_ms, "message": self.context.encode(message)})
            log(f"state.put {key}")
        log(f"hold {message.routing_key}")
        self._arm(key, scheduler.now() + delay / 1000, message)
        return True

    def _arm(self, key: str, due: float, message: HeldMessage) -> None:
        def fire(now: float) -> None:
            self.timers.pop(key, None)
            self.context.state.delete(key)
            log(f"scheduler.fire {key}")
            self.context.release(message)

        self.timers[key] = self.context.scheduler.call_at(due, fire)

    def close(self) -> None:
        log(f"close exchange {self.context.name}")
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.context.state.clear()


class EveryHookExchangeType:
    """Exchange type x-every-hook."""

    name: ClassVar[str] = "x-every-hook"

    def validate(self, arguments: Arguments) -> None:
        log("validate")
        if arguments.get("x-refuse"):
            raise ChannelException(ReplyCode.PRECONDITION_FAILED, "x-refuse was set")

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        log(f"validate_binding {routing_key}")

    def create_router(self) -> Router:
        raise ChannelException(ReplyCode.PRECONDITION_FAILED, "needs create_router_in")

    def create_router_in(self, context: ExchangeContext) -> EveryHookRouter:
        log(f"create_router_in {context.name} durable={context.durable}")
        return EveryHookRouter(context)

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        log("assert_args_equivalence")
        assert_args_equivalence(resource, current, received, COMMON_EQUIVALENT_ARGUMENTS)


class EveryHookQueue:
    """Queue hooks: verdicts by header, held messages released on a timer, acks echoed."""

    def __init__(self, context: QueueContext) -> None:
        self.context = context
        self.timers: list[Scheduled] = []
        log(f"attach {context.name} messages={len(list(context.messages()))}")

    def before_enqueue(self, message: HeldMessage) -> Verdict:
        verdict = (message.headers or {}).get("x-verdict", "accept")
        log(f"before_enqueue {verdict}")
        if verdict == "drop":
            return Verdict.DROP
        if verdict == "hold":
            scheduler = self.context.scheduler
            due = scheduler.now() + hold_ms(message, "x-queue-hold-ms") / 1000

            def fire(now: float) -> None:
                log("queue release")
                self.context.release(message)

            self.timers.append(scheduler.call_at(due, fire))
            return Verdict.HOLD
        return Verdict.ACCEPT

    def refused(self, message: HeldMessage) -> None:
        log(f"refused {message.message_id}")

    def after_ack(self, message: HeldMessage) -> None:
        log(f"after_ack {message.message_id}")
        table: dict[str, Any] = self.context.encode(message)
        if not bytes(table["body"]).startswith(b"acked:"):
            table["body"] = bytearray(b"acked:" + bytes(table["body"]))
            self.context.release(self.context.decode(table))

    def close(self) -> None:
        log(f"close queue {self.context.name}")
        for timer in self.timers:
            timer.cancel()
        self.context.state.clear()


class EveryHookQueuePlugin:
    """Attaches EveryHookQueue to queues declared with x-every-hook: true."""

    name: ClassVar[str] = "every_hook"

    def attach(self, context: QueueContext) -> EveryHookQueue | None:
        if context.arguments.get("x-every-hook") is not True:
            return None
        return EveryHookQueue(context)


def register(registry: ExchangeTypeRegistry) -> None:
    """Add the exchange type and the queue plugin."""
    log("register")
    registry.register(EveryHookExchangeType())
    registry.register_queue_plugin(EveryHookQueuePlugin())
