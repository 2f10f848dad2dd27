"""Consumer groups in the core (no sockets): spread, rebalance on join/leave, settled handover."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from queue_helpers import Client, FakeClock, make_broker, msg

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.consumer_groups import GROUP_ARGUMENT
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException

GROUP = {GROUP_ARGUMENT: "billing"}


@pytest.fixture
def broker() -> Broker:
    return make_broker(FakeClock())


@pytest.fixture
def vhost(broker: Broker) -> VHost:
    return broker.vhosts["/"]


class Member:
    """One member of a group: a client connection with one channel consuming every partition."""

    def __init__(self, broker: Broker, name: str, prefetch: int = 0) -> None:
        self.broker, self.name = broker, name
        self.client = Client(broker)
        self.channel: DeliveryChannel = self.client.channel()
        self.channel.prefetch_count = prefetch

    def join(self, *queues: str, group: str = "billing") -> None:
        for queue in queues:
            consumer = self.broker.consume(
                self.broker.vhosts["/"],
                self.channel,
                queue,
                f"{self.name}-{queue}",
                arguments={GROUP_ARGUMENT: group},
            )
            consumer.queue.dispatch()  # as the session does, after consume-ok

    def received(self) -> list[bytes]:
        return self.client.bodies()

    def ack_all(self) -> None:
        self.broker.ack(self.channel, 0, multiple=True)

    def unacked_bodies(self) -> list[bytes]:
        return [u.entry.message.body for u in self.channel.unacked.values()]

    def crash(self) -> None:
        """The connection drops: the session closes the channel (cancel, then requeue)."""
        self.broker.close_channel(self.broker.vhosts["/"], self.channel)


def partitions(vhost: VHost, count: int) -> list[str]:
    names = [f"p{i}" for i in range(count)]
    for name in names:
        vhost.declare_queue(name)
    return names


def owners(broker: Broker, members: list[Member]) -> dict[str, str]:
    """Partition -> the name of the member that owns it."""
    group = broker.groups.group("/", "billing")
    assert group is not None
    by_sink = {id(m.client): m.name for m in members}
    return {q: by_sink[id(member)] for q, member in group.assignment().items()}


def test_partitions_spread_evenly_as_members_join(broker: Broker, vhost: VHost) -> None:
    names = partitions(vhost, 6)
    members = [Member(broker, f"m{i}") for i in range(4)]
    expected_loads = [[6], [3, 3], [2, 2, 2], [1, 1, 2, 2]]
    previous: dict[str, str] = {}
    for count, member in enumerate(members, start=1):
        member.join(*names)
        now = owners(broker, members)
        assert sorted(Counter(now.values()).values()) == expected_loads[count - 1]
        moved = [q for q in names if previous and now[q] != previous[q]]
        assert all(now[q] == member.name for q in moved)  # only the newcomer takes partitions
        previous = now


def test_a_leaving_member_s_partitions_go_to_the_others_evenly(
    broker: Broker, vhost: VHost
) -> None:
    names = partitions(vhost, 6)
    a, b, c = (Member(broker, n) for n in "abc")
    for member in (a, b, c):
        member.join(*names)
    before = owners(broker, [a, b, c])
    broker.cancel(vhost, b.channel, "b-p0")
    for name in names[1:]:
        broker.cancel(vhost, b.channel, f"b-{name}")
    after = owners(broker, [a, b, c])
    assert sorted(Counter(after.values()).values()) == [3, 3]
    assert all(after[q] == before[q] for q in names if before[q] != "b")  # others keep theirs


def test_only_the_owner_of_each_partition_receives(broker: Broker, vhost: VHost) -> None:
    names = partitions(vhost, 3)
    a, b = Member(broker, "a"), Member(broker, "b")
    a.join(*names)
    b.join(*names)
    for i in range(30):
        vhost.publish("", msg(f"{names[i % 3]}:{i}".encode(), names[i % 3]))
    who = owners(broker, [a, b])
    for member in (a, b):
        got = {body.decode().split(":")[0] for body in member.received()}
        assert got == {q for q, owner in who.items() if owner == member.name}
    assert len(a.received()) + len(b.received()) == 30


def test_a_moved_partition_waits_for_the_old_owner_s_unacked_messages(
    broker: Broker, vhost: VHost
) -> None:
    (p0,) = partitions(vhost, 1)
    a, b = Member(broker, "a"), Member(broker, "b")
    a.join(p0)
    for i in range(3):
        vhost.publish("", msg(f"m{i}".encode(), p0))
    assert a.received() == [b"m0", b"m1", b"m2"]
    b.join(p0)  # one partition, two members: the first keeps it
    assert owners(broker, [a, b]) == {p0: "a"}
    broker.cancel(vhost, a.channel, f"a-{p0}")  # a leaves, three messages still unacked
    assert owners(broker, [a, b]) == {p0: "b"}
    vhost.publish("", msg(b"m3", p0))
    assert b.received() == []  # held until a settles
    broker.ack(a.channel, 2, multiple=True)  # m0, m1
    assert b.received() == []
    broker.ack(a.channel, 3, multiple=False)
    assert b.received() == [b"m3"]


def test_a_crashed_owner_s_unacked_messages_go_first_to_the_new_owner_in_order(
    broker: Broker, vhost: VHost
) -> None:
    (p0,) = partitions(vhost, 1)
    a, b = Member(broker, "a", prefetch=3), Member(broker, "b")
    a.join(p0)
    b.join(p0)
    for i in range(6):
        vhost.publish("", msg(f"m{i}".encode(), p0))
    broker.ack(a.channel, 1, multiple=False)  # m0 done; m1..m3 in flight; m4, m5 waiting
    assert a.unacked_bodies() == [b"m1", b"m2", b"m3"]
    assert b.received() == []
    a.crash()
    assert b.received() == [b"m1", b"m2", b"m3", b"m4", b"m5"]


def test_a_joining_member_takes_its_share_only_after_the_settle(
    broker: Broker, vhost: VHost
) -> None:
    names = partitions(vhost, 2)
    a, b = Member(broker, "a"), Member(broker, "b")
    a.join(*names)
    for i in range(4):
        vhost.publish("", msg(f"{names[i % 2]}-{i}".encode(), names[i % 2]))
    assert len(a.received()) == 4
    b.join(*names)
    moved = [q for q, owner in owners(broker, [a, b]).items() if owner == "b"]
    assert len(moved) == 1
    vhost.publish("", msg(b"after", moved[0]))
    assert b.received() == []  # a still holds moved[0]'s earlier messages
    a.ack_all()
    assert b.received() == [b"after"]


def test_per_key_order_holds_through_random_joins_leaves_and_crashes(
    broker: Broker, vhost: VHost
) -> None:
    """Each partition's processed sequence (acks, in time) is its published order, none lost."""
    rng = random.Random(18)
    names = partitions(vhost, 4)
    processed: dict[str, list[int]] = {q: [] for q in names}
    published = Counter[str]()
    live: list[Member] = []
    count = 0

    def process(member: Member) -> None:
        for item in list(member.channel.unacked.values())[: rng.randint(0, 3)]:
            body = item.entry.message.body.decode()
            queue, seq = body.split(":")
            processed[queue].append(int(seq))
            tag = next(t for t, u in member.channel.unacked.items() if u is item)
            broker.ack(member.channel, tag, multiple=False)

    for _step in range(400):
        action = rng.random()
        if action < 0.05 or not live:
            count += 1
            member = Member(broker, f"m{count}", prefetch=rng.randint(1, 4))
            member.join(*names)
            live.append(member)
        elif action < 0.08 and len(live) > 1:
            live.pop(rng.randrange(len(live))).crash()
        elif action < 0.5:
            queue = rng.choice(names)
            vhost.publish("", msg(f"{queue}:{published[queue]}".encode(), queue))
            published[queue] += 1
        else:
            process(rng.choice(live))
        assert all(q.unacked_count >= 0 for q in vhost.queues.values())
    while any(m.channel.unacked for m in live) or any(vhost.queues[q].message_count for q in names):
        for member in live:
            process(member)
    for queue in names:
        assert processed[queue] == list(range(published[queue])), queue


