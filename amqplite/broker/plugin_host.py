"""The broker's side of the plugin API: exchange routers' context, scheduler, plugin state, queue hooks."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from amqplite.broker.durability import HeldSpool, PluginStateStore
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import (
    Arguments,
    ExchangeContext,
    ExchangeType,
    ExchangeTypeRegistry,
    HeldMessage,
    QueueContext,
    QueueHooks,
    QueuePlugin,
    Router,
    Scheduled,
    Verdict,
)
from amqplite.broker.publishing import make_message
from amqplite.broker.queue import Queue
from amqplite.broker.queue_host import QueueHost


class TimerCall:
    """One call_at: a target of the broker's timer wheel that runs its callback once."""

    __slots__ = ("callback", "cancelled", "timer_due")

    def __init__(self, callback: Callable[[float], None]) -> None:
        self.callback = callback
        self.cancelled = False
        self.timer_due: float | None = None

    def on_timer(self, now: float) -> float | None:
        """Run the callback unless cancelled; never again."""
        if not self.cancelled:
            self.cancelled = True
            self.callback(now)
        return None

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class HostScheduler:
    """plugin_api.Scheduler over a host's clocks and timers (the host is looked up at each call)."""

    __slots__ = ("_host_of",)

    def __init__(self, host_of: Callable[[], QueueHost]) -> None:
        self._host_of = host_of

    def now(self) -> float:
        """Monotonic seconds from the broker's clock."""
        return self._host_of().now()

    def wall_time(self) -> float:
        """POSIX seconds from the broker's wall clock."""
        return self._host_of().wall_time()

    def call_at(self, deadline: float, callback: Callable[[float], None]) -> Scheduled:
        """Schedule callback(now) on the broker's timer wheel."""
        call = TimerCall(callback)
        self._host_of().schedule(call, deadline)
        return call


class ExchangeState:
    """plugin_api.PluginState of one exchange over the vhost's store (looked up at each call)."""

    __slots__ = ("_store_of", "durable_exchange", "scope", "vhost")

    def __init__(
        self,
        vhost: str,
        exchange: str,
        durable_exchange: bool,
        store_of: Callable[[], PluginStateStore | None],
    ) -> None:
        self.vhost = vhost
        self.scope = f"exchange:{exchange}"
        self.durable_exchange = durable_exchange
        self._store_of = store_of

    def _store(self) -> PluginStateStore | None:
        return self._store_of() if self.durable_exchange else None

    @property
    def durable(self) -> bool:
        """True for a durable exchange of a broker with a store."""
        return self._store() is not None

    def load(self) -> dict[str, Arguments]:
        """The records as last written."""
        store = self._store()
        return {} if store is None else store.plugin_state(self.scope, self.vhost)

    def put(self, key: str, value: Arguments) -> None:
        """Write one record through the metadata log."""
        store = self._store()
        if store is not None:
            store.plugin_state_put(self.scope, self.vhost, key, value)

    def delete(self, key: str) -> None:
        """Forget one record."""
        store = self._store()
        if store is not None:
            store.plugin_state_delete(self.scope, self.vhost, key)

    def clear(self) -> None:
        """Forget every record of this exchange."""
        store = self._store()
        if store is not None:
            store.plugin_state_clear(self.scope, self.vhost)


class QueueState(ExchangeState):
    """plugin_api.PluginState of one plugin on one queue (durable: a durable, shared queue)."""

    __slots__ = ()

    def __init__(
        self,
        vhost: str,
        queue: str,
        plugin: str,
        durable_queue: bool,
        store_of: Callable[[], PluginStateStore | None],
    ) -> None:
        super().__init__(vhost, queue, durable_queue, store_of)
        self.scope = f"queue:{plugin}:{queue}"


class CombinedHooks:
    """The hooks of several plugins on one queue, asked in registration order."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: list[QueueHooks]) -> None:
        self.hooks = hooks

    def before_enqueue(self, message: HeldMessage) -> Verdict:
        """The first verdict that is not ACCEPT; those asked before it hear refused()."""
        for i, hooks in enumerate(self.hooks):
            verdict = hooks.before_enqueue(message)
            if verdict is not Verdict.ACCEPT:
                for earlier in self.hooks[:i]:
                    earlier.refused(message)
                return verdict
        return Verdict.ACCEPT

    def refused(self, message: HeldMessage) -> None:
        """Tell every plugin."""
        for hooks in self.hooks:
            hooks.refused(message)

    def after_ack(self, message: HeldMessage) -> None:
        """Tell every plugin."""
        for hooks in self.hooks:
            hooks.after_ack(message)

    def close(self) -> None:
        """Close every plugin's hooks."""
        for hooks in self.hooks:
            hooks.close()


def exchange_router(
    exchange_type: ExchangeType,
    vhost: str,
    name: str,
    durable: bool,
    arguments: Arguments,
    registry: ExchangeTypeRegistry,
    host_of: Callable[[], QueueHost],
    state_of: Callable[[], PluginStateStore | None],
    release: Callable[[HeldMessage], None],
) -> Router:
    """The type's router; one with create_router_in gets the exchange and the scheduler."""
    create_in = getattr(exchange_type, "create_router_in", None)
    if create_in is None:
        return exchange_type.create_router()
    context = ExchangeContext(
        vhost,
        name,
        durable,
        dict(arguments),
        HostScheduler(host_of),
        registry,
        release,
        ExchangeState(vhost, name, durable, state_of),
        encode_message,
        decode_message,
        HostSpool(vhost, name, durable, state_of, release),
    )
    router: Router = create_in(context)
    return router


