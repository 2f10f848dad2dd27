"""Shared rendering of message properties and payloads (/api/queues/.../get, SQS receive)."""

from __future__ import annotations

from typing import Any

from amqplite.broker.message import BodyLocation, Message, PagedMessage
from amqplite.management.json_values import jsonable

BodySource = bytes | BodyLocation
"""A body in memory, or where a paged body is (read it with read_body, in a worker thread)."""


def body_source(message: Message) -> BodySource:
    """The body, or for a paged message its location: nothing is read from disk here."""
    return message.location if isinstance(message, PagedMessage) else message.body


def read_body(source: BodySource) -> bytes:
    """The body bytes (blocking for a paged body: call it in a worker thread, Response.finish)."""
    return source if isinstance(source, bytes) else source.read()


# Message properties in RabbitMQ's JSON order and spelling; pamqp says message_type for type.
PROPERTY_FIELDS = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_PAMQP_NAMES = tuple(
    (field, "message_type" if field == "type" else field) for field in PROPERTY_FIELDS
)


def render_properties(properties_bin: bytes) -> dict[str, Any]:
    """Message properties as RabbitMQ's JSON object (absent ones left out)."""
    from amqplite.protocol.errors import AMQPError
    from amqplite.protocol.properties import decode_properties

    try:
        props = decode_properties(properties_bin)
    except AMQPError:
        return {}
    out: dict[str, Any] = {}
    for field, attribute in _PAMQP_NAMES:
        value = getattr(props, attribute, None)
        if value is not None and value != "":
            out[field] = jsonable(value)
    return out


def encode_payload(body: bytes, encoding: str = "auto") -> tuple[str, str]:
    """(payload, "string" | "base64"): UTF-8 text as a string unless base64 is asked for."""
    import base64

    if encoding != "base64":
        try:
            return body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"
