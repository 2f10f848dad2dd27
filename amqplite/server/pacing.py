"""The trio side of pacing: publishing readers wait here until a queue they fill catches up."""

from __future__ import annotations

import logging

import trio

try:  # trio.testing's wait_all_tasks_blocked, without the import of pytest that trio.testing makes
    from trio._core._generated_run import wait_all_tasks_blocked
except ImportError:  # pragma: no cover - another trio layout: the public name (heavier import)
    from trio.testing import wait_all_tasks_blocked

from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.flow import FlowControl, recheck, still_behind
from amqplite.broker.queue import Queue
from amqplite.session.connection import Session

log = logging.getLogger("amqplite.server")

STALL_AFTER = 1.0
"""Seconds a connection's output may stay unwritten, or a consuming channel may make no ack,
before it counts as stalled (its consumers stop holding publishers back)."""

SWEEP_EVERY = STALL_AFTER / 2
"""Seconds between two looks at which channels still ack, while a publisher waits."""

IDLE_AFTER = 0.005
"""Seconds the event loop may stay idle (no task runnable, no I/O) before a held publisher is let
go: credit that does not come back within this while the broker has nothing else to do is not
worth waiting for (a slow consumer; a backlog is then a normal state)."""


class Pacer:
    """Wakes the readers held for queues behind on delivery whenever one catches up.

    A held reader parks (no cancel scope, no timer of its own: a hold and its release cost
    one reschedule); one watcher task, while anyone is parked, lets them all go once the
    event loop idles and sweeps for stalled consumers every SWEEP_EVERY.
    """

    def __init__(self, flow: FlowControl, idle_after: float | None = IDLE_AFTER) -> None:
        self.flow = flow
        self.idle_after = idle_after  # None: hold until caught up or stalled, idle or not
        self._parked: dict[trio.lowlevel.Task, None] = {}  # held readers, woken all at once
        self._idled = 0  # how many times the watcher let the parked readers go for good
        self._watching = False  # the watcher task runs
        self._next_sweep = 0.0  # trio time of the next sweep (the first one comes at once)
        flow.on_progress = self._notify

    def _notify(self) -> None:
        if self._parked:
            self._wake_all()

    def _wake_all(self) -> None:
        parked, self._parked = self._parked, {}
        for task in parked:
            trio.lowlevel.reschedule(task)

    async def wait_for(self, queues: list[Queue], session: Session | None = None) -> None:
        """Return once none of `queues` is behind (each catches up, or its consumers stall).

        While it waits, `session`'s connection is not read: its own consumers' acks do not
        come, so they hold nobody back (a client that publishes to the queue it consumes from
        is never held for itself).
        """
        held = _consuming_channels(session)
        for channel in held:
            channel.reading = False
        try:
            if held:
                recheck(queues)
                for channel in held:
                    recheck(channel.queues_with_consumers())
            while still_behind(queues):
                # woken when a queue catches up, after a sweep, or (let go) on an idle loop
                idled = self._idled
                await self._park()
                if self._idled != idled:
                    return
        finally:
            for channel in held:
                channel.reading = True

    async def _park(self) -> None:
        task = trio.lowlevel.current_task()
        parked = self._parked
        parked[task] = None
        if not self._watching:
            self._watching = True
            trio.lowlevel.spawn_system_task(self._watch)

        def abort(_: object) -> trio.lowlevel.Abort:
            parked.pop(task, None)  # cancelled (its connection ends): nobody wakes it now
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _watch(self) -> None:
        """While readers are parked: let them go on an idle loop; sweep every SWEEP_EVERY."""
        try:
            while self._parked:
                with trio.move_on_after(SWEEP_EVERY):
                    if self.idle_after is None:
                        await trio.sleep_forever()
                    await wait_all_tasks_blocked(self.idle_after)
                    if self._parked:
                        self._idled += 1
                        self._wake_all()
                    continue
                try:
                    self._sweep_if_due()
                except Exception:  # a system task: an error here would end the whole server
                    log.exception("pacing sweep failed")
                self._wake_all()  # to look again at the queues they wait for
        finally:
            self._watching = False

    def _sweep_if_due(self) -> None:
        now = trio.current_time()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self.flow.sweep()


def _consuming_channels(session: Session | None) -> list[DeliveryChannel]:
    """The channels of a connection that have consumers (whose acks it reads)."""
    if session is None:
        return []
    return [c.delivery for c in session.channels.values() if c.delivery.consumers]
