"""Messages published over HTTP: JSON properties -> properties_bin, payloads -> bodies.

The core Message is then built by amqplite.broker.publishing.make_message, as for AMQP.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from amqplite.management.http import HttpError
from amqplite.protocol.errors import AMQPError
from amqplite.protocol.methods import spec
from amqplite.protocol.properties import encode_properties

_STRING_PROPERTIES = {
    "content_type": "content_type",
    "content_encoding": "content_encoding",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "type": "message_type",
    "user_id": "user_id",
    "app_id": "app_id",
    "cluster_id": "cluster_id",
}


def _octet(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():  # RabbitMQ reads "2" as 2
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise HttpError(400, f"property '{name}' must be an integer from 0 to 255")
    return value


def encode_json_properties(properties: dict[str, Any]) -> bytes:
    """RabbitMQ's JSON message properties as properties_bin (400 for unknown or bad values)."""
    if not isinstance(properties, dict):
        raise HttpError(400, "'properties' must be an object")
    props = spec.Basic.Properties()
    for key, value in properties.items():
        if value is None:
            continue
        if key in _STRING_PROPERTIES:
            if key == "expiration" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise HttpError(400, f"property '{key}' must be a string")
            setattr(props, _STRING_PROPERTIES[key], value)
        elif key in ("delivery_mode", "priority"):
            setattr(props, key, _octet(key, value))
        elif key == "timestamp":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise HttpError(400, "property 'timestamp' must be seconds since the epoch")
            setattr(props, "timestamp", value)  # noqa: B010 (seconds; pamqp types it datetime)
        elif key == "headers":
            if not isinstance(value, dict):
                raise HttpError(400, "property 'headers' must be an object")
            props.headers = value
        else:
            raise HttpError(400, f"unknown message property '{key}'")
    try:
        return encode_properties(props)
    except (ValueError, TypeError, OverflowError, AMQPError) as exc:
        raise HttpError(400, f"cannot encode message properties: {exc}") from None


def decode_payload(payload: Any, encoding: Any) -> bytes:
    """The body from a JSON payload string ("string" or "base64" encoding)."""
    if not isinstance(payload, str):
        raise HttpError(400, "'payload' must be a string")
    if encoding in (None, "string"):
        return payload.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise HttpError(400, "'payload' is not valid base64") from None
    raise HttpError(400, "'payload_encoding' must be string or base64")