def test_group_argument_must_be_a_non_empty_string(broker: Broker, vhost: VHost) -> None:
    partitions(vhost, 1)
    channel = Client(broker).channel()
    for bad in ("", 5, True):
        with pytest.raises(ChannelException) as info:
            broker.consume(vhost, channel, "p0", "t", arguments={GROUP_ARGUMENT: bad})
        assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
        assert GROUP_ARGUMENT in info.value.reply_text
    assert not vhost.queues["p0"].consumers


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        (GROUP, {}, "in use by consumer group 'billing'"),
        ({}, GROUP, "in use by consumers of no group"),
        (GROUP, {GROUP_ARGUMENT: "shipping"}, "in use by consumer group 'billing'"),
    ],
)
def test_a_queue_serves_one_group_only(
    broker: Broker, vhost: VHost, first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    partitions(vhost, 1)
    channel = Client(broker).channel()
    broker.consume(vhost, channel, "p0", "first", arguments=first)
    with pytest.raises(ChannelException) as info:
        broker.consume(vhost, channel, "p0", "second", arguments=second)
    assert info.value.reply_code == ReplyCode.ACCESS_REFUSED
    assert text in info.value.reply_text


def test_the_queue_is_free_again_once_the_group_left(broker: Broker, vhost: VHost) -> None:
    partitions(vhost, 1)
    a = Member(broker, "a")
    a.join("p0")
    broker.cancel(vhost, a.channel, "a-p0")
    assert vhost.queues["p0"].partition is None
    assert broker.groups.group("/", "billing") is None
    plain = Client(broker)
    consumer = broker.consume(vhost, plain.channel(), "p0", "plain")
    vhost.publish("", msg(b"x", "p0"))
    assert plain.tags() == [consumer.tag]


def test_deleting_a_partition_rebalances_the_rest(broker: Broker, vhost: VHost) -> None:
    names = partitions(vhost, 3)
    a, b = Member(broker, "a"), Member(broker, "b")
    a.join(*names)
    b.join(*names)
    doomed = next(q for q, owner in owners(broker, [a, b]).items() if owner == "b")
    vhost.remove_queue(vhost.queues[doomed])
    after = owners(broker, [a, b])
    assert doomed not in after
    assert sorted(Counter(after.values()).values()) == [1, 1]
