"""Redeclare checks: an exchange or queue declared again must match the existing one (else 406)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqplite.broker.plugin_api import Arguments, ExchangeType, format_argument, freeze
from amqplite.broker.queue_settings import EQUIVALENT_QUEUE_ARGS
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

if TYPE_CHECKING:
    from amqplite.broker.exchange import Exchange
    from amqplite.broker.queue import Queue


def check_exchange_equivalent(
    vhost: str,
    existing: Exchange,
    exchange_type: ExchangeType,
    type_name: str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: Arguments,
) -> None:
    """406 unless a redeclared exchange matches: its flags, then the arguments its type compares."""
    checks: list[tuple[str, Any, Any]] = [
        ("type", type_name, existing.type_name),
        ("durable", durable, existing.durable),
        ("auto_delete", auto_delete, existing.auto_delete),
        ("internal", internal, existing.internal),
    ]
    for what, received, current in checks:
        if freeze(received) != freeze(current):
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"inequivalent arg '{what}' for exchange '{existing.name}' in vhost "
                f"'{vhost}': received '{format_argument(received)}' but current is '{format_argument(current)}'",
                ClassId.EXCHANGE,
                10,
            )
    exchange_type.assert_args_equivalence(
        f"exchange '{existing.name}' in vhost '{vhost}'", existing.arguments, arguments
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
                f"'{vhost}': received '{format_argument(received)}' but current is '{format_argument(current)}'",
                ClassId.QUEUE,
                10,
            )
