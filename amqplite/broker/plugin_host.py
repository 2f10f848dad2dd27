"""The broker's side of the plugin API: a Scheduler over the timer wheel, plugin state, queue hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from amqplite.broker.durability import PluginStateStore
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import (
    Arguments,
    HeldMessage,
    QueueContext,
    QueueHooks,
    QueuePlugin,
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
