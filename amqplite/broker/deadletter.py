"""Dead-lettering: the republished message, RabbitMQ's x-death header, and cycle detection."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final

from amqplite.broker.message import Message, derive
from amqplite.protocol.properties import decode_properties, encode_properties, replace_headers

REASONS: Final = ("rejected", "expired", "maxlen", "delivery_limit")


def _routing_keys(message: Message) -> list[str]:
    """The routing keys the message was published with: its key plus any CC header."""
    keys = [message.routing_key]
    cc = (message.headers or {}).get("CC")
    if isinstance(cc, list):
        keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in cc)
    return keys


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def x_death_headers(
    headers: Mapping[str, Any] | None,
    message: Message,
    queue: str,
    reason: str,
    wall_time: float,
) -> dict[str, Any]:
    """The message's headers with this death recorded (as rabbit_dead_letter does it)."""
    new = dict(headers or {})
    deaths = [dict(d) for d in new.get("x-death") or () if isinstance(d, dict)]
    for i, death in enumerate(deaths):
        if _text(death.get("queue")) == queue and _text(death.get("reason")) == reason:
            count = death.get("count")
            death["count"] = (count if isinstance(count, int) else 0) + 1
            deaths.insert(0, deaths.pop(i))
            break
    else:
        death = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": datetime.datetime.fromtimestamp(int(wall_time), datetime.UTC),
            "exchange": message.exchange,
            "routing-keys": _routing_keys(message),
        }
        if message.expiration_ms is not None:
            death["original-expiration"] = str(message.expiration_ms)
        deaths.insert(0, death)
    new["x-death"] = deaths
    new.setdefault("x-first-death-exchange", message.exchange)
    new.setdefault("x-first-death-queue", queue)
    new.setdefault("x-first-death-reason", reason)
    return new


def dead_letter_message(
    message: Message,
    queue: str,
    reason: str,
    wall_time: float,
    exchange: str,
    routing_key: str | None,
) -> Message:
    """The copy of `message` sent to the dead-letter exchange (body shared, expiration removed).

    A paged message's copy stays paged: it reads the same body on disk (never read here).
    """
    headers = x_death_headers(message.headers, message, queue, reason, wall_time)
    properties_bin = replace_headers(message.properties_bin, headers)
    if message.expiration_ms is not None:
        props = decode_properties(properties_bin)
        props.expiration = None
        properties_bin = encode_properties(props)
    return derive(
        message,
        exchange,
        routing_key if routing_key is not None else message.routing_key,
        properties_bin,
        headers,
        None,
    )


def is_cycle(queue: str, deaths: Sequence[Mapping[str, Any]]) -> bool:
    """True if dead-lettering into `queue` closes a loop with no client rejection in it."""
    for death in deaths:
        if _text(death.get("reason")) == "rejected":
            return False
        if _text(death.get("queue")) == queue:
            return True
    return False
