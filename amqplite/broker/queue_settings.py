"""Queue settings: the x- argument and policy tables, their validation, and the merged result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

OVERFLOW_MODES: Final = ("drop-head", "reject-publish", "reject-publish-dlx")
MAX_PRIORITY: Final = 255


@attrs.frozen
class QueueSettings:
    """The effective features of a queue: its x- arguments merged with its policy."""

    max_priority: int | None = None
    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    delivery_limit: int | None = None
    consumer_timeout: int | None = None  # ms; None means the broker default
    single_active_consumer: bool = False
    replicas: int | None = None  # cluster mode: copies of a durable queue (None: the node default)


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _invalid(queue: str, vhost: str, key: str, detail: str) -> ChannelException:
    return ChannelException(
        ReplyCode.PRECONDITION_FAILED,
        f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {detail}",
        ClassId.QUEUE,
        10,
    )


def _integer(value: Any, key: str, minimum: int, queue: str, vhost: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
    if value < minimum:
        kind = "value_negative" if value < 0 else "value_zero"
        raise _invalid(queue, vhost, key, f"{{{kind},{value}}}")
    return value


# Integer settings (key without "x-") a policy may set, with their minimum values.
POLICY_INT_MINIMUMS: Final = {
    "message-ttl": 0,
    "expires": 1,
    "max-length": 0,
    "max-length-bytes": 0,
    "delivery-limit": 0,
    "consumer-timeout": 0,
    "replicas": 1,  # cluster mode: leader + mirrors
    "delayed-retry-min": 1,  # retry with backoff (broker/retry.py)
    "delayed-retry-max": 1,
    "delayed-retry-multiplier": 1,
}
_INT_KEYS: Final = {"max-priority": 0, **POLICY_INT_MINIMUMS}
# Numeric limits set by both a policy and an argument: the smaller wins (RabbitMQ's res_min).
_MIN_KEYS: Final = ("message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit")
POLICY_KEYS: Final = (
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "delivery-limit",
    "consumer-timeout",
    "replicas",
    "delayed-retry-type",
    "delayed-retry-min",
    "delayed-retry-max",
    "delayed-retry-multiplier",
)


def parse_settings(
    arguments: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    queue: str = "",
    vhost: str = "/",
) -> QueueSettings:
    """Validate queue arguments (406 as RabbitMQ words it) and merge a policy definition."""
    values: dict[str, Any] = {}
    for key, raw in arguments.items():
        if not key.startswith("x-"):
            continue
        name = key[2:]
        value = _text(raw)
        if name in _INT_KEYS:
            values[name] = _integer(value, key, _INT_KEYS[name], queue, vhost)
        elif name == "overflow":
            if value not in OVERFLOW_MODES:
                raise _invalid(queue, vhost, key, f"{{unacceptable_value,{value!r}}}")
            values[name] = value
        elif name in ("dead-letter-exchange", "dead-letter-routing-key"):
            if not isinstance(value, str):
                raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
            values[name] = value
        elif name == "single-active-consumer":
            if not isinstance(value, bool):
                raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
            values[name] = value
    if values.get("max-priority", 0) > MAX_PRIORITY:
        raise _invalid(
            queue, vhost, "x-max-priority", f"{{value_too_large,{values['max-priority']}}}"
        )
    if "dead-letter-routing-key" in values and "dead-letter-exchange" not in values:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            "invalid arg 'x-dead-letter-routing-key' for queue "
            f"'{queue}' in vhost '{vhost}': Missing dead-letter-exchange",
            ClassId.QUEUE,
            10,
        )
    for key, value in (policy or {}).items():
        if key not in POLICY_KEYS:
            continue
        if key not in values:
            values[key] = value
        elif key in _MIN_KEYS:
            values[key] = min(values[key], value)
    max_priority = values.get("max-priority")
    return QueueSettings(
        max_priority=max_priority or None,
        message_ttl=values.get("message-ttl"),
        expires=values.get("expires"),
        max_length=values.get("max-length"),
        max_length_bytes=values.get("max-length-bytes"),
        overflow=values.get("overflow", "drop-head"),
        dead_letter_exchange=values.get("dead-letter-exchange"),
        dead_letter_routing_key=values.get("dead-letter-routing-key"),
        delivery_limit=values.get("delivery-limit"),
        consumer_timeout=values.get("consumer-timeout"),
        single_active_consumer=bool(values.get("single-active-consumer", False)),
        replicas=values.get("replicas"),
    )


# Queue arguments compared on redeclare (as RabbitMQ does); others may differ.
EQUIVALENT_QUEUE_ARGS: Final = (
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-replicas",
)
