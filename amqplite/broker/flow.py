"""Pacing: publishers wait for the queues they fill that are behind on deliverable work.

RabbitMQ's credit flow (reader -> channel -> queue) folded into one process. There, a queue
grants a publisher more credit only as it works through its mailbox, which holds the acks of
busy consumers as well as publishes: a queue whose consumers ack keeps its publishers to the
rate it delivers, one with no consumers (or idle ones) takes publishes at full speed.

Here a queue is *behind* while it holds ready messages that a consumer will take soon: one
that would take now but for its connection's output room, or one out of prefetch credit whose
credit is returning (its channel acked lately, on a connection being read). A consumer whose
peer stopped reading, or whose channel made no ack for a sweep interval (see `sweep`), does
not count. A publisher that routed to a queue that is behind reads no more until that queue
catches up, so the one event loop delivers first; a queue with nothing deliverable soon (no
consumer, or consumers stalled) never holds a publisher back, and a backlog grows at full speed.
The server lets a held publisher go, too, once the event loop idles (server/pacing.py): holding
pays only while the broker is busy, so a slow consumer never sets a publisher's pace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqplite.broker.consumer import DeliveryChannel
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
        self._returning: dict[int, DeliveryChannel] = {}  # channels whose credit is returning
        self.noted: object = None  # a routed collection all of whose queues are noted

    def routed(self, accepted: Iterable[Queue], rejected: Iterable[Queue] = ()) -> None:
        """A publish reached these queues (took it, or refused it): note the ones it waits for.

        When every queue of `accepted` was behind (all noted), that collection is kept as
        `noted`: publishes routed to that very one again (a queue's cached route) add nothing.
        """
        if not self.behind or (accepted is self.noted and not rejected):
            return
        touched = self._touched
        every = True
        for queue in accepted:
            if queue.behind:
                touched[id(queue)] = queue
            else:
                every = False
        for queue in rejected:
            if queue.behind:
                touched[id(queue)] = queue
        if every:
            self.noted = accepted

    def take_touched(self) -> list[Queue]:
        """The queues behind that publishes reached since the last call (one reader's batch)."""
        self.noted = None
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

    def credit_returns(self, channel: DeliveryChannel) -> None:
        """The channel acked (its acks move): its consumers out of credit get it back soon."""
        channel.credit_returning = True
        self._returning[id(channel)] = channel

    def forget(self, channel: DeliveryChannel) -> None:
        """The channel closed: it holds nobody back any more (and is not kept alive here)."""
        channel.credit_returning = False
        self._returning.pop(id(channel), None)

    def sweep(self) -> None:
        """Channels that acked nothing since the last sweep stop holding publishers back.

        Called every half STALL_AFTER or so while a publisher waits (server/pacing.py): a
        consumer that stopped acking no longer counts within one to two intervals.
        """
        if not self._returning:
            return
        stalled: list[DeliveryChannel] = []
        for channel in self._returning.values():
            if channel.acks == channel.acks_swept:
                stalled.append(channel)
            else:
                channel.acks_swept = channel.acks
        for channel in stalled:
            del self._returning[id(channel)]
            channel.credit_returning = False
            recheck(channel.queues_with_consumers())

    def returning_count(self) -> int:
        """How many channels count as acking now (tests, diagnostics)."""
        return len(self._returning)


def recheck(queues: Iterable[Queue]) -> None:
    """Look again whether queues marked behind still are (a consumer stalled or paused)."""
    for queue in queues:
        if queue.behind:
            queue.update_behind()


def still_behind(queues: Iterable[Queue]) -> bool:
    """True while one of the queues is behind (a publisher that reached them waits)."""
    return any(queue.behind and not queue.deleted for queue in queues)
