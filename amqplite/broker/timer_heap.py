"""The broker core's timers: targets called back at their deadlines (TTL, x-expires, timeouts)."""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Final

from amqplite.broker.queue import Queue
from amqplite.broker.queue_host import Timed

log = logging.getLogger("amqplite.broker")

TIMER_RETRY_S: Final = 1.0  # a failed timer callback runs again this much later (bounded log rate)


class TimerHeap:
    """Deadlines in a heap; a target's earlier deadline supersedes the later ones it had."""

    def __init__(self) -> None:
        self.on_change: Callable[[], None] = _no_wake  # the timer task's wake-up
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()

    def schedule(self, target: Timed, deadline: float) -> None:
        """Call target.on_timer at the deadline (kept if the target already has an earlier one)."""
        if target.timer_due is not None and target.timer_due <= deadline:
            return
        target.timer_due = deadline
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (deadline, next(self._seq), target))
        if earliest is None or deadline < earliest:
            self.on_change()

    def next_deadline(self) -> float | None:
        """When fire next has something to do (monotonic seconds), or None."""
        timers = self._heap
        while timers and timers[0][2].timer_due != timers[0][0]:
            heapq.heappop(timers)  # superseded by an earlier deadline of the same target
        return timers[0][0] if timers else None

    def fire(self, now: float) -> int:
        """Run every timer due at `now` once; how many ran."""
        timers = self._heap
        again: list[Timed] = []
        fired = 0
        while timers and timers[0][0] <= now:
            deadline, _, target = heapq.heappop(timers)
            if target.timer_due != deadline:
                continue
            target.timer_due = None
            fired += 1
            try:
                following = target.on_timer(now)
            except Exception:  # one failing callback must not stop this target's timer for good
                log.exception(
                    "timer of %s failed; retrying in %s s", describe(target), TIMER_RETRY_S
                )
                following = now + TIMER_RETRY_S
            if following is None:
                continue
            if following <= now:
                again.append(target)  # more work than one turn: continue on the next turn
            else:
                self.schedule(target, following)
        for target in again:
            self.schedule(target, now)
        return fired


def _no_wake() -> None:
    """Default timer wake-up: nothing to wake."""


def describe(target: Timed) -> str:
    """A short name for a timer target in a log line (a queue's repr holds all its state)."""
    if isinstance(target, Queue):
        return f"queue '{target.name}' in vhost '{target.vhost}'"
    return type(target).__name__
