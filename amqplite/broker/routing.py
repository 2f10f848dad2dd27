"""Routing in one vhost: the queues a message reaches through bindings and alternate exchanges."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from amqplite.broker.exchange import Exchange
from amqplite.broker.plugin_api import Arguments, HeldMessage
from amqplite.broker.queue import Queue


@attrs.frozen
class Routed:
    """Where a published message went: queues that took it, and queues whose limits refused it."""

    accepted: list[Queue]
    rejected: list[Queue]
    held: bool = False  # a plugin's router took it, to route later (not unroutable)

    @property
    def queues(self) -> list[Queue]:
        """Every queue the message was routed to (empty: unroutable)."""
        return self.accepted + self.rejected if self.rejected else self.accepted


def route_through(
    exchanges: Mapping[str, Exchange],
    queues: Mapping[str, Queue],
    exchange: Exchange,
    routing_key: str,
    headers: Arguments | None,
    message: HeldMessage | None = None,
) -> list[Queue]:
    """The distinct queues a message reaches, through e2e bindings and alternate exchanges."""
    found: dict[str, Queue] = {}
    visited: set[str] = set()
    pending = [exchange]
    while pending:
        current = pending.pop()
        if current.name in visited:
            continue
        visited.add(current.name)
        before = len(found)
        routed_any = _route_one(
            exchanges, queues, current, routing_key, headers, found, pending, message
        )
        if not routed_any and len(found) == before:
            alternate = current.alternate_exchange()
            if alternate is not None and alternate in exchanges:
                pending.append(exchanges[alternate])
    return list(found.values())


def _route_one(
    exchanges: Mapping[str, Exchange],
    queues: Mapping[str, Queue],
    exchange: Exchange,
    routing_key: str,
    headers: Arguments | None,
    found: dict[str, Queue],
    pending: list[Exchange],
    message: HeldMessage | None = None,
) -> bool:
    """Route through one exchange: queues join `found`, exchanges `pending`; False if none."""
    if exchange.name == "":
        queue = queues.get(routing_key)
        if queue is not None:
            found[queue.name] = queue
            return True
        return False
    routed_any = False
    route_message = getattr(exchange.router, "route_message", None)
    if route_message is not None and message is not None:
        destinations = route_message(message)
    else:
        destinations = exchange.router.route(routing_key, headers)
    for dest in destinations:
        routed_any = True
        if dest.kind == "queue":
            queue = queues.get(dest.name)
            if queue is not None:
                found[queue.name] = queue
        else:
            target = exchanges.get(dest.name)
            if target is not None:
                pending.append(target)
    return routed_any
