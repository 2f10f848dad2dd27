"""The pure, synchronous broker core: vhosts, exchanges, queues, consumers."""

from amqplite.broker.auth import User
from amqplite.broker.binding import Binding
from amqplite.broker.broker import Broker
from amqplite.broker.consumer import Consumer, DeliveryChannel, DeliverySink
from amqplite.broker.exchange import Exchange
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import Destination, ExchangeTypeRegistry
from amqplite.broker.queue import Queue
from amqplite.broker.vhost import VHost

__all__ = [
    "Binding",
    "Broker",
    "Consumer",
    "DeliveryChannel",
    "DeliverySink",
    "Destination",
    "Exchange",
    "ExchangeTypeRegistry",
    "Message",
    "Queue",
    "QueueEntry",
    "User",
    "VHost",
]
