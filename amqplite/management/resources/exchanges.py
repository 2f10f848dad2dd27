"""/api/exchanges: list, show, declare (PUT), delete, publish."""

from __future__ import annotations

from typing import Any

from amqplite.broker.publishing import make_message
from amqplite.broker.vhost import Exchange, VHost
from amqplite.management.app import Call, ManagementApp
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import body_bool, jsonable
from amqplite.management.listing import render_list
from amqplite.management.publishing import decode_payload, encode_json_properties
from amqplite.management.routing import MANAGEMENT, Router

DEFAULT_EXCHANGE_ALIAS = "amq.default"


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/exchanges", list_exchanges, MANAGEMENT)
    router.add("GET", "/api/exchanges/{vhost}", list_exchanges, MANAGEMENT)
    router.add("GET", "/api/exchanges/{vhost}/{name}", show_exchange, MANAGEMENT)
    router.add("PUT", "/api/exchanges/{vhost}/{name}", declare_exchange, MANAGEMENT)
    router.add("DELETE", "/api/exchanges/{vhost}/{name}", delete_exchange, MANAGEMENT)
    router.add("POST", "/api/exchanges/{vhost}/{name}/publish", publish, MANAGEMENT)


def render_exchange(
    vhost: VHost, exchange: Exchange, app: ManagementApp | None = None
) -> dict[str, Any]:
    """An exchange as RabbitMQ's JSON object (with message_stats once it has had traffic)."""
    item: dict[str, Any] = {
        "name": exchange.name,
        "vhost": vhost.name,
        "type": exchange.type_name,
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": jsonable(exchange.arguments) if exchange.arguments else {},
        "policy": exchange.policy,
        "user_who_performed_action": "rmq-internal" if _builtin(exchange.name) else "",
    }
    if app is not None and exchange.publish_in:
        counts = (exchange.publish_in, exchange.publish_out)
        rate_in, rate_out = app.rates.observe(exchange, app.clock(), counts)
        item["message_stats"] = {
            "publish_in": exchange.publish_in,
            "publish_in_details": {"rate": rate_in},
            "publish_out": exchange.publish_out,
            "publish_out_details": {"rate": rate_out},
        }
    return item


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")


def exchange_name(call: Call, key: str = "name") -> str:
    """The exchange named by the path; `amq.default` means the default exchange."""
    name = call.params[key]
    return "" if name == DEFAULT_EXCHANGE_ALIAS else name


def _lookup(vhost: VHost, name: str) -> Exchange:
    exchange = vhost.exchanges.get(name)
    if exchange is None:
        raise HttpError(404, "Not Found", "Object Not Found")
    return exchange


def list_exchanges(call: Call) -> Response:
    """Every exchange the user may see, or those of one vhost."""
    vhosts = [call.vhost()] if "vhost" in call.params else list(call.app.visible_vhosts(call.user))
    pairs = [(v, e) for v in vhosts for e in v.exchanges.values()]
    return Response.json(
        render_list(pairs, lambda p: p[1].name, lambda p: render_exchange(*p, call.app), call.query)
    )


def show_exchange(call: Call) -> Response:
    """One exchange."""
    vhost = call.vhost()
    return call.one(render_exchange(vhost, _lookup(vhost, exchange_name(call)), call.app))


def declare_exchange(call: Call) -> Response:
    """PUT: create (201) or check equivalence (204); `type` is required."""
    name = exchange_name(call)
    vhost = call.vhost("configure", name or DEFAULT_EXCHANGE_ALIAS)
    body = call.json_object(empty_ok=False)
    type_name = body.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise HttpError(400, "'type' is required (direct, fanout, topic, headers, ...)")
    if call.app.broker.registry.get(type_name) is None:
        raise HttpError(400, f"unknown exchange type '{type_name}'")
    flags: dict[str, bool] = {}
    for key, default in (("durable", True), ("auto_delete", False), ("internal", False)):
        flags[key] = body_bool(body, key, default)
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise HttpError(400, "'arguments' must be an object")
    existed = name in vhost.exchanges
    vhost.declare_exchange(name, type_name, arguments=arguments, **flags)
    return Response.empty(204 if existed else 201)


def delete_exchange(call: Call) -> Response:
    """DELETE, honouring `if-unused=true`; 404 if missing."""
    name = exchange_name(call)
    vhost = call.vhost("configure", name or DEFAULT_EXCHANGE_ALIAS)
    _lookup(vhost, name)
    vhost.delete_exchange(name, if_unused=call.flag("if-unused"))
    return Response.empty()


def publish(call: Call) -> Response:
    """POST publish: route one message; answers {"routed": bool}."""
    name = exchange_name(call)
    vhost = call.vhost("write", name or DEFAULT_EXCHANGE_ALIAS)
    _lookup(vhost, name)
    body = call.json_object(empty_ok=False)
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):
        raise HttpError(400, "'routing_key' must be a string")
    if "payload" not in body:
        raise HttpError(400, "'payload' is required")
    payload = decode_payload(body["payload"], body.get("payload_encoding"))
    properties_bin = encode_json_properties(body.get("properties") or {})
    message = make_message(name, routing_key, properties_bin, payload)
    queues = call.broker.publish(vhost, name, message)
    return Response.json({"routed": bool(queues)})
