"""Consumer groups: a group's partition queues spread over its members, handed over once settled.

A consumer joins a group with the consume argument `x-consumer-group` (a non-empty string). The
group's partitions are the queues its consumers consume; its members are the connections those
consumers belong to. Each partition is delivered to one member at a time (one consumer: that
member's first on the queue), and the partitions are spread evenly over the members: every
member gets P // M of them and P % M members one more, keeping current owners where the balance
allows (so a join or leave moves as few partitions as it can). A partition that moves goes to its
new owner only after the old owner's unacked deliveries from it are acked, rejected or requeued
(by nack, cancel or close), so messages of one key are never processed by two members at once
and a requeued message is redelivered before anything behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from amqplite.broker.consumer import Consumer
from amqplite.broker.queue import Queue
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

GROUP_ARGUMENT: Final = "x-consumer-group"
"""The basic.consume argument naming the consumer group (a non-empty string)."""


def group_argument(arguments: Mapping[str, Any] | None) -> str | None:
    """The group a consume joins, or None (406 unless a non-empty string)."""
    value = (arguments or {}).get(GROUP_ARGUMENT)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str) or not value:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg '{GROUP_ARGUMENT}' for consumer: {value!r} (a non-empty string)",
            ClassId.BASIC,
            20,
        )
    return value


def member_of(consumer: Consumer) -> object:
    """The member a consumer belongs to: its connection (the channel's delivery sink)."""
    return consumer.channel.sink


@attrs.define(eq=False)
class Partition:
    """One queue of a group: the group's consumers on it, its owner and owners still settling."""

    queue: Queue
    group: Group
    consumers: list[Consumer] = attrs.field(factory=list)  # in subscription order
    owner: Consumer | None = None
    leaving: list[Consumer] = attrs.field(factory=list)  # earlier owners with unacked deliveries

    def active(self) -> Consumer | None:
        """The consumer that may receive now: none while an earlier owner has unacked ones."""
        if self.leaving:
            self.leaving = [c for c in self.leaving if c.unacked]
            if self.leaving:
                return None
        return self.owner

    def hand_to(self, consumer: Consumer | None) -> bool:
        """Make `consumer` the owner; the old one settles first. True if the owner changed."""
        old = self.owner
        if consumer is old:
            return False
        if old is not None and old.unacked and not old.no_ack:
            self.leaving.append(old)
        self.owner = consumer
        return True


@attrs.define(eq=False)
class Group:
    """The partitions and members of one named group in one vhost."""

    vhost: str
    name: str
    partitions: dict[str, Partition] = attrs.field(factory=dict)  # by queue name
    members: dict[int, object] = attrs.field(factory=dict)  # id(member) -> member, join order

    def assignment(self) -> dict[str, object]:
        """Queue name -> owning member, as it stands."""
        return {
            name: member_of(p.owner) for name, p in self.partitions.items() if p.owner is not None
        }

    def rebalance(self) -> list[Queue]:
        """Spread the partitions over the members; the queues whose owner changed."""
        order = {key: index for index, key in enumerate(self.members)}
        partitions = [self.partitions[name] for name in sorted(self.partitions)]
        if not order:
            return [p.queue for p in partitions if p.hand_to(None)]
        base, extra = divmod(len(partitions), len(order))
        load = dict.fromkeys(order, 0)
        chosen: dict[str, Consumer] = {}
        for limit in (base, base + 1):  # keep owners up to the fair share, then the extra ones
            for p in partitions:
                owner = p.owner
                if p.queue.name in chosen or owner is None or owner not in p.consumers:
                    continue
                key = id(member_of(owner))
                if load[key] < limit and (limit == base or extra > 0):
                    chosen[p.queue.name] = owner
                    load[key] += 1
                    extra -= limit > base
        for p in partitions:
            if p.queue.name in chosen or not p.consumers:
                continue
            firsts: dict[int, Consumer] = {}
            for consumer in p.consumers:
                firsts.setdefault(id(member_of(consumer)), consumer)
            key = min(firsts, key=lambda k: (load[k], order[k]))
            chosen[p.queue.name] = firsts[key]
            load[key] += 1
        return [p.queue for p in partitions if p.hand_to(chosen.get(p.queue.name))]


class ConsumerGroups:
    """Every consumer group of a broker, by (vhost, name)."""

    __slots__ = ("_by_consumer", "_groups")

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], Group] = {}
        self._by_consumer: dict[int, Partition] = {}  # id(consumer) -> its partition

    def group(self, vhost: str, name: str) -> Group | None:
        """The group called `name` in `vhost`, if it has consumers."""
        return self._groups.get((vhost, name))

    def check_consume(self, queue: Queue, group: str | None) -> None:
        """403 if the queue is consumed by another group, or by consumers outside this one."""
        partition = partition_of(queue)
        if partition is not None and partition.consumers:
            current: str | None = partition.group.name
        elif queue.consumers:
            current = None
        else:
            return
        if current == group:
            return
        what = f"consumer group '{current}'" if current is not None else "consumers of no group"
        raise ChannelException(
            ReplyCode.ACCESS_REFUSED,
            f"queue '{queue.name}' in vhost '{queue.vhost}' is in use by {what}",
            ClassId.BASIC,
            20,
        )

    def join(self, vhost: str, name: str, consumer: Consumer) -> list[Queue]:
        """Add a consumer (already on its queue) to a group; the queues whose owner changed."""
        group = self._groups.get((vhost, name))
        if group is None:
            group = self._groups[(vhost, name)] = Group(vhost, name)
        queue = consumer.queue
        partition = group.partitions.get(queue.name)
        if partition is None or partition.queue is not queue:
            partition = group.partitions[queue.name] = Partition(queue, group)
            queue.partition = partition
        partition.consumers.append(consumer)
        self._by_consumer[id(consumer)] = partition
        member = member_of(consumer)
        group.members.setdefault(id(member), member)
        return group.rebalance()

    def leave(self, consumer: Consumer) -> list[Queue]:
        """Remove a cancelled consumer; the queues whose owner changed."""
        partition = self._by_consumer.pop(id(consumer), None)
        if partition is None:
            return []
        group = partition.group
        if consumer in partition.consumers:
            partition.consumers.remove(consumer)
        member = member_of(consumer)
        if not any(member_of(c) is member for p in group.partitions.values() for c in p.consumers):
            group.members.pop(id(member), None)
        return self._settle(group)

    def queue_deleted(self, queue: Queue) -> list[Queue]:
        """A partition queue is gone: forget it and its consumers; the queues whose owner changed."""
        partition = partition_of(queue)
        if partition is None:
            return []
        queue.partition = None
        group = partition.group
        for consumer in partition.consumers:
            self._by_consumer.pop(id(consumer), None)
        if group.partitions.get(queue.name) is partition:
            del group.partitions[queue.name]
        alive = {id(member_of(c)) for p in group.partitions.values() for c in p.consumers}
        for key in [k for k in group.members if k not in alive]:
            del group.members[key]
        return self._settle(group)

    def _settle(self, group: Group) -> list[Queue]:
        """Rebalance; drop the group once it has no consumers left."""
        changed = group.rebalance()
        for name in [n for n, p in group.partitions.items() if not p.consumers]:
            group.partitions[name].queue.partition = None
            del group.partitions[name]
        if not group.partitions:
            self._groups.pop((group.vhost, group.name), None)
        return changed


def partition_of(queue: Queue) -> Partition | None:
    """The group partition a queue belongs to (the queue knows it only as its active picker)."""
    picker = queue.partition
    return picker if isinstance(picker, Partition) else None
