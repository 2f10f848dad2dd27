"""Deferred dispatch: the queues a read's publishes reached, each dispatched once at its end.

A session opens the batch while it takes publishes straight from its read buffer
(Session._receive_hot); the vhost then enqueues each publish and notes its queues here instead
of dispatching them per publish. The session flushes the batch before it handles anything else
(an ack, any other command, a channel or connection error, a basic.return or a direct reply it
writes) and when the read is done, so every client sees what it would see had each publish been
dispatched at once: a queue's deliveries come in its order, before the next command's effects.

Publishes whose dispatch time changes what happens to them are never deferred (the vhost flushes
the batch, then dispatches them at once): to a queue with a length limit (what is full, what is
dropped or refused), priorities (which message goes first) or a message TTL (what expires), and
messages with a per-message expiration (TTL 0: delivered now or never).
Pacing (flow.py) notes the queues still behind after their deferred dispatch, as after routing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqplite.broker.flow import FlowControl
    from amqplite.broker.queue import Queue


class DispatchBatch:
    """Queues publishes reached while the batch is open, dispatched once each by `flush`."""

    def __init__(self, flow: FlowControl | None = None) -> None:
        self.open = False  # set by the session while it takes a read's publishes in a row
        self.pending: dict[Queue, None] = {}  # in the order publishes first reached them
        self._flow = flow

    def flush(self) -> None:
        """Dispatch each pending queue once, then note for pacing the ones still behind."""
        pending = self.pending
        if not pending:
            return
        self.pending = {}
        was_open = self.open
        self.open = False  # anything routed while delivering is dispatched at once
        try:
            for queue in pending:
                if queue.consumers and not queue.deleted:
                    queue.dispatch()
        finally:
            self.open = was_open
        self.routed(pending)

    def routed(self, queues: Iterable[Queue]) -> None:
        """A publish reached these queues, dispatched: pacing notes the ones still behind."""
        flow = self._flow
        if flow is not None and flow.behind:
            flow.routed(queues)
