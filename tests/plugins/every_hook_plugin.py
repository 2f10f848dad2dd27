"""A test plugin using every hook of amqplite's plugin API, logging each call it gets.

Loaded by name as `tests.plugins.every_hook_plugin` (a dotted module path the loader imports;
`amqplite serve` runs from the repository root). Each hook appends one line to EVENTS and, when
the AMQPLITE_EVERY_HOOK_LOG environment variable names a file, to that file (for a broker
running as a subprocess). USED collects "Protocol.member" for each hook the broker called and
each member of a broker object (context, scheduler, state, spool, message) the plugin read, so a
test can check that nothing in plugin_api.__all__ went unused.

Exchange type `x-every-hook-plain`: a fanout built by create_router(), routed by route().
Exchange type `x-every-hook`: built by create_router_in(context); it routes by route_message(),
which drops a message whose `type` property equals the exchange argument `x-drop-type`
(default "nowhere"). A message with an `x-hold-ms` header is held, written to the durable state
when persistent, and released by a scheduler timer; one with `x-spool-ms` is paged out to the
exchange's spool and listed, looked at and cancelled through the SchedulingRouter methods
(management API `/api/amqplite/scheduled`). Queues declared with `x-every-hook: true` get queue
hooks: header `x-verdict` "drop" or "hold" (released after `x-queue-hold-ms`), and after each ack
the plugin enqueues a copy whose body is "acked:" plus the acked body, so a client can see
after_ack fire.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, ClassVar, TypeVar, cast

from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeType,
    ExchangeTypeRegistry,
    HeldMessage,
    HoldingRouter,
    MessageSpool,
    PluginState,
    QueueContext,
    QueueHooks,
    QueuePlugin,
    ReplyCode,
    Router,
    Scheduled,
    ScheduledInfo,
    Scheduler,
    SchedulingRouter,
    Verdict,
    assert_args_equivalence,
    basic_property,
    format_argument,
    freeze,
)

LOG_ENV = "AMQPLITE_EVERY_HOOK_LOG"
EVENTS: list[str] = []
USED: set[str] = set()
T = TypeVar("T")


def log(event: str) -> None:
    """Note one hook call (in memory, and in the log file when one is named)."""
    EVENTS.append(event)
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(event + "\n")


def use(member: str) -> None:
    """Note that the broker called the hook `member` ("Router.bind")."""
    USED.add(member)


class Traced:
    """A view of a broker object that notes in USED each member the plugin reads."""

    __slots__ = ("_label", "_target")

    def __init__(self, target: object, label: str) -> None:
        self._target = target
        self._label = label

    def __getattr__(self, name: str) -> Any:
        USED.add(f"{self._label}.{name}")
        return getattr(self._target, name)


def traced(target: T, label: str) -> T:
    """`target` as a Traced view labelled with its plugin_api type ("MessageSpool")."""
    return cast(T, Traced(target, label))


def header_ms(message: HeldMessage, header: str) -> int:
    """A non-negative int header of the message (0 when absent or not an int)."""
    value = (message.headers or {}).get(header)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class FanoutRouter:
    """Every bound destination gets every message: bindings kept by their frozen identity."""

    def __init__(self) -> None:
        self.bindings: dict[tuple[Destination, str, Any], None] = {}

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        use("Router.bind")
        log(f"bind {destination.name}")
        self.bindings[(destination, routing_key, freeze(arguments))] = None

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        use("Router.unbind")
        log(f"unbind {destination.name}")
        del self.bindings[(destination, routing_key, freeze(arguments))]

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        use("Router.route")
        log(f"route {routing_key}")
        return list(dict.fromkeys(destination for destination, _, _ in self.bindings))


class EveryHookRouter(FanoutRouter):
    """route_message, and holding: x-hold-ms in the durable state, x-spool-ms in the spool."""

    def __init__(self, context: ExchangeContext) -> None:
        super().__init__()
        self.context = context
        self.scheduler: Scheduler = traced(context.scheduler, "Scheduler")
        self.state: PluginState = traced(context.state, "PluginState")
        self.spool: MessageSpool = traced(context.spool, "MessageSpool")
        self.drop_type = str(context.arguments.get("x-drop-type", "nowhere"))
        self.timers: dict[str, Scheduled] = {}
        self.spooled: dict[int, tuple[int, Scheduled]] = {}  # handle: (due POSIX ms, timer)
        records = self.state.load()
        self.order = itertools.count(max((int(key) for key in records), default=-1) + 1)
        log(f"state.load {context.name} {len(records)} durable={self.state.durable}")
        now, wall = self.scheduler.now(), self.scheduler.wall_time()
        for key, record in sorted(records.items()):
            due = now + max(0.0, int(record["due"]) / 1000 - wall)
            self._arm(key, due, context.decode(record["message"]))
        restored = self.spool.restored()
        log(f"spool.restored {context.name} {len(restored)}")
        for handle, due_ms in restored:
            self._arm_spooled(handle, due_ms)

    def route_message(self, message: HeldMessage) -> list[Destination]:
        """Like route(), but a message whose `type` property is x-drop-type goes nowhere."""
        use("Router.route_message")
        view = traced(message, "HeldMessage")
        kind = basic_property(view, "type")
        log(f"route_message {view.routing_key} {basic_property(view, 'message_id')} {kind}")
        if kind == self.drop_type:
            return []
        return self.route(view.routing_key, view.headers)

    def hold(self, message: HeldMessage) -> bool:
        use("HoldingRouter.hold")
        view = traced(message, "HeldMessage")
        if (delay := header_ms(view, "x-spool-ms")) > 0:
            due_ms = round(self.scheduler.wall_time() * 1000) + delay
            handle = self.spool.add(message, due_ms)
            log(f"spool.add {handle}")
            self._arm_spooled(handle, due_ms)
            return True
        delay = header_ms(view, "x-hold-ms")
        if delay <= 0:
            return False
        key = f"{next(self.order):08d}"
        if view.persistent and self.state.durable:
            due_ms = round(self.scheduler.wall_time() * 1000) + delay
            self.state.put(key, {"due": due_ms, "message": self.context.encode(message)})
            log(f"state.put {key}")
        log(f"hold {view.routing_key}")
        self._arm(key, self.scheduler.now() + delay / 1000, message)
        return True

    def _arm(self, key: str, due: float, message: HeldMessage) -> None:
        def fire(now: float) -> None:
            self.timers.pop(key, None)
            self.state.delete(key)
            log(f"scheduler.fire {key}")
            self.context.release(message)

        self.timers[key] = traced(self.scheduler.call_at(due, fire), "Scheduled")

    def _arm_spooled(self, handle: int, due_ms: int) -> None:
        due = self.scheduler.now() + max(0.0, due_ms / 1000 - self.scheduler.wall_time())

        def fire(now: float) -> None:
            del self.spooled[handle]
            log(f"spool.release {handle}")
            self.spool.release(handle)

        self.spooled[handle] = (due_ms, traced(self.scheduler.call_at(due, fire), "Scheduled"))

    def close(self) -> None:
        use("HoldingRouter.close")
        log(f"close exchange {self.context.name}")
        for timer in [*self.timers.values(), *(timer for _, timer in self.spooled.values())]:
            timer.cancel()
        self.timers.clear()
        self.spooled.clear()
        self.state.clear()
        self.spool.clear()

    # -- SchedulingRouter: the spooled messages, listed and cancelled ---------------------------

    def scheduled_count(self) -> int:
        use("SchedulingRouter.scheduled_count")
        return len(self.spooled)

    def next_due_ms(self) -> int | None:
        use("SchedulingRouter.next_due_ms")
        return min((due_ms for due_ms, _ in self.spooled.values()), default=None)

    def scheduled(self, limit: int) -> list[ScheduledInfo]:
        use("SchedulingRouter.scheduled")
        first = sorted((due_ms, handle) for handle, (due_ms, _) in self.spooled.items())[:limit]
        return [
            ScheduledInfo(handle, due_ms, self.spool.message(handle)) for due_ms, handle in first
        ]

    def scheduled_message(self, handle: int) -> ScheduledInfo | None:
        use("SchedulingRouter.scheduled_message")
        if handle not in self.spooled:
            return None
        return ScheduledInfo(handle, self.spooled[handle][0], self.spool.message(handle))

    def cancel(self, handle: int) -> bool:
        use("SchedulingRouter.cancel")
        if handle not in self.spooled:
            return False
        _, timer = self.spooled.pop(handle)
        timer.cancel()
        self.spool.cancel(handle)
        log(f"spool.cancel {handle}")
        return True


class PlainExchangeType:
    """Exchange type x-every-hook-plain: a fanout from create_router(), routed by route()."""

    type_name: ClassVar[str] = "x-every-hook-plain"

    @property
    def name(self) -> str:
        use("ExchangeType.name")
        return self.type_name

    def validate(self, arguments: Arguments) -> None:
        use("ExchangeType.validate")
        log("validate")
        if refuse := arguments.get("x-refuse"):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED, f"x-refuse was {format_argument(refuse)}"
            )

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        use("ExchangeType.validate_binding")
        log(f"validate_binding {routing_key}")

    def create_router(self) -> Router:
        use("ExchangeType.create_router")
        log("create_router")
        return FanoutRouter()

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        use("ExchangeType.assert_args_equivalence")
        log("assert_args_equivalence")
        keys = (*COMMON_EQUIVALENT_ARGUMENTS, "x-drop-type")
        assert_args_equivalence(resource, current, received, keys)


class EveryHookExchangeType(PlainExchangeType):
    """Exchange type x-every-hook: its router is created with the exchange's context."""

    type_name: ClassVar[str] = "x-every-hook"

    def create_router_in(self, context: ExchangeContext) -> SchedulingRouter:
        use("ExchangeType.create_router_in")
        context = traced(context, "ExchangeContext")
        registry = traced(context.registry, "ExchangeTypeRegistry")
        assert registry.get(self.type_name) is self
        log(f"create_router_in {context.vhost} {context.name} durable={context.durable}")
        return EveryHookRouter(context)


