"""Forwarding without sockets: a follower's QueueProxy and a leader's LinkPeer on two real brokers.

Messages cross between them as the link would carry them (encoded and decoded); the clock is
a fake. Confirms wait for the leader's answer, refusals and timeouts are nacks, a remote
consumer's window follows the follower's prefetch, and acks there settle the leader's copy.
"""

from __future__ import annotations

from collections import deque

from queue_helpers import Client, FakeClock, make_broker, msg

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.durability import is_durable, is_refused
from amqplite.cluster.link import (
    Confirm,
    Consume,
    LinkDecoder,
    NotLeading,
    Publish,
    QueueRef,
    encode,
)
from amqplite.cluster.link import Message as LinkMessage
from amqplite.cluster.queue_proxy import FORWARD_TIMEOUT, RETRY_AFTER, QueueProxy
from amqplite.cluster.remote_consumer import LinkPeer
from amqplite.protocol.writers import encode_ack, encode_nack
from amqplite.session.channel import ChannelSession
from amqplite.session.confirms import PublisherConfirms
from amqplite.store.commits import CommitDomain

REF = QueueRef("/", "q")


def note(domain: CommitDomain) -> int:
    """A ticket of the domain (the store's Commits.note without a watch)."""
    domain.written += 1
    return domain.written


def wire(messages: list[LinkMessage]) -> list[LinkMessage]:
    """The messages as the other end decodes them."""
    return list(LinkDecoder().feed(b"".join(encode(m) for m in messages)))


class Pair:
    """A follower broker with a proxy of q and a leader broker that leads q, linked."""

    def __init__(self, clock: FakeClock, leads: bool = True) -> None:
        self.clock = clock
        self.follower = make_broker(clock)
        self.leader = make_broker(clock)
        local = self.follower.vhosts["/"].declare_queue("q", durable=True)
        self.led = self.leader.vhosts["/"].declare_queue("q", durable=True)
        local.led_elsewhere = "a"
        self.proxy = QueueProxy(REF, local, "b", note)
        self.proxy.clock = clock
        local.remote = self.proxy
        self.peer = LinkPeer("b", self.leader, lambda ref: self.led if leads else None)
        self.proxy.follow("a")
        self.proxy.link_up()

    def to_leader(self) -> None:
        for message in wire(self.proxy.take_settled()):
            self.peer.received(message)

    def to_follower(self) -> None:
        for message in wire(self.peer.take()):
            self.proxy.received(message)

    def round_trip(self) -> None:
        self.to_leader()
        self.to_follower()


def publish(broker: Broker, body: bytes) -> tuple[CommitDomain, int]:
    """Route one message to q on the follower; the (domain, ticket) its confirm waits for."""
    routed = broker.route(broker.vhosts["/"], "", msg(body))
    assert routed.queues
    assert not routed.rejected
    proxy = broker.vhosts["/"].queues["q"].remote
    assert isinstance(proxy, QueueProxy)
    return proxy.domain, proxy.domain.written


def test_a_forwarded_publish_is_confirmed_only_when_the_leader_confirms_it() -> None:
    pair = Pair(FakeClock())
    mark = (publish(pair.follower, b"one"),)
    assert not is_durable(mark)  # sent, not yet answered
    sent = pair.proxy.take_settled()
    assert [type(m) for m in sent] == [Publish]
    for message in wire(sent):
        pair.peer.received(message)
    assert [e.message.body for e in pair.led.ready] == [b"one"]  # in the leader's queue, not here
    assert len(pair.proxy.queue.ready) == 0
    pair.to_follower()
    assert is_durable(mark)
    assert not is_refused(mark)


def test_a_publish_the_leader_refuses_is_a_nack() -> None:
    pair = Pair(FakeClock())
    mark = (publish(pair.follower, b"x"),)
    pair.proxy.received(Confirm(REF, 0, (), (mark[0][1],)))
    assert is_durable(mark)
    assert is_refused(mark)


def test_publishes_a_node_did_not_take_go_again_and_are_nacked_when_nobody_takes_them() -> None:
    clock = FakeClock()
    pair = Pair(clock, leads=False)
    mark = (publish(pair.follower, b"x"),)
    pair.round_trip()
    assert not is_durable(mark)
    clock.advance(RETRY_AFTER)
    pair.proxy.tick(clock())
    assert [type(m) for m in pair.proxy.take_settled()] == [Publish]  # sent again
    clock.advance(FORWARD_TIMEOUT)
    pair.proxy.tick(clock())
    assert is_durable(mark)
    assert is_refused(mark)


