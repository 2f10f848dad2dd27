"""The broker's side of the plugin API: a Scheduler over the timer wheel, and exchange contexts."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.broker.durability import PluginStateStore
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Arguments, HeldMessage, Scheduled
from amqplite.broker.publishing import make_message
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