class EveryHookQueue:
    """Queue hooks: verdicts by header, held messages released on a timer, acks echoed."""

    def __init__(self, context: QueueContext) -> None:
        self.context = context
        self.scheduler: Scheduler = traced(context.scheduler, "Scheduler")
        self.timers: list[Scheduled] = []
        count = len(list(context.messages()))
        log(f"attach {context.vhost} {context.name} durable={context.durable} messages={count}")

    def before_enqueue(self, message: HeldMessage) -> Verdict:
        use("QueueHooks.before_enqueue")
        verdict = (message.headers or {}).get("x-verdict", "accept")
        log(f"before_enqueue {verdict}")
        if verdict == "drop":
            return Verdict.DROP
        if verdict == "hold":
            due = self.scheduler.now() + header_ms(message, "x-queue-hold-ms") / 1000

            def fire(now: float) -> None:
                log("queue release")
                self.context.release(message)

            self.timers.append(traced(self.scheduler.call_at(due, fire), "Scheduled"))
            return Verdict.HOLD
        return Verdict.ACCEPT

    def refused(self, message: HeldMessage) -> None:
        use("QueueHooks.refused")
        log(f"refused {traced(message, 'HeldMessage').message_id}")

    def after_ack(self, message: HeldMessage) -> None:
        use("QueueHooks.after_ack")
        log(f"after_ack {message.message_id}")
        table: dict[str, Any] = self.context.encode(message)
        if not bytes(table["body"]).startswith(b"acked:"):
            table["body"] = bytearray(b"acked:" + bytes(table["body"]))
            self.context.release(self.context.decode(table))

    def close(self) -> None:
        use("QueueHooks.close")
        log(f"close queue {self.context.name}")
        for timer in self.timers:
            timer.cancel()
        traced(self.context.state, "PluginState").clear()