def test_a_new_link_resends_every_unconfirmed_publish_in_order_and_confirms_in_order() -> None:
    pair = Pair(FakeClock())
    marks = [(publish(pair.follower, body),) for body in (b"1", b"2", b"3")]
    pair.proxy.take_settled()  # lost with the link
    pair.proxy.follow("c")  # another node leads now
    pair.proxy.link_up()
    sent = pair.proxy.take_settled()
    assert [m.body for m in sent if isinstance(m, Publish)] == [b"1", b"2", b"3"]
    pair.proxy.received(Confirm(REF, 0, (marks[1][0][1],)))
    assert not any(is_durable(m) for m in marks)  # the first is not answered yet: none goes
    pair.proxy.received(Confirm(REF, 0, (marks[0][0][1], marks[2][0][1])))
    assert all(is_durable(m) and not is_refused(m) for m in marks)


def test_a_stepped_down_leader_sends_unconfirmed_publishes_elsewhere() -> None:
    pair = Pair(FakeClock())
    pair.proxy.take_settled()
    pair.peer.waiting[REF] = deque([(7, True, ((CommitDomain("x"), 1),))])  # never committed
    pair.peer.stepped_down(REF)
    assert pair.peer.take() == [NotLeading(REF, 0, (7,))]


def test_a_remote_consumer_holds_the_follower_prefetch_and_acks_settle_on_the_leader() -> None:
    pair = Pair(FakeClock())
    for i in range(10):
        pair.led.enqueue(msg(f"m{i}".encode()))
    client = Client(pair.follower)
    channel = client.channel()
    channel.prefetch_count = 3
    pair.follower.consume(pair.follower.vhosts["/"], channel, "q", "c1")
    assert pair.proxy.take_settled() == [Consume(REF, 0, 3)]
    pair.peer.received(Consume(REF, 0, 3))
    pair.to_follower()
    assert client.bodies() == [b"m0", b"m1", b"m2"]
    assert pair.led.unacked_count == 3
    assert len(pair.led.ready) == 7
    pair.follower.ack(channel, 2, multiple=True)  # acks the first two
    pair.round_trip()
    assert client.bodies() == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert pair.led.unacked_count == 3
    assert len(pair.led.ready) == 5
    assert client.delivered[3][3].delivery_count == 1  # its first delivery anywhere
    pair.follower.close_channel(pair.follower.vhosts["/"], channel)  # window 0: all requeued
    pair.to_leader()
    assert pair.led.unacked_count == 0
    assert len(pair.led.ready) == 8
    pair.proxy.tick(pair.clock())  # the requeued copies here are the leader's again: dropped
    assert len(pair.proxy.queue.ready) == 0  # nothing proxied stays on the follower


def test_a_redelivered_message_keeps_its_flag_through_the_proxy() -> None:
    pair = Pair(FakeClock())
    entry = pair.led.enqueue(msg(b"again"))
    assert entry is not None
    entry.delivery_count = 1  # delivered once before (to a consumer that went away)
    client = Client(pair.follower)
    channel = client.channel()
    pair.follower.consume(pair.follower.vhosts["/"], channel, "q", "c1")
    pair.round_trip()
    assert client.bodies() == [b"again"]
    assert client.delivered[0][3].delivery_count == 2  # was redelivered: once there, once here


class HeldDomain:
    """One commit domain whose commits the test completes by hand (the store's side)."""

    def __init__(self) -> None:
        self.written = 0
        self.committed = 0

    def watch(self) -> None:
        return None

    def watched(self, outer: object) -> tuple[tuple[HeldDomain, int], ...]:
        self.written += 1
        return ((self, self.written),)


def test_the_leader_confirms_a_forwarded_publish_only_once_its_records_are_committed() -> None:
    pair = Pair(FakeClock())
    held = HeldDomain()
    pair.leader.commits = held
    publish(pair.follower, b"a")
    publish(pair.follower, b"b")
    pair.to_leader()
    assert [e.message.body for e in pair.led.ready] == [b"a", b"b"]
    assert pair.peer.take() == []  # on nobody's disk yet: no confirm
    held.committed = 1
    pair.peer.committed()
    assert pair.peer.take() == [Confirm(REF, 0, (1,), ())]
    held.committed = 2
    pair.peer.committed()
    assert pair.peer.take() == [Confirm(REF, 0, (2,), ())]


def test_confirms_of_refused_records_are_nacks_in_order_with_the_acks_around_them() -> None:
    domain = CommitDomain("q")
    channel = ChannelSession(1, DeliveryChannel(1, Client()))
    confirms = PublisherConfirms()
    for _ in range(3):
        domain.written += 1
        channel.pending_confirms.append(
            (channel.next_publish_seq(), True, ((domain, domain.written),))
        )
    confirms.track(channel)
    domain.committed = 1  # the first is on disk
    domain.refuse(2)  # the second never will be (e.g. its leader stepped down)
    domain.committed = 3
    out: list[bytes] = []
    confirms.flush(out.append)
    assert out == [
        encode_ack(1, 1, False),
        encode_nack(1, 2, False, False),
        encode_ack(1, 3, False),
    ]
    assert domain.refused == [(1, 2)]
