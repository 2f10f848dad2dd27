"""Broker: vhosts and users, and the consume/ack/reject operations that span queues and channels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import attrs

from amqplite.broker.consumer import Consumer, DeliveryChannel, Unacked
from amqplite.broker.durability import CommitTracker, MetadataListener, NoCommits
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import ExchangeTypeRegistry
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException


@attrs.frozen
class User:
    """A user that may log in, with its management tags."""

    name: str
    password: str
    tags: tuple[str, ...] = ()


class Broker:
    """The pure core: every vhost, every user, and operations on consumers and deliveries."""

    def __init__(self, registry: ExchangeTypeRegistry | None = None) -> None:
        self.registry = registry or ExchangeTypeRegistry.with_builtins()
        self.totals = MessageStats()
        self.commits: CommitTracker = NoCommits()
        self.metadata: MetadataListener | None = None
        self.vhosts: dict[str, VHost] = {}
        self.users: dict[str, User] = {}
        self._consumer_counter = 0

    def add_vhost(self, name: str) -> VHost:
        """Create a vhost (no-op if it exists)."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VHost(name, self.registry, self.totals)
            vhost.metadata = self.metadata
        return vhost

    def add_user(self, name: str, password: str, tags: Iterable[str] = ()) -> None:
        """Create or replace a user."""
        self.users[name] = User(name, password, tuple(tags))

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None."""
        user = self.users.get(name)
        if user is None or user.password != password:
            return None
        return user

    def vhost(self, name: str) -> VHost:
        """The named vhost, or 530 NOT_ALLOWED (connection.open to a missing vhost)."""
        try:
            return self.vhosts[name]
        except KeyError:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED, f"vhost {name} not found", ClassId.CONNECTION, 40
            ) from None

    # -- consumers -----------------------------------------------------------------------

    def consume(
        self,
        vhost: VHost,
        channel: DeliveryChannel,
        queue_name: str,
        tag: str,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        owner: object | None = None,
    ) -> Consumer:
        """basic.consume: subscribe the channel to the queue and start deliveries."""
        queue = vhost.queue(queue_name, owner)
        if tag == "":
            self._consumer_counter += 1
            tag = f"amq.ctag-{self._consumer_counter:08d}-{id(channel) & 0xFFFFFF:06x}"
        if tag in channel.consumers:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"attempt to reuse consumer tag '{tag}'",
                ClassId.BASIC,
                20,
            )
        if queue.consumers and (exclusive or any(c.exclusive for c in queue.consumers)):
            raise ChannelException(
                ReplyCode.ACCESS_REFUSED,
                f"queue '{queue.name}' in vhost '{vhost.name}' in exclusive use",
                ClassId.BASIC,
                20,
            )
        consumer = Consumer(
            tag,
            queue,
            channel,
            no_ack=no_ack,
            exclusive=exclusive,
            prefetch_count=channel.prefetch_count,
            arguments=arguments or {},
        )
        channel.consumers[tag] = consumer
        queue.consumers.append(consumer)
        queue.had_consumer = True
        return consumer

    def cancel(self, vhost: VHost, channel: DeliveryChannel, tag: str) -> bool:
        """basic.cancel: remove the consumer (unknown tags are fine); auto-delete queues go."""
        consumer = channel.consumers.pop(tag, None)
        if consumer is None:
            return False
        queue = consumer.queue
        with contextlib.suppress(ValueError):
            queue.consumers.remove(consumer)
        if queue.auto_delete and not queue.consumers and queue.had_consumer:
            vhost.remove_queue(queue)
        return True

    # -- settling ------------------------------------------------------------------------

    def ack(self, channel: DeliveryChannel, delivery_tag: int, multiple: bool) -> None:
        """basic.ack: the messages are done; credit frees up for more deliveries."""
        settled = channel.settle(delivery_tag, multiple)
        for item in settled:
            item.queue.stats.ack += 1
            item.queue.settle(item.entry)
        self.totals.ack += len(settled)
        self._redispatch(settled)

    def reject(
        self, channel: DeliveryChannel, delivery_tag: int, multiple: bool, requeue: bool
    ) -> None:
        """basic.nack / basic.reject: requeue to the original place, or drop."""
        settled = channel.settle(delivery_tag, multiple)
        self._release(settled, requeue)

    def recover(self, channel: DeliveryChannel) -> None:
        """basic.recover: every unacked message of the channel goes back to its queue."""
        self._release(channel.settle_all(), requeue=True)

    def close_channel(self, vhost: VHost, channel: DeliveryChannel) -> None:
        """Channel closed: cancel its consumers and requeue its unacked messages."""
        for tag in list(channel.consumers):
            self.cancel(vhost, channel, tag)
        self._release(channel.settle_all(), requeue=True)

    def close_connection(self, vhost: VHost | None, owner: object) -> None:
        """Connection closed (after its channels): delete the queues exclusive to it."""
        if vhost is None:
            return
        for queue in [q for q in vhost.queues.values() if q.exclusive_owner is owner]:
            vhost.remove_queue(queue)

    def _release(self, settled: list[Unacked], requeue: bool) -> None:
        if requeue:
            for item in settled:
                item.queue.requeue(item.entry)
        else:
            for item in settled:
                item.queue.stats.reject += 1
                item.queue.settle(item.entry)
            self.totals.reject += len(settled)
        self._redispatch(settled)

    @staticmethod
    def _redispatch(settled: list[Unacked]) -> None:
        queues: dict[int, Queue] = {}
        for item in settled:
            queues.setdefault(id(item.queue), item.queue)
            if item.consumer is not None:
                for queue in item.consumer.channel.queues_with_consumers():
                    queues.setdefault(id(queue), queue)
        for queue in queues.values():
            if queue.consumers and not queue.deleted:
                queue.dispatch()

    @staticmethod
    def resume(channel: DeliveryChannel) -> None:
        """Deliver again to a channel whose credit or outbound room came back."""
        for queue in channel.queues_with_consumers():
            queue.dispatch()

    def publish(self, vhost: VHost, exchange: str, message: Message) -> list[Queue]:
        """Route and enqueue a message; the queues it reached."""
        return vhost.publish(exchange, message)
