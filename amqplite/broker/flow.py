"""Pacing: publishers wait for the queues they fill that are behind on deliverable work.

RabbitMQ's credit flow (reader -> channel -> queue) folded into one process. A queue is
*behind* while it holds ready messages that a consumer would take now but for its
connection's output room, on a connection whose output is moving (a peer that stopped
reading does not count: its consumers are as good as out of credit). A publisher that
routed to a queue that is behind reads no more until that queue catches up, so the one
event loop delivers first; a queue with nothing deliverable (no consumer, or all out of
prefetch credit) never holds a publisher back, and a backlog grows at full speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqplite.broker.queue import Queue
    from amqplite.broker.queue_host import HostedQueue


def _nothing() -> None:
    """Default progress notification: nobody waits."""


class FlowControl:
    """The broker's pacing state: queues publishers are waiting for, and their waker."""

    def __init__(self) -> None:
        self.behind = 0  # how many queues are behind now
        self.on_progress: Callable[[], None] = _nothing  # the server wakes waiting readers
        self._touched: dict[int, Queue] = {}  # queues behind that publishes reached

    def routed(self, queues: Iterable[Queue]) -> None:
        """A publish reached these queues: note the ones it must wait for."""
        if not self.behind:
            return
        for queue in queues:
            if queue.behind:
                self._touched[id(queue)] = queue

    def take_touched(self) -> list[Queue]:
        """The queues behind that publishes reached since the last call (one reader's batch)."""
        if not self._touched:
            return []
        touched = list(self._touched.values())
        self._touched.clear()
        return touched

    def set_behind(self, queue: HostedQueue, behind: bool) -> None:
        """A queue fell behind, or caught up (publishers waiting for it may read again)."""
        if queue.behind is behind:
            return
        queue.behind = behind
        if behind:
            self.behind += 1
        else:
            self.behind -= 1
            self.on_progress()


def still_behind(queues: Iterable[Queue]) -> bool:
    """True while one of the queues is behind (a publisher that reached them waits)."""
    return any(queue.behind and not queue.deleted for queue in queues)
