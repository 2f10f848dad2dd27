"""/api/bindings: list, create (POST), show and delete one binding by its properties key."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any, Literal

from amqplite.broker.plugin_api import Destination
from amqplite.broker.vhost import Binding, VHost
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import jsonable
from amqplite.management.listing import render_list
from amqplite.management.resources.exchanges import DEFAULT_EXCHANGE_ALIAS, exchange_name
from amqplite.management.routing import MANAGEMENT, Router

KINDS: dict[str, Literal["queue", "exchange"]] = {"q": "queue", "e": "exchange"}


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/bindings", list_bindings, MANAGEMENT)
    router.add("GET", "/api/bindings/{vhost}", list_bindings, MANAGEMENT)
    router.add("GET", "/api/queues/{vhost}/{name}/bindings", queue_bindings, MANAGEMENT)
    router.add("GET", "/api/exchanges/{vhost}/{name}/bindings/source", source_bindings, MANAGEMENT)
    router.add(
        "GET",
        "/api/exchanges/{vhost}/{name}/bindings/destination",
        destination_bindings,
        MANAGEMENT,
    )
    for kind in KINDS:
        base = f"/api/bindings/{{vhost}}/e/{{source}}/{kind}/{{destination}}"
        router.add("GET", base, between, MANAGEMENT)
        router.add("POST", base, create_binding, MANAGEMENT)
        router.add("GET", base + "/{props}", show_binding, MANAGEMENT)
        router.add("DELETE", base + "/{props}", delete_binding, MANAGEMENT)


def properties_key(routing_key: str, arguments: dict[str, Any]) -> str:
    """RabbitMQ's properties_key: the quoted routing key, "~" plus a hash when there are arguments."""
    key = urllib.parse.quote(routing_key, safe="") if routing_key else "~"
    if not arguments:
        return key
    canonical = json.dumps(jsonable(arguments), sort_keys=True, separators=(",", ":"))
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()[:12]).decode()
    return f"{urllib.parse.quote(routing_key, safe='')}~{digest}"


def render_binding(vhost: VHost, binding: Binding) -> dict[str, Any]:
    """A binding as RabbitMQ's JSON object."""
    arguments = jsonable(binding.arguments) if binding.arguments else {}
    return {
        "source": binding.source,
        "vhost": vhost.name,
        "destination": binding.destination.name,
        "destination_type": binding.destination.kind,
        "routing_key": binding.routing_key,
        "arguments": arguments,
        "properties_key": properties_key(binding.routing_key, binding.arguments or {}),
    }


def _implicit(vhost: VHost, queue_name: str) -> Binding:
    """The default exchange's binding to a queue (listed by RabbitMQ, never stored)."""
    return Binding.make("", Destination("queue", queue_name), queue_name, {})


def all_bindings(vhost: VHost) -> Iterator[Binding]:
    """The vhost's bindings, the default exchange's implicit ones first."""
    for name in vhost.queues:
        yield _implicit(vhost, name)
    yield from vhost.bindings()


def _respond(call: Call, pairs: list[tuple[VHost, Binding]]) -> Response:
    return Response.json(
        render_list(
            pairs, lambda p: p[1].destination.name, lambda p: render_binding(*p), call.query
        )
    )


def list_bindings(call: Call) -> Response:
    """Every binding the user may see, or those of one vhost."""
    vhosts = [call.vhost()] if "vhost" in call.params else list(call.app.visible_vhosts(call.user))
    return _respond(call, [(v, b) for v in vhosts for b in all_bindings(v)])


def queue_bindings(call: Call) -> Response:
    """The bindings whose destination is the queue."""
    vhost = call.vhost()
    queue = call.queue(vhost)
    found = [_implicit(vhost, queue.name)]
    found += list(vhost.bindings_by_destination.get(Destination("queue", queue.name), ()))
    return _respond(call, [(vhost, b) for b in found])


def _exchange(call: Call, vhost: VHost, key: str = "name") -> str:
    name = exchange_name(call, key)
    if name not in vhost.exchanges:
        raise HttpError(404, "Not Found", "Object Not Found")
    return name


def source_bindings(call: Call) -> Response:
    """The bindings whose source is the exchange."""
    vhost = call.vhost()
    name = _exchange(call, vhost)
    if name == "":
        found = [_implicit(vhost, q) for q in vhost.queues]
    else:
        found = list(vhost.bindings_by_source.get(name, ()))
    return _respond(call, [(vhost, b) for b in found])


def destination_bindings(call: Call) -> Response:
    """The bindings whose destination is the exchange."""
    vhost = call.vhost()
    name = _exchange(call, vhost)
    found = list(vhost.bindings_by_destination.get(Destination("exchange", name), ()))
    return _respond(call, [(vhost, b) for b in found])


def _ends(call: Call) -> tuple[VHost, str, Destination]:
    vhost = call.vhost()
    source = _exchange(call, vhost, "source")
    kind = KINDS[call.request.path.rstrip("/").split("/")[6]]
    name = call.params["destination"]
    if kind == "exchange":
        name = "" if name == DEFAULT_EXCHANGE_ALIAS else name
        if name not in vhost.exchanges:
            raise HttpError(404, "Not Found", "Object Not Found")
    elif name not in vhost.queues:
        raise HttpError(404, "Not Found", "Object Not Found")
    return vhost, source, Destination(kind, name)


def _between(vhost: VHost, source: str, destination: Destination) -> list[Binding]:
    if source == "":
        if destination.kind == "queue":
            return [_implicit(vhost, destination.name)]
        return []
    return [b for b in vhost.bindings_by_source.get(source, ()) if b.destination == destination]


def between(call: Call) -> Response:
    """The bindings from one exchange to one queue or exchange."""
    vhost, source, destination = _ends(call)
    return _respond(call, [(vhost, b) for b in _between(vhost, source, destination)])


def create_binding(call: Call) -> Response:
    """POST: bind (201) with `routing_key` and `arguments`; Location names the new binding."""
    vhost, source, destination = _ends(call)
    call.app.check_access(call.user, vhost.name, "write", destination.name)
    call.app.check_access(call.user, vhost.name, "read", source or DEFAULT_EXCHANGE_ALIAS)
    body = call.json_object()
    routing_key = body.get("routing_key", "")
    arguments = body.get("arguments") or {}
    if not isinstance(routing_key, str):
        raise HttpError(400, "'routing_key' must be a string")
    if not isinstance(arguments, dict):
        raise HttpError(400, "'arguments' must be an object")
    vhost.bind(source, destination, routing_key, arguments)
    location = (
        "/".join(call.request.path.rstrip("/").split("/"))
        + "/"
        + properties_key(routing_key, arguments)
    )
    return Response.empty(201, (("location", location),))


def _find(call: Call) -> tuple[VHost, Binding]:
    vhost, source, destination = _ends(call)
    props = call.params["props"]
    for binding in _between(vhost, source, destination):
        if properties_key(binding.routing_key, binding.arguments or {}) == props:
            return vhost, binding
    raise HttpError(404, "Not Found", "Object Not Found")


def show_binding(call: Call) -> Response:
    """One binding."""
    vhost, binding = _find(call)
    return call.one(render_binding(vhost, binding))


def delete_binding(call: Call) -> Response:
    """DELETE one binding."""
    vhost, binding = _find(call)
    if binding.source == "":
        raise HttpError(403, "operation not permitted on the default exchange", "access_refused")
    call.app.check_access(call.user, vhost.name, "write", binding.destination.name)
    call.app.check_access(call.user, vhost.name, "read", binding.source)
    vhost.unbind(binding.source, binding.destination, binding.routing_key, binding.arguments)
    return Response.empty()
