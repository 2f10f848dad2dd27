"""Ready queue entries as bytes and back: what a paged queue tail keeps on disk to deliver them."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Final

from amqplite.broker.message import Message, QueueEntry, shared_properties
from amqplite.protocol.properties import read_facts

# seq, delivery count, level, persistent, priority, has headers, expires_at (NaN: none),
# expiration ms (-1: none), then the lengths of exchange, routing key, properties and body
_HEAD: Final = struct.Struct("<QIBBBBdqHHII")
_NONE: Final = math.nan


def encode_entries(entries: Iterable[QueueEntry]) -> bytes:
    """Every field a ready entry needs to be delivered later, entry after entry."""
    parts: list[bytes] = []
    append = parts.append
    pack = _HEAD.pack
    for entry in entries:
        message = entry.message
        exchange = message.exchange.encode()
        routing_key = message.routing_key.encode()
        properties = message.properties_bin
        body = message.body
        expires_at = entry.expires_at
        expiration_ms = message.expiration_ms
        append(
            pack(
                entry.seq,
                entry.delivery_count,
                entry.level,
                message.persistent,
                message.priority,
                message.headers is not None,
                _NONE if expires_at is None else expires_at,
                -1 if expiration_ms is None else expiration_ms,
                len(exchange),
                len(routing_key),
                len(properties),
                len(body),
            )
        )
        append(exchange)
        append(routing_key)
        append(properties)
        append(body)
    return b"".join(parts)


def decode_entries(data: bytes) -> list[QueueEntry]:
    """The ready entries encode_entries wrote, in the same order (each with its own Message)."""
    entries: list[QueueEntry] = []
    view = memoryview(data)
    unpack = _HEAD.unpack_from
    head = _HEAD.size
    offset = 0
    end = len(data)
    while offset < end:
        (
            seq,
            delivery_count,
            level,
            persistent,
            priority,
            has_headers,
            expires_at,
            expiration_ms,
            exchange_len,
            routing_key_len,
            properties_len,
            body_len,
        ) = unpack(data, offset)
        offset += head
        exchange = str(view[offset : offset + exchange_len], "utf-8")
        offset += exchange_len
        routing_key = str(view[offset : offset + routing_key_len], "utf-8")
        offset += routing_key_len
        properties = shared_properties(bytes(view[offset : offset + properties_len]))
        offset += properties_len
        body = bytes(view[offset : offset + body_len])
        offset += body_len
        message = Message(
            exchange,
            routing_key,
            properties,
            body,
            persistent=bool(persistent),
            priority=priority,
            expiration_ms=None if expiration_ms < 0 else expiration_ms,
            headers=read_facts(properties).headers if has_headers else None,
        )
        entry = QueueEntry(
            seq,
            message,
            delivery_count,
            level,
            None if math.isnan(expires_at) else expires_at,
            True,
        )
        entries.append(entry)
    return entries
