"""The REST resources of the management API, one module per resource, as RabbitMQ's."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.management.app import Call, ManagementApp
from amqplite.management.resources import (
    access,
    bindings,
    connections,
    exchanges,
    health,
    limits,
    messages,
    overview,
    pages,
    quarantine,
    queues,
    static,
)
from amqplite.management.routing import Router
from amqplite.management.views import NodeView

__all__ = ["build_app", "register_all"]


def register_all(router: Router[Call]) -> None:
    """Register every resource's routes."""
    for module in (
        overview,
        queues,
        exchanges,
        bindings,
        connections,
        access,
        limits,
        messages,
        pages,
        quarantine,
        health,
        static,
    ):
        module.register(router)


def build_app(
    node: NodeView,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    node_name: str | None = None,
    store: object | None = None,
) -> ManagementApp:
    """The management app over the node, with every resource's routes."""
    router: Router[Call] = Router()
    register_all(router)
    return ManagementApp(
        node, router, clock=clock, wall_clock=wall_clock, node_name=node_name, store=store
    )
