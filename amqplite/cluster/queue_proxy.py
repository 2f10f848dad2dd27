"""A mirrored queue on a node that does not lead it, sans-I/O: forwarded publishes, proxied consumers.

The local `Queue` keeps its name, bindings and consumers; its `remote` is a `QueueProxy`. A
publish routed to it takes a ticket of the proxy's commit domain and goes to the leader over the
node link; the publisher's confirm waits until the leader confirms that ticket (after its in-sync
mirrors' fsync), or is a nack when the leader refuses it or no leader takes it in time. While
the local queue has consumers, the leader runs one remote consumer for this node with a window of
unsettled messages (the local consumers' prefetch, summed); its deliveries enter the local queue
in memory and are acked on the leader when they leave it here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from amqplite.broker.entry_reports import RemoteAnswer
from amqplite.broker.message import Message, QueueEntry
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
from amqplite.protocol.properties import read_facts
from amqplite.store.domains import CommitDomain

log = logging.getLogger("amqplite.cluster")

FORWARD_TIMEOUT = 15.0  # seconds a forwarded publish may wait for a leader to take it: then a nack
RETRY_AFTER = 0.1  # seconds before publishes a node did not take go out again
DEFAULT_WINDOW = 100  # messages one local consumer with no prefetch limit may hold
MAX_WINDOW = 2000  # messages the leader hands this node at most, unsettled
COUNT_TIMEOUT = 2.0  # seconds a declare-ok waits for the leader's counts: then the local ones
GOT = -2  # the seq of an entry got from the leader by basic.get (in no queue of this node)
ASK_OPS = {
    "get": AskOp.GET,
    "get-no-ack": AskOp.GET_NO_ACK,
    "purge": AskOp.PURGE,
    "count": AskOp.COUNT,
}

Note = Callable[[CommitDomain], int]


def _nothing() -> None:
    """Nobody to wake."""


def proxied_message(exchange: str, routing_key: str, properties: bytes, body: bytes) -> Message:
    """A message as the local queue keeps it: in memory only (the leader's journal holds it)."""
    facts = read_facts(properties)
    return Message(
        exchange,
        routing_key,
        properties,
        body,
        persistent=False,
        priority=facts.priority or 0,
        headers=facts.headers,
    )


def forwarded_message(publish: Publish) -> Message:
    """A forwarded publish as the leader's queue takes it."""
    facts = read_facts(publish.properties)
    expiration = facts.expiration
    return Message(
        publish.exchange,
        publish.routing_key,
        publish.properties,
        publish.body,
        persistent=facts.delivery_mode == 2,
        priority=facts.priority or 0,
        expiration_ms=int(expiration) if expiration and expiration.isdigit() else None,
        headers=facts.headers,
    )


class QueueProxy:
    """One mirrored queue's link to its leader, as a node that does not lead it sees it."""

    def __init__(self, ref: QueueRef, queue: Queue, node: str, note: Note) -> None:
        self.ref = ref
        self.queue = queue
        self.node = node  # this node's name
        self.note = note  # takes a ticket of `domain` under the publishing session's watch
        self.domain = CommitDomain(f"forward:{ref.vhost}/{ref.name}")
        self.leader: str | None = None  # the node that leads it ("" / None: none known)
        self.linked = False  # a link to the leader is up (the outbox goes out on it)
        self.pending: dict[int, tuple[Message, float]] = {}  # ticket -> (message, first sent at)
        self.retry: dict[int, float] = {}  # ticket -> when to send again (the node did not take it)
        self.done: dict[int, bool] = {}  # tickets answered past the committed point: ok?
        self.tags: dict[int, int] = {}  # id(local entry) -> the leader's delivery tag
        self.entries: dict[int, QueueEntry] = {}  # id(local entry) -> entry (keeps the id valid)
        self.window_sent = 0
        self.settled_tags: list[int] = []
        self.outbox: list[LinkMessage] = []
        self.kick: Callable[[], None] = _nothing  # the outbox has something
        self.wake: Callable[[], None] = _nothing  # confirms were settled (sessions flush them)
        self.clock: Callable[[], float] = lambda: 0.0
        self.resubscribe_at: float | None = None
        self.members: tuple[str, ...] = ()
        self.online: tuple[str, ...] = ()
        self.asks: dict[int, tuple[AskOp, RemoteAnswer, float]] = {}  # request -> (op, answer, at)
        self.ask_again: dict[int, float] = {}  # request -> when to ask again (not leading there)
        self.next_request = 0
        self.got: dict[int, tuple[int, QueueEntry]] = {}  # id(got entry) -> (leader's tag, entry)
        self.resolved: list[tuple[int, bool]] = []  # (leader's tag, requeue) to send
        self.abandoned: set[int] = set()  # requests whose asker went (a message got goes back)
        # this node's term as the queue's leader: (in-sync set, lag per member), for management
        self.replicating: Callable[[], tuple[tuple[str, ...], dict[str, int]] | None] | None = None

    # -- QueueRemote (called by the broker) ------------------------------------------------

    @property
    def placement(self) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
        """(leader, members, online members), for management."""
        if not self.members:
            return None
        return (self.leader or "", self.members, self.online)

    @property
    def replication(self) -> tuple[tuple[str, ...], dict[str, int]] | None:
        """(in-sync members, each member's lag in records) while this node leads the queue."""
        return None if self.replicating is None else self.replicating()

    def publish(self, message: Message) -> bool:
        """Forward a publish to the leader; its confirm waits for the leader's."""
        ticket = self.note(self.domain)
        self.pending[ticket] = (message, self.clock())
        if self._sending():
            self.outbox.append(self._publish(ticket, message))
            self.kick()
        return True

    def ask(self, op: str) -> RemoteAnswer:
        """Forward a basic.get, queue.purge or count request to the leader; answered later."""
        answer = RemoteAnswer()
        kind = ASK_OPS[op]
        self.next_request += 1
        request = self.next_request
        answer.give_back = lambda: self._give_back(request, answer)
        self.asks[request] = (kind, answer, self.clock())
        if self._sending():
            self.outbox.append(Ask(self.ref, 0, request, kind))
            self.kick()
        return answer

    def returned(self, entry: QueueEntry) -> bool:
        """An entry got by basic.get was requeued here: requeue it on the leader instead."""
        if entry.seq != GOT:
            return False
        self._resolve(entry, True)
        return True

    def settled(self, entry: QueueEntry) -> None:
        """A proxied delivery left the local queue: ack it on the leader."""
        if entry.seq == GOT:
            self._resolve(entry, False)
            return
        key = id(entry)
        tag = self.tags.pop(key, None)
        if tag is None:
            return
        del self.entries[key]
        if self.linked:
            if not self.settled_tags:
                self.kick()
            self.settled_tags.append(tag)

    def consumers_changed(self) -> None:
        """Ask the leader for a window that follows the local consumers' prefetch."""
        if not self.linked or self.leader == self.node:
            return
        window = self.window()
        if window != self.window_sent:
            if not self.window_sent:
                self._drop_stale()
            self.window_sent = window
            self.outbox.append(Consume(self.ref, 0, window))
            self.kick()
            if window == 0:
                self._drop_deliveries()

    # -- the link (called by the forwarder) -------------------------------------------------

    def window(self) -> int:
        """How many unsettled messages the leader may hand this node now."""
        total = 0
        for consumer in self.queue.consumers:
            if consumer.no_ack:
                return MAX_WINDOW
            total += consumer.prefetch_count or DEFAULT_WINDOW
        return min(total, MAX_WINDOW)

    def follow(self, leader: str | None) -> bool:
        """etcd says `leader` leads the queue (None: nobody); True when that changed."""
        leader = leader or None
        if leader == self.leader:
            return False
        self.leader = leader
        self.unlinked()
        return True

    def unlinked(self) -> None:
        """The link to the leader is gone: what it held unsettled comes back from the next one."""
        self.linked = False
        self.outbox.clear()
        self.settled_tags.clear()
        self.window_sent = 0
        self._drop_deliveries()
        self.got.clear()  # the leader requeued them when the link ended
        self.resolved.clear()

    def link_up(self) -> None:
        """A link to the leader is up: send every publish not yet confirmed, ask for deliveries."""
        self.linked = True
        self.retry.clear()
        for ticket, (message, _) in sorted(self.pending.items()):
            self.outbox.append(self._publish(ticket, message))
        self.ask_again.clear()
        for request, (kind, _, _) in sorted(self.asks.items()):
            self.outbox.append(Ask(self.ref, 0, request, kind))
        self.consumers_changed()
        if self.outbox:
            self.kick()

    def received(self, message: LinkMessage) -> None:
        """A message from the leader about this queue."""
        if isinstance(message, Confirm):
            for ticket in message.acked:
                self._answer(ticket, True)
            for ticket in message.nacked:
                self._answer(ticket, False)
            if message.nacked:
                log.info(
                    "%d forwarded publishes to %s refused by its leader",
                    len(message.nacked),
                    self.ref.name,
                )
            self._advance()
        elif isinstance(message, NotLeading):
            at = self.clock() + RETRY_AFTER
            for ticket in message.tickets:
                if ticket in self.pending:
                    self.retry[ticket] = at
        elif isinstance(message, Deliver):
            self._deliver(message)
        elif isinstance(message, Answer):
            self._answered(message)
        elif isinstance(message, Cancelled):
            self.window_sent = 0
            self._drop_deliveries()
            self.resubscribe_at = self.clock() + RETRY_AFTER

    def tick(self, now: float) -> None:
        """Send again what a node did not take; nack what no leader took in time."""
        if not self.window_sent:
            self._drop_stale()
        if self.linked and self.leader is not None:
            again = [t for t, at in self.retry.items() if at <= now]
            for ticket in again:
                del self.retry[ticket]
                held = self.pending.get(ticket)
                if held is not None:
                    self.outbox.append(self._publish(ticket, held[0]))
            for request in [r for r, at in self.ask_again.items() if at <= now]:
                del self.ask_again[request]
                if request in self.asks:
                    self.outbox.append(Ask(self.ref, 0, request, self.asks[request][0]))
            if self.resubscribe_at is not None and self.resubscribe_at <= now:
                self.resubscribe_at = None
                self.consumers_changed()
            if self.outbox:
                self.kick()
        self._ask_timeouts(now)
        late = [t for t, (_, at) in self.pending.items() if now - at > FORWARD_TIMEOUT]
        for ticket in late:
            self._answer(ticket, False)
        if late:
            log.warning(
                "%d forwarded publishes to %s taken by no leader in %.0f s: nacked",
                len(late),
                self.ref.name,
                FORWARD_TIMEOUT,
            )
            self._advance()

    def _ask_timeouts(self, now: float) -> None:
        """Answer asks no leader answered in time: counts from the local copy, the rest fail."""
        late = False
        for request, (kind, answer, at) in list(self.asks.items()):
            limit = COUNT_TIMEOUT if kind == AskOp.COUNT else FORWARD_TIMEOUT
            if now - at <= limit:
                continue
            del self.asks[request]
            self.ask_again.pop(request, None)
            self.abandoned.discard(request)
            answer.done = late = True
            if kind == AskOp.COUNT:
                answer.messages = self.queue.message_count
                answer.consumers = len(self.queue.consumers)
            else:
                answer.failed = f"no leader answered in {limit:.0f} s"
        if late:
            self.wake()

    def take_settled(self) -> list[LinkMessage]:
        """What to send now: the acks gathered since the last call (before a window of 0 that would
        requeue them), then the outbox."""
        out: list[LinkMessage] = []
        if self.settled_tags:
            out.append(Settle(self.ref, 0, tuple(self.settled_tags)))
            self.settled_tags = []
        for requeue in (False, True):
            tags = tuple(tag for tag, again in self.resolved if again is requeue)
            if tags:
                out.append(Resolve(self.ref, 0, tags, requeue))
        self.resolved = []
        out.extend(self.outbox)
        self.outbox = []
        return out

    def abandon(self) -> None:
        """The queue is gone here: nack every publish still waiting, drop the deliveries."""
        for ticket in list(self.pending):
            self._answer(ticket, False)
        for _, answer, _ in self.asks.values():
            answer.done = True
            answer.failed = "the queue is gone here"
        self.asks.clear()
        if self.done:
            log.warning(
                "%s is gone here: %d forwarded publishes nacked", self.ref.name, len(self.done)
            )
        self._advance()
        self.unlinked()

    # -- inside ------------------------------------------------------------------------------

    def _sending(self) -> bool:
        return self.linked and self.leader is not None

    def _publish(self, ticket: int, message: Message) -> Publish:
        return Publish(
            self.ref,
            0,
            ticket,
            message.exchange,
            message.routing_key,
            message.properties_bin,
            message.body,
        )

    def _answer(self, ticket: int, ok: bool) -> None:
        if self.pending.pop(ticket, None) is None:
            return  # answered already (a publish sent twice, to two leaders)
        self.retry.pop(ticket, None)
        self.done[ticket] = ok

    def _advance(self) -> None:
        """Move the committed point over every answered ticket next to it; nacks as refused."""
        domain = self.domain
        moved = False
        while (ok := self.done.pop(domain.committed + 1, None)) is not None:
            if ok:
                domain.committed += 1
            else:
                domain.refuse(domain.committed + 1)
            moved = True
        if moved:
            self.wake()

    def _answered(self, message: Answer) -> None:
        asked = self.asks.get(message.request)
        if asked is None:
            return  # answered already (asked twice, of two leaders)
        kind, answer, _ = asked
        if message.status == AnswerStatus.NOT_LEADING:
            self.ask_again[message.request] = self.clock() + RETRY_AFTER
            return
        del self.asks[message.request]
        answer.done = True
        answer.failed = message.reason if message.status == AnswerStatus.FAILED else ""
        answer.messages = message.messages
        answer.consumers = message.consumers
        if message.tag:
            copy = proxied_message(
                message.exchange, message.routing_key, message.properties, message.body
            )
            entry = QueueEntry(GOT, copy, message.delivery_count)
            answer.entry = entry
            if kind == AskOp.GET:
                self.got[id(entry)] = (message.tag, entry)
                if message.request in self.abandoned:
                    self._resolve(entry, True)
        self.abandoned.discard(message.request)
        self.wake()

    def _give_back(self, request: int, answer: RemoteAnswer) -> None:
        """The asker went: a message got for it is requeued on the leader (now or once it comes)."""
        if answer.done:
            if answer.entry is not None:
                self._resolve(answer.entry, True)
        elif request in self.asks:
            self.abandoned.add(request)

    def _resolve(self, entry: QueueEntry, requeue: bool) -> None:
        got = self.got.pop(id(entry), None)
        if got is None or not self.linked:
            return  # no_ack, or the link it came over ended (the leader requeued it)
        if not self.resolved and not self.settled_tags:
            self.kick()
        self.resolved.append((got[0], requeue))

    def _deliver(self, message: Deliver) -> None:
        if not self.linked or not self.window_sent:
            return  # a delivery of a consumer already cancelled: the leader requeues it
        copy = proxied_message(
            message.exchange, message.routing_key, message.properties, message.body
        )
        entry = self.queue.take_in(copy, message.delivery_count)
        if entry is None:  # refused here (a local length limit): settle it on the leader? no:
            return  # it stays unacked there until this consumer's window is reset
        self.tags[id(entry)] = message.tag
        self.entries[id(entry)] = entry
        self.queue.dispatch()

    def _drop_stale(self) -> None:
        """With no remote consumer, messages here are copies the leader took back: drop them."""
        if self.leader is not None and self.leader != self.node and len(self.queue.ready):
            self.tags.clear()
            self.entries.clear()
            self.queue.purge()

    def _drop_deliveries(self) -> None:
        """Forget deliveries of a consumer that ended; remove those still ready here."""
        if not self.tags:
            return
        self.tags.clear()
        self.entries.clear()
        self.queue.purge()  # (proxied entries only: this queue keeps nothing else)