def attach_queue_hooks(
    plugins: list[QueuePlugin], context_for: Callable[[QueuePlugin], QueueContext]
) -> QueueHooks | None:
    """The hooks the plugins attach to one new queue (None: none); closes them if one raises."""
    attached: list[QueueHooks] = []
    try:
        for plugin in plugins:
            hooks = plugin.attach(context_for(plugin))
            if hooks is not None:
                attached.append(hooks)
    except BaseException:
        for hooks in attached:
            hooks.close()
        raise
    if not attached:
        return None
    return attached[0] if len(attached) == 1 else CombinedHooks(attached)


def queue_hooks(
    vhost: str,
    queue: Queue,
    plugins: list[QueuePlugin],
    host_of: Callable[[], QueueHost],
    store_of: Callable[[], PluginStateStore | None],
) -> QueueHooks | None:
    """What the queue plugins attach to a new queue, each with its own context and state."""
    durable = queue.durable and not queue.exclusive
    scheduler = HostScheduler(host_of)

    def release(message: HeldMessage) -> None:
        enqueue_released(queue, message)

    def messages() -> Iterable[HeldMessage]:
        return [entry.message for entry in queue.ready]

    def context_for(plugin: QueuePlugin) -> QueueContext:
        return QueueContext(
            vhost,
            queue.name,
            durable,
            dict(queue.arguments),
            scheduler,
            QueueState(vhost, queue.name, plugin.name, durable, store_of),
            release,
            encode_message,
            decode_message,
            messages,
        )

    return attach_queue_hooks(plugins, context_for)


def enqueue_released(queue: Queue, message: HeldMessage) -> None:
    """Enqueue a message a queue plugin held back (dropped if the queue is gone or refuses it)."""
    if queue.deleted or not isinstance(message, Message):
        return
    queue.enqueue(message)
    if queue.consumers:
        queue.dispatch()
    queue.expire_if_due_now()


def encode_message(message: HeldMessage) -> Arguments:
    """A message as a field table (bytearray keeps raw bytes raw through the codec)."""
    assert isinstance(message, Message)
    return {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "properties": bytearray(message.properties_bin),
        "body": bytearray(message.body),
    }


def decode_message(table: Arguments) -> HeldMessage:
    """The message encode_message() described."""
    return make_message(
        str(table["exchange"]),
        str(table["routing_key"]),
        bytes(table["properties"]),
        bytes(table["body"]),
    )


_SIZES = struct.Struct(">HHI")  # lengths of exchange, routing key, properties; the body follows


def pack_message(message: HeldMessage) -> bytes:
    """A held message as bytes for the spool."""
    assert isinstance(message, Message)
    exchange, key = message.exchange.encode(), message.routing_key.encode()
    props = message.properties_bin
    sizes = _SIZES.pack(len(exchange), len(key), len(props))
    return b"".join((sizes, exchange, key, props, message.body))


def unpack_message(data: bytes) -> Message:
    """The message pack_message() wrote."""
    exchange_len, key_len, props_len = _SIZES.unpack_from(data)
    at = _SIZES.size
    exchange = data[at : at + exchange_len].decode()
    at += exchange_len
    key = data[at : at + key_len].decode()
    at += key_len
    props = data[at : at + props_len]
    return make_message(exchange, key, props, data[at + props_len :])


class HostSpool:
    """plugin_api.MessageSpool over the store's spool of one exchange (in memory without a store)."""

    __slots__ = (
        "_backend",
        "_memory",
        "_next",
        "_route",
        "_store_of",
        "durable",
        "exchange",
        "vhost",
    )

    def __init__(
        self,
        vhost: str,
        exchange: str,
        durable: bool,
        store_of: Callable[[], PluginStateStore | None],
        route: Callable[[HeldMessage], None],
    ) -> None:
        self.vhost = vhost
        self.exchange = exchange
        self.durable = durable
        self._store_of = store_of
        self._route = route
        self._backend: HeldSpool | None = None
        self._memory: dict[int, HeldMessage] = {}
        self._next = 0

    def _spool(self) -> HeldSpool | None:
        if self._backend is None:
            store = self._store_of()
            if store is not None:
                self._backend = store.held_spool(self.vhost, self.exchange, self.durable)
        return self._backend

    def add(self, message: HeldMessage, due_ms: int) -> int:
        """Page the message out (on disk before its confirm if persistent and durable)."""
        spool = self._spool()
        if spool is None:
            self._next += 1
            self._memory[self._next] = message
            return self._next
        return spool.append(due_ms, pack_message(message), message.persistent)

    def message(self, handle: int) -> HeldMessage:
        """The message, read back."""
        spool = self._spool()
        if spool is None:
            return self._memory[handle]
        return unpack_message(spool.read(handle)[1])

    def release(self, handle: int) -> None:
        """Route it now; the spool forgets it once the enqueues are on disk."""
        spool = self._spool()
        if spool is None:
            self._route(self._memory.pop(handle))
            return
        message = unpack_message(spool.read(handle)[1])
        spool.release(handle, lambda: self._route(message))

    def cancel(self, handle: int) -> None:
        """Forget it."""
        spool = self._spool()
        if spool is None:
            self._memory.pop(handle, None)
        else:
            spool.cancel(handle)

    def restored(self) -> list[tuple[int, int]]:
        """What the spool kept from before a restart."""
        spool = self._spool()
        return [] if spool is None else list(spool.restored)

    def clear(self) -> None:
        """Forget everything."""
        self._memory.clear()
        store = self._store_of()
        spool = self._spool()
        if store is not None and spool is not None:
            store.drop_held_spool(spool)
            self._backend = None
