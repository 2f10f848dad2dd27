"""/api/amqplite/scheduled: messages held by exchanges (delayed_message): count, look, cancel."""

from __future__ import annotations

import datetime
from typing import Any

from amqplite.broker.plugin_api import ScheduledInfo, SchedulingRouter
from amqplite.broker.vhost import Exchange, VHost
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.resources.common import encode_payload, render_properties
from amqplite.management.routing import MANAGEMENT, Router

BASE = "/api/amqplite/scheduled"
DEFAULT_COUNT = 100
MAX_COUNT = 10_000


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", BASE, list_scheduled, MANAGEMENT)
    router.add("GET", BASE + "/{vhost}", list_scheduled, MANAGEMENT)
    router.add("GET", BASE + "/{vhost}/{name}", show_exchange, MANAGEMENT)
    router.add("GET", BASE + "/{vhost}/{name}/{id}", show_message, MANAGEMENT)
    router.add("DELETE", BASE + "/{vhost}/{name}/{id}", cancel_message, MANAGEMENT)


def scheduling_router(exchange: Exchange) -> SchedulingRouter | None:
    """The exchange's router if it holds messages that can be listed, else None."""
    router = exchange.router
    if all(hasattr(router, name) for name in ("scheduled_count", "scheduled", "cancel")):
        return router  # type: ignore[return-value]
    return None


def _iso(due_ms: int | None) -> str | None:
    if due_ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(due_ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(vhost: VHost, exchange: Exchange, router: SchedulingRouter) -> dict[str, Any]:
    due_ms = router.next_due_ms()
    return {
        "vhost": vhost.name,
        "exchange": exchange.name,
        "type": exchange.type_name,
        "durable": exchange.durable,
        "scheduled": router.scheduled_count(),
        "next_due_ms": due_ms,
        "next_due": _iso(due_ms),
    }


def _message(info: ScheduledInfo, payload: bool) -> dict[str, Any]:
    message = info.message
    body = bytes(getattr(message, "body", b""))
    item: dict[str, Any] = {
        "id": str(info.handle),
        "due_ms": info.due_ms,
        "due": _iso(info.due_ms),
        "routing_key": message.routing_key,
        "persistent": message.persistent,
        "properties": render_properties(bytes(getattr(message, "properties_bin", b""))),
        "payload_bytes": len(body),
    }
    if payload:
        item["payload"], item["payload_encoding"] = encode_payload(body)
    return item


def list_scheduled(call: Call) -> Response:
    """Each exchange holding messages back: how many, and when the next is due."""
    one = "vhost" in call.params
    vhosts = [call.vhost()] if one else list(call.app.visible_vhosts(call.user))
    items: list[dict[str, Any]] = []
    for vhost in vhosts:
        for exchange in list(vhost.exchanges.values()):
            router = scheduling_router(exchange)
            if router is not None:
                items.append(_summary(vhost, exchange, router))
    items.sort(key=lambda item: (item["vhost"], item["exchange"]))
    return Response.json(items)


def _exchange(call: Call, kind: str) -> tuple[VHost, Exchange, SchedulingRouter]:
    name = call.params["name"]
    vhost = call.vhost(kind, name)
    exchange = vhost.exchanges.get(name)
    if exchange is None:
        raise HttpError(404, f"exchange '{name}' not found", "Object Not Found")
    router = scheduling_router(exchange)
    if router is None:
        raise HttpError(
            400, f"exchange '{name}' of type '{exchange.type_name}' does not hold messages"
        )
    return vhost, exchange, router


def _count(call: Call) -> int:
    raw = call.query.get("count", str(DEFAULT_COUNT))
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_COUNT:
        raise HttpError(400, f"'count' must be an integer from 0 to {MAX_COUNT}")
    return int(raw)


def _handle(call: Call) -> int:
    raw = call.params["id"]
    if not raw.isdigit():
        raise HttpError(400, f"scheduled message id must be a number (got '{raw}')")
    return int(raw)


def show_exchange(call: Call) -> Response:
    """An exchange's summary and its first `count` held messages (no payloads), earliest first."""
    vhost, exchange, router = _exchange(call, "read")
    item = _summary(vhost, exchange, router)
    item["messages"] = [_message(info, payload=False) for info in router.scheduled(_count(call))]
    return Response.json(item)


def show_message(call: Call) -> Response:
    """One held message with its payload."""
    _, exchange, router = _exchange(call, "read")
    info = router.scheduled_message(_handle(call))
    if info is None:
        raise HttpError(
            404, f"no scheduled message {call.params['id']} in exchange '{exchange.name}'"
        )
    return Response.json(_message(info, payload=True))


def cancel_message(call: Call) -> Response:
    """Drop one held message: it is never routed."""
    _, exchange, router = _exchange(call, "configure")
    if not router.cancel(_handle(call)):
        raise HttpError(
            404, f"no scheduled message {call.params['id']} in exchange '{exchange.name}'"
        )
    return Response.empty()
