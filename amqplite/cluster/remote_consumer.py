"""The leader's side of forwarding, one link from another node: its publishes, its remote consumers.

Publishes forwarded by the other node enter the queue here as if published here; each is
confirmed back (`Confirm`) once its records are committed (this node's disk and every in-sync
mirror's), in order per queue. A `Consume` opens (or resizes) one consumer of the queue for the
other node, on a delivery channel of its own whose prefetch is the window asked for; its
deliveries go over the link, the other node's `Settle` acks them, and a closed link or a window
of 0 requeues what it held. Synchronous: the forwarder sends the outbox.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.durability import CommitMark, is_durable
from amqplite.broker.message import QueueEntry
from amqplite.broker.queue import Queue
from amqplite.cluster.link import (
    Answer,
    AnswerStatus,
    Ask,
    AskOp,
    Cancelled,
    Confirm,
    Consume,
    Deliver,
    NotLeading,
    Publish,
    QueueRef,
    Resolve,
    Settle,
)
from amqplite.cluster.link import (
    Message as LinkMessage,
)
from amqplite.cluster.queue_proxy import forwarded_message
from amqplite.protocol.errors import AMQPError

Leads = Callable[[QueueRef], Queue | None]


def _nothing() -> None:
    """Nobody to wake."""


class RemoteSink:
    """The delivery sink of a remote consumer: deliveries become Deliver messages of the link."""

    def __init__(self, peer: LinkPeer, ref: QueueRef) -> None:
        self.peer = peer
        self.ref = ref

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        """Send the message to the other node (the count is that of earlier deliveries)."""
        message = entry.message
        self.peer.send(
            Deliver(
                self.ref,
                0,
                delivery_tag,
                entry.delivery_count,
                message.exchange,
                message.routing_key,
                message.properties_bin,
                message.body,
            )
        )

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        """The queue went away: the other node's consumers hear it."""
        self.peer.consumer_ended(self.ref, "the queue was deleted")

    def has_capacity(self) -> bool:
        """The window bounds what is in flight (the link is written as fast as it drains)."""
        return True

    def output_moving(self) -> bool:
        """Always: see has_capacity."""
        return True


