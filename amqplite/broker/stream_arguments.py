"""Stream queue arguments: the x- arguments a stream takes, their declare checks, offset specs."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

STREAM_ARGS: Final = frozenset(
    {
        "x-queue-type",
        "x-max-length-bytes",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-leader-locator",
        "x-stream-compaction",
        "x-stream-tombstone-max-age",
        "x-stream-filter-size-bytes",
    }
)
AGE_UNITS: Final = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
_AGE = re.compile(r"^(\d+)([YMDhms])$")


def is_stream_arguments(arguments: Mapping[str, Any]) -> bool:
    """True when queue arguments ask for a stream queue."""
    value = arguments.get("x-queue-type")
    return (value.decode() if isinstance(value, bytes) else value) == "stream"


def parse_age(value: Any) -> int | None:
    """x-max-age ('7D', '12h', '30m', '10s'...) in milliseconds; None when malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    match = _AGE.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return int(match.group(1)) * AGE_UNITS[match.group(2)] * 1000


def check_stream_declare(
    name: str,
    vhost: str,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Mapping[str, Any],
) -> None:
    """Refuse what RabbitMQ refuses for a stream queue (406, in its words)."""

    def refuse(text: str) -> ChannelException:
        return ChannelException(ReplyCode.PRECONDITION_FAILED, text, ClassId.QUEUE, 10)

    where = f"for queue '{name}' in vhost '{vhost}'"
    if not durable:
        raise refuse(f"invalid property 'non-durable' {where}")
    if exclusive:
        raise refuse(f"invalid property 'exclusive-owner' {where}")
    if auto_delete:
        raise refuse(f"invalid property 'auto-delete' {where}")
    for key in arguments:
        if key.startswith("x-") and key not in STREAM_ARGS:
            raise refuse(f"invalid arg '{key}' {where} of queue type rabbit_stream_queue")
    for key in ("x-max-age", "x-stream-tombstone-max-age"):
        if key in arguments and parse_age(arguments[key]) is None:
            raise refuse(f"invalid arg '{key}' {where}: invalid_max_age")
    compaction = arguments.get("x-stream-compaction")
    if compaction is not None and not (isinstance(compaction, str | bytes) and compaction):
        raise refuse(f"invalid arg 'x-stream-compaction' {where}: a header name or routing-key")
    for key in ("x-max-length-bytes", "x-stream-max-segment-size-bytes"):
        value = arguments.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise refuse(f"invalid arg '{key}' {where}: {{unacceptable_type,{value!r}}}")


@attrs.define(eq=False)
class OffsetSpec:
    """Where a consumer starts: 'first', 'last', 'next', an offset, or a timestamp (ms)."""

    kind: str
    value: int = 0


def parse_offset(value: Any, default: str = "next") -> OffsetSpec | None:
    """The x-stream-offset consume argument; None when it is not one RabbitMQ accepts."""
    if value is None:
        return OffsetSpec(default)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if value in ("first", "last", "next"):
            return OffsetSpec(value)
        age = parse_age(value)  # RabbitMQ also takes an interval: messages younger than it
        return OffsetSpec("age", age) if age is not None else None
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return OffsetSpec("timestamp", int(stamp.timestamp() * 1000))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return OffsetSpec("offset", value)


def resolve(spec: OffsetSpec, view: Any) -> int:
    """The first offset an offset spec names, given what the stream holds."""
    first, bound = int(view.first), int(view.bound)
    if spec.kind == "first":
        return first
    if spec.kind == "last":
        return max(first, bound - 1)
    if spec.kind == "next":
        return bound
    if spec.kind == "offset":
        return min(max(spec.value, first), bound)
    if spec.kind == "timestamp":
        return int(view.offset_at(spec.value))
    return int(view.offset_at(spec.value))  # "age": resolved to a timestamp by the queue
