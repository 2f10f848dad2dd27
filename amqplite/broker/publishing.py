"""Building a core Message from a publish: one place for AMQP basic.publish and HTTP publishes."""

from __future__ import annotations

from amqplite.broker.message import Message
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.properties import read_facts


def make_message(exchange: str, routing_key: str, properties_bin: bytes, body: bytes) -> Message:
    """A Message with its routing facts read from the properties (406 for a bad expiration)."""
    facts = read_facts(properties_bin)
    expiration_ms: int | None = None
    if facts.expiration is not None:
        expiration_ms = parse_expiration(facts.expiration)
    return Message(
        exchange,
        routing_key,
        properties_bin,
        body,
        persistent=facts.delivery_mode == 2,
        priority=facts.priority or 0,
        expiration_ms=expiration_ms,
        headers=facts.headers,
    )


def parse_expiration(expiration: str) -> int:
    """The `expiration` property in milliseconds; 406 PRECONDITION_FAILED unless a number >= 0."""
    try:
        value = int(expiration)
    except ValueError:
        value = -1
    if value < 0:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid expiration '{expiration}'",
            ClassId.BASIC,
            40,
        )
    return value
