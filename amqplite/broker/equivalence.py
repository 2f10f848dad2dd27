"""Redeclare checks: an exchange or queue declared again must match the existing one (else 406)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqplite.broker.binding import freeze
from amqplite.broker.plugin_api import Arguments
from amqplite.broker.queue_settings import EQUIVALENT_QUEUE_ARGS
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

if TYPE_CHECKING:
    from amqplite.broker.exchange import Exchange
    from amqplite.broker.queue import Queue


def _fmt(value: Any) -> str:
    """Render a value the way RabbitMQ's inequivalent-arg messages do."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def check_exchange_equivalent(
    vhost: str,
    existing: Exchange,
    type_name: str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: Arguments,
) -> None:
    """406 unless a redeclared exchange matches the existing one."""
    checks: list[tuple[str, Any, Any]] = [
        ("type", type_name, existing.type_name),
        ("durable", durable, existing.durable),
        ("auto_delete", auto_delete, existing.auto_delete),
        ("internal", internal, existing.internal),
    ]
    for key in sorted(set(arguments) | set(existing.arguments)):
        checks.append((key, arguments.get(key), existing.arguments.get(key)))
    for what, received, current in checks:
        if freeze(received) != freeze(current):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{what}' for exchange '{existing.name}' in vhost "
                f"'{vhost}': received '{_fmt(received)}' but current is '{_fmt(current)}'",
                ClassId.EXCHANGE,
                10,
            )


def check_queue_equivalent(
    vhost: str,
    existing: Queue,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Arguments,
) -> None:
    """406 unless a redeclared queue matches the existing one (the compared x- arguments)."""
    checks: list[tuple[str, Any, Any]] = [
        ("durable", durable, existing.durable),
        ("exclusive", exclusive, existing.exclusive),
        ("auto_delete", auto_delete, existing.auto_delete),
    ]
    for key in EQUIVALENT_QUEUE_ARGS:
        if key in arguments or key in existing.arguments:
            checks.append((key, arguments.get(key), existing.arguments.get(key)))
    for what, received, current in checks:
        if freeze(received) != freeze(current):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{what}' for queue '{existing.name}' in vhost "
                f"'{vhost}': received '{_fmt(received)}' but current is '{_fmt(current)}'",
                ClassId.QUEUE,
                10,
            )
