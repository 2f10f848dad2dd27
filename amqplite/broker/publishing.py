"""Building a core Message from a publish: one place for AMQP basic.publish and HTTP publishes."""

from __future__ import annotations

from typing import Final

from amqplite.broker.message import Message
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.properties import read_facts

_FACTS: dict[bytes, tuple[bool, int, int | None]] = {}
"""(persistent, priority, expiration_ms) by properties without headers: publishers repeat a few."""
_FACTS_SIZE: Final = 1024
_FACTS_BLOB: Final = 64  # longer property blobs (ids, timestamps) rarely repeat


def make_message(exchange: str, routing_key: str, properties_bin: bytes, body: bytes) -> Message:
    """A Message with its routing facts read from the properties (406 for a bad expiration)."""
    known = _FACTS.get(properties_bin)
    if known is not None:  # positional: attrs' __init__ takes them so the fastest
        persistent, priority, expiration_ms = known
        return Message(
            exchange, routing_key, properties_bin, body, persistent, priority, expiration_ms
        )
    facts = read_facts(properties_bin)
    expiration_ms = None
    if facts.expiration is not None:
        expiration_ms = parse_expiration(facts.expiration)
    persistent = facts.delivery_mode == 2
    priority = facts.priority or 0
    if facts.headers is None and len(properties_bin) <= _FACTS_BLOB:
        if len(_FACTS) >= _FACTS_SIZE:
            _FACTS.clear()
        _FACTS[bytes(properties_bin)] = (persistent, priority, expiration_ms)
    return Message(
        exchange,
        routing_key,
        properties_bin,
        body,
        persistent=persistent,
        priority=priority,
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
