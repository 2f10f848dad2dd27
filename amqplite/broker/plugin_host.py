"""The broker's side of the plugin API: a Scheduler over the timer wheel, and exchange contexts."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.broker.plugin_api import Scheduled
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
