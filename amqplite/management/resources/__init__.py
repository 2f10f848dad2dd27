"""The REST resources of the management API, one module per resource, as RabbitMQ's."""

from __future__ import annotations

from amqplite.management.app import Router
from amqplite.management.resources import (
    access,
    bindings,
    connections,
    exchanges,
    messages,
    overview,
    pages,
    quarantine,
    queues,
)

__all__ = ["register_all"]


def register_all(router: Router) -> None:
    """Register every resource's routes."""
    for module in (
        overview,
        queues,
        exchanges,
        bindings,
        connections,
        access,
        messages,
        pages,
        quarantine,
    ):
        module.register(router)
