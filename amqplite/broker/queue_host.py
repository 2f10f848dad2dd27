"""What a queue needs from its broker (clocks, timers, dead-lettering, policies), and a stand-in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from amqplite.broker.message import QueueEntry

if TYPE_CHECKING:
    from amqplite.broker.entry_reports import TransientSpill
    from amqplite.broker.queue_settings import QueueSettings


class Timed(Protocol):
    """Something the broker's timer wheel calls back at a deadline (queues, channels)."""

    timer_due: float | None

    def on_timer(self, now: float) -> float | None:
        """Do what is due at `now`; the next deadline (or None)."""


class HostedQueue(Protocol):
    """What a host reads and sets of a queue it serves (broker.queue.Queue)."""

    name: str
    vhost: str
    settings: QueueSettings
    behind: bool  # ready messages a consumer takes soon (flow.py)


class QueueHost(Protocol):
    """What a queue needs from its broker: clocks, timers, dead-lettering, policies."""

    spill: TransientSpill[Any] | None  # pages transient bodies out beyond the memory threshold

    def now(self) -> float:
        """Monotonic seconds."""

    @property
    def clock(self) -> Callable[[], float]:
        """What now() reads: called directly on the delivery path (a call fewer per message)."""

    def wall_time(self) -> float:
        """POSIX seconds (for x-death timestamps)."""

    def schedule(self, target: Timed, deadline: float) -> None:
        """Call target.on_timer at (or soon after) the monotonic deadline."""

    def dead_letter(self, queue: HostedQueue, entry: QueueEntry, reason: str) -> bool:
        """Republish a message that left `queue` through its dead-letter exchange; True if sent."""

    def policy_for(self, queue: HostedQueue) -> Mapping[str, Any] | None:
        """The definition of the policy that applies to the queue, if any."""

    def consumer_timeout_ms(self) -> int | None:
        """The broker-wide consumer acknowledgement timeout (None or 0: none)."""

    def set_behind(self, queue: HostedQueue, behind: bool) -> None:
        """The queue fell behind on deliverable work, or caught up (pacing, flow.py)."""


class DetachedHost:
    """A host for queues outside a broker (plain VHost in tests): frozen clock, no timers."""

    spill: TransientSpill[Any] | None = None

    def now(self) -> float:
        """Always 0."""
        return 0.0

    clock = now

    def wall_time(self) -> float:
        """Always 0."""
        return 0.0

    def schedule(self, target: Timed, deadline: float) -> None:
        """No timers: nothing is ever called back."""

    def dead_letter(self, queue: HostedQueue, entry: QueueEntry, reason: str) -> bool:
        """No routing: dead letters are dropped."""
        return False

    def policy_for(self, queue: HostedQueue) -> Mapping[str, Any] | None:
        """No policies."""
        return None

    def consumer_timeout_ms(self) -> int | None:
        """No default timeout."""
        return None

    def set_behind(self, queue: HostedQueue, behind: bool) -> None:
        """No publishers to pace: only the flag."""
        queue.behind = behind


DETACHED: Final = DetachedHost()