class EveryHookQueuePlugin:
    """Attaches EveryHookQueue to queues declared with x-every-hook: true."""

    @property
    def name(self) -> str:
        use("QueuePlugin.name")
        return "every_hook"

    def attach(self, context: QueueContext) -> QueueHooks | None:
        use("QueuePlugin.attach")
        context = traced(context, "QueueContext")
        if context.arguments.get("x-every-hook") is not True:
            return None
        return EveryHookQueue(context)


ROUTERS: tuple[type[Router], type[HoldingRouter], type[SchedulingRouter]] = (
    FanoutRouter,
    EveryHookRouter,
    EveryHookRouter,
)
"""The router classes as the protocols they implement (mypy strict checks each)."""


def register(registry: ExchangeTypeRegistry) -> None:
    """Add the two exchange types and the queue plugin."""
    log("register")
    registry = traced(registry, "ExchangeTypeRegistry")
    types: list[ExchangeType] = [PlainExchangeType(), EveryHookExchangeType()]
    for exchange_type in types:
        registry.register(exchange_type)
    plugin: QueuePlugin = EveryHookQueuePlugin()
    registry.register_queue_plugin(plugin)
    assert {"x-every-hook", "x-every-hook-plain"} <= set(registry.names())
    assert plugin in registry.queue_plugins()
