"""Count limits a session enforces for its client: consumers, queues, exchanges, bindings.

A limit of 0 means none (RabbitMQ's default for each of these). Every refusal names the limit,
so an operator reading the client's error knows which setting to raise.
"""

from __future__ import annotations

from amqplite.broker.binding import Binding
from amqplite.broker.broker import Broker
from amqplite.broker.plugin_api import Arguments, Destination
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.session.channel import ChannelSession
from amqplite.session.settings import SessionSettings

TX_OP_BYTES = 64
"""What one buffered transactional operation counts for, besides its message body."""
PERMISSION_CACHE_SIZE = 1024
"""Resources a connection remembers it may access; past this the cache starts over."""


def hold_in_tx(
    settings: SessionSettings, channel: ChannelSession, body: int, class_id: int, method_id: int
) -> None:
    """Count an operation buffered in the channel's transaction; 406 past the channel's limit."""
    size = body + TX_OP_BYTES
    limit = settings.max_tx_bytes_per_channel
    if channel.tx_bytes + size > limit:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"uncommitted transaction on channel {channel.channel_id} would hold more than "
            f"{limit} bytes (limits.max_tx_bytes_per_channel); commit more often",
            class_id,
            method_id,
        )
    channel.tx_bytes += size


def check_consumers(settings: SessionSettings, consumers: int) -> None:
    """530 NOT_ALLOWED (a connection error, as RabbitMQ) when the channel has its maximum."""
    limit = settings.max_consumers_per_channel
    if limit and consumers >= limit:
        raise ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"reached maximum ({limit}) of consumers per channel "
            "(limits.max_consumers_per_channel)",
            ClassId.BASIC,
            20,
        )


def _limit(limits: dict[str, int] | None, key: str) -> int | None:
    """A user or vhost limit, or None when there is none (RabbitMQ: negative = no limit)."""
    value = (limits or {}).get(key)
    return None if value is None or value < 0 else value


def check_new_queue(
    settings: SessionSettings, vhost: VHost, name: str, broker: Broker | None = None
) -> None:
    """406 PRECONDITION_FAILED when declaring a new queue would pass the vhost's maximum."""
    if name in vhost.queues:
        return
    limit = settings.max_queues_per_vhost
    if limit and len(vhost.queues) >= limit:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"cannot declare queue '{name}' in vhost '{vhost.name}': "
            f"queue limit ({limit}) is reached (limits.max_queues_per_vhost)",
            ClassId.QUEUE,
            10,
        )
    own = _limit(broker.vhost_limits.get(vhost.name), "max-queues") if broker else None
    if own is not None and len(vhost.queues) >= own:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"cannot declare queue '{name}' in vhost '{vhost.name}': "
            f"queue limit ({own}) is reached (vhost limit max-queues)",
            ClassId.QUEUE,
            10,
        )


def admit_connection(broker: Broker, user: str, vhost: str) -> None:
    """Count a connection opening; 530 NOT_ALLOWED over its user's or vhost's max-connections."""
    for kind, name, limits in (
        ("vhost", vhost, broker.vhost_limits),
        ("user", user, broker.user_limits),
    ):
        limit = _limit(limits.get(name), "max-connections")
        if limit is not None and broker.usage[(kind, name)] >= limit:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"access to vhost '{vhost}' refused for user '{user}': "
                f"{kind} '{name}' connection limit ({limit}) is reached (max-connections)",
                ClassId.CONNECTION,
                40,
            )
    broker.usage[("vhost", vhost)] += 1
    broker.usage[("user", user)] += 1


def release_connection(broker: Broker, user: str, vhost: str, channels: int) -> None:
    """Uncount a connection admitted by admit_connection, and its open channels."""
    for key, count in ((("vhost", vhost), 1), (("user", user), 1), (("channels", user), channels)):
        broker.usage[key] -= count
        if broker.usage[key] <= 0:
            del broker.usage[key]


def admit_channel(broker: Broker, user: str) -> None:
    """Count a channel opening; 530 NOT_ALLOWED over the user's max-channels (all connections)."""
    limit = _limit(broker.user_limits.get(user), "max-channels")
    if limit is not None and broker.usage[("channels", user)] >= limit:
        raise ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"number of channels opened for user '{user}' has reached the maximum allowed "
            f"limit of ({limit}) (user limit max-channels)",
            ClassId.CHANNEL,
            10,
        )
    broker.usage[("channels", user)] += 1


def release_channel(broker: Broker, user: str) -> None:
    """Uncount one channel counted by admit_channel."""
    key = ("channels", user)
    broker.usage[key] -= 1
    if broker.usage[key] <= 0:
        del broker.usage[key]


def user_exchanges(vhost: VHost) -> int:
    """The vhost's exchanges other than the default and amq.* ones."""
    return sum(1 for name in vhost.exchanges if name and not name.startswith("amq."))


def check_new_exchange(settings: SessionSettings, vhost: VHost, name: str) -> None:
    """406 PRECONDITION_FAILED when declaring a new exchange would pass the vhost's maximum."""
    limit = settings.max_exchanges_per_vhost
    if limit and name not in vhost.exchanges and user_exchanges(vhost) >= limit:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"cannot declare exchange '{name}' in vhost '{vhost.name}': "
            f"exchange limit ({limit}) is reached (limits.max_exchanges_per_vhost)",
            ClassId.EXCHANGE,
            10,
        )


def check_new_binding(
    settings: SessionSettings,
    vhost: VHost,
    source: str,
    destination: Destination,
    routing_key: str,
    arguments: Arguments,
) -> None:
    """406 PRECONDITION_FAILED when a new binding would pass the vhost's maximum."""
    limit = settings.max_bindings_per_vhost
    if not limit:
        return
    binding = Binding.make(source, destination, routing_key, arguments)
    if binding in vhost.bindings_by_source.get(source, {}):
        return
    if sum(len(b) for b in vhost.bindings_by_source.values()) >= limit:
        class_id, method_id = (
            (ClassId.QUEUE, 20) if destination.kind == "queue" else (ClassId.EXCHANGE, 30)
        )
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"cannot bind to {destination.kind} '{destination.name}' in vhost '{vhost.name}': "
            f"binding limit ({limit}) is reached (limits.max_bindings_per_vhost)",
            class_id,
            method_id,
        )