class LinkPeer:
    """Forwarded publishes and remote consumers of one incoming link."""

    def __init__(self, node: str, broker: Broker, leads: Leads) -> None:
        self.node = node  # the other node
        self.broker = broker
        self.leads = leads  # the queue, if this node leads it now
        self.outbox: list[LinkMessage] = []
        self.kick: Callable[[], None] = _nothing
        self.waiting: dict[QueueRef, deque[tuple[int, bool, CommitMark | None]]] = {}
        self.channels: dict[QueueRef, DeliveryChannel] = {}
        # basic.get for the other node: what it got stays unacked here until it resolves it
        self.getter = DeliveryChannel(0, RemoteSink(self, QueueRef("", "")))
        self.held: list[tuple[CommitMark | None, Answer]] = []  # purge-oks waiting for the disk

    def send(self, message: LinkMessage) -> None:
        """Queue a message for the link."""
        if not self.outbox:
            self.kick()
        self.outbox.append(message)

    def received(self, message: LinkMessage) -> None:
        """A forwarding message from the other node."""
        if isinstance(message, Publish):
            self._publish(message)
        elif isinstance(message, Consume):
            self._consume(message.queue, message.window)
        elif isinstance(message, Ask):
            self._ask(message)
        elif isinstance(message, Resolve):
            for tag in message.tags:
                if tag in self.getter.unacked:
                    if message.requeue:
                        self.broker.reject(self.getter, tag, False, True)
                    else:
                        self.broker.ack(self.getter, tag, False)
        elif isinstance(message, Settle):
            channel = self.channels.get(message.queue)
            if channel is not None:
                for tag in message.tags:
                    if tag in channel.unacked:  # (a tag of an ended consumer: requeued already)
                        self.broker.ack(channel, tag, False)

    def _publish(self, publish: Publish) -> None:
        queue = self.leads(publish.queue)
        if queue is None:
            self.send(NotLeading(publish.queue, 0, (publish.ticket,)))
            return
        commits = self.broker.commits
        outer = commits.watch()
        try:
            entry = queue.enqueue(forwarded_message(publish))
        finally:
            mark = commits.watched(outer)
        if queue.consumers:
            queue.dispatch()
        queue.expire_if_due_now()
        waiting = self.waiting.setdefault(publish.queue, deque())
        waiting.append((publish.ticket, entry is not None, mark))
        if len(waiting) == 1:
            self.committed()

    def _ask(self, ask: Ask) -> None:
        """Answer a basic.get, queue.purge or count the other node forwarded."""
        ref = ask.queue
        queue = self.leads(ref)
        if queue is None:
            self.send(_answer(ask, AnswerStatus.NOT_LEADING))
            return
        try:
            if ask.op in (AskOp.GET, AskOp.GET_NO_ACK):
                got = self.getter.get(queue, ask.op == AskOp.GET_NO_ACK)
                self.send(_got(ask, queue, got))
            elif ask.op == AskOp.PURGE:
                outer = self.broker.commits.watch()
                try:
                    count = queue.purge()
                finally:
                    mark = self.broker.commits.watched(outer)
                self.held.append((mark, _answer(ask, AnswerStatus.OK, count)))
                self.committed()
            else:
                counts = (queue.message_count, len(queue.consumers))
                self.send(_answer(ask, AnswerStatus.OK, *counts))
        except AMQPError as exc:
            self.send(_answer(ask, AnswerStatus.FAILED, reason=str(exc)))

    def committed(self) -> None:
        """Records were committed: confirm the forwarded publishes they cover, in order per queue."""
        while self.held and is_durable(self.held[0][0]):
            self.send(self.held.pop(0)[1])
        for ref, waiting in self.waiting.items():
            acked: list[int] = []
            nacked: list[int] = []
            while waiting and is_durable(waiting[0][2]):
                ticket, ok, _ = waiting.popleft()
                (acked if ok else nacked).append(ticket)
            if acked or nacked:
                self.send(Confirm(ref, 0, tuple(acked), tuple(nacked)))

    def _consume(self, ref: QueueRef, window: int) -> None:
        channel = self.channels.get(ref)
        if window == 0:
            if channel is not None:
                self._close(ref, channel)
            return
        if channel is not None:  # a new window: the consumer's prefetch follows it
            for consumer in channel.consumers.values():
                consumer.prefetch_count = window
            channel.prefetch_count = window
            for consumer in list(channel.consumers.values()):
                consumer.queue.dispatch()
            return
        queue = self.leads(ref)
        if queue is None:
            self.send(Cancelled(ref, 0, "not the leader"))
            return
        channel = DeliveryChannel(1, RemoteSink(self, ref), prefetch_count=window)
        self.channels[ref] = channel
        try:
            vhost = self.broker.vhost(ref.vhost)
            self.broker.consume(vhost, channel, ref.name, f"amqplite.node.{self.node}")
        except AMQPError as exc:  # e.g. an exclusive consumer holds it
            del self.channels[ref]
            self.send(Cancelled(ref, 0, str(exc)))
            return
        queue.dispatch()

    def _close(self, ref: QueueRef, channel: DeliveryChannel) -> None:
        """End the remote consumer of a queue: what it held unsettled is requeued."""
        del self.channels[ref]
        vhost = self.broker.vhosts.get(ref.vhost)
        if vhost is not None:
            self.broker.close_channel(vhost, channel)

    def consumer_ended(self, ref: QueueRef, reason: str) -> None:
        """The remote consumer of a queue ended here: tell the other node."""
        channel = self.channels.get(ref)
        if channel is not None:
            self._close(ref, channel)
        self.send(Cancelled(ref, 0, reason))

    def stepped_down(self, ref: QueueRef) -> None:
        """This node no longer leads the queue: end its consumer; unconfirmed publishes go elsewhere."""
        if ref in self.channels:
            self.consumer_ended(ref, "the leader stepped down")
        waiting = self.waiting.pop(ref, None)
        if waiting:
            self.send(NotLeading(ref, 0, tuple(ticket for ticket, _, _ in waiting)))

    def take(self) -> list[LinkMessage]:
        """What to send now."""
        out, self.outbox = self.outbox, []
        return out

    def close(self) -> None:
        """The link ended: its consumers' unsettled messages are requeued."""
        for ref, channel in list(self.channels.items()):
            self._close(ref, channel)
        self.broker.recover(self.getter)  # what it got and did not resolve is requeued
        self.waiting.clear()
        self.held.clear()


def _answer(
    ask: Ask, status: AnswerStatus, messages: int = 0, consumers: int = 0, reason: str = ""
) -> Answer:
    """An answer without a message."""
    return Answer(
        ask.queue, 0, ask.request, status, messages, consumers, 0, 0, reason, "", "", b"", b""
    )


def _got(ask: Ask, queue: Queue, got: tuple[int, QueueEntry, bool] | None) -> Answer:
    """The answer to a basic.get: the message, with its count of earlier deliveries."""
    if got is None:
        return _answer(ask, AnswerStatus.OK, queue.message_count)
    tag, entry, _ = got
    message = entry.message
    return Answer(
        ask.queue,
        0,
        ask.request,
        AnswerStatus.OK,
        queue.message_count,
        len(queue.consumers),
        tag,
        entry.delivery_count - 1,
        "",
        message.exchange,
        message.routing_key,
        message.properties_bin,
        message.body,
    )
