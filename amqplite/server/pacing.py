"""The trio side of pacing: publishing readers wait here until a queue they fill catches up."""

from __future__ import annotations

import trio

from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.flow import FlowControl, recheck, still_behind
from amqplite.broker.queue import Queue
from amqplite.session.connection import Session

STALL_AFTER = 1.0
"""Seconds a connection's output may stay unwritten, or a consuming channel may make no ack,
before it counts as stalled (its consumers stop holding publishers back)."""

SWEEP_EVERY = STALL_AFTER / 2
"""Seconds between two looks at which channels still ack, while a publisher waits."""


class Pacer:
    """Wakes the readers held for queues behind on delivery whenever one catches up."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow
        self._progress = trio.Event()
        self._next_sweep = 0.0  # trio time of the next sweep (the first wait sweeps at once)
        flow.on_progress = self._notify

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

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
                # a backstop only: a queue catches up, or its consumers stop acking or reading
                with trio.move_on_after(SWEEP_EVERY):
                    await self._progress.wait()
                self._sweep_if_due()
        finally:
            for channel in held:
                channel.reading = True

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
