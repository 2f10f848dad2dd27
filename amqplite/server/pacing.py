"""The trio side of pacing: publishing readers wait here until a queue they fill catches up."""

from __future__ import annotations

import trio

from amqplite.broker.flow import FlowControl, still_behind
from amqplite.broker.queue import Queue

STALL_AFTER = 1.0
"""Seconds a connection's output may stay unwritten before its peer counts as not reading."""


class Pacer:
    """Wakes the readers held for queues behind on delivery whenever one catches up."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow
        self._progress = trio.Event()
        flow.on_progress = self._notify

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def wait_for(self, queues: list[Queue]) -> None:
        """Return once none of `queues` is behind (each catches up, or its consumers stall)."""
        while still_behind(queues):
            # a backstop only: a queue catches up, or the server finds its consumer stalled
            with trio.move_on_after(STALL_AFTER):
                await self._progress.wait()
