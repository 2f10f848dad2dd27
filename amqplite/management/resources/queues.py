"""/api/queues: list, show, declare (PUT), delete, purge (DELETE contents), get (peek)."""

from __future__ import annotations

import operator
from functools import partial
from typing import Any

from amqplite.broker.consumer import Consumer
from amqplite.broker.queue import Queue
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import body_bool, body_int, jsonable
from amqplite.management.listing import render_list
from amqplite.management.queue_rows import queue_fields, render_queue
from amqplite.management.resources.common import (
    BodySource,
    body_source,
    encode_payload,
    read_body,
    render_properties,
)
from amqplite.management.resources.connections import render_consumer
from amqplite.management.routing import MANAGEMENT, Router
from amqplite.management.sqs import management_channel


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/queues", list_queues, MANAGEMENT)
    router.add("GET", "/api/queues/{vhost}", list_queues, MANAGEMENT)
    router.add("GET", "/api/queues/{vhost}/{name}", show_queue, MANAGEMENT)
    router.add("PUT", "/api/queues/{vhost}/{name}", declare_queue, MANAGEMENT)
    router.add("DELETE", "/api/queues/{vhost}/{name}", delete_queue, MANAGEMENT)
    router.add("DELETE", "/api/queues/{vhost}/{name}/contents", purge_queue, MANAGEMENT)
    router.add("POST", "/api/queues/{vhost}/{name}/get", get_messages, MANAGEMENT)


def list_queues(call: Call) -> Response:
    """Every queue the user may see, or those of one vhost."""
    app = call.app
    vhosts = [call.vhost()] if "vhost" in call.params else list(app.visible_vhosts(call.user))
    queues = [q for v in vhosts for q in v.queues.values()]
    now = app.clock()
    if not call.query:  # the whole list, as is: cached JSON per unchanged queue
        queues.sort(key=_BY_NAME)
        cache = app.queue_json
        body = "[" + ",".join([cache.render(app, q, now) for q in queues]) + "]"
        if "vhost" not in call.params:
            cache.prune(len(queues), queues)
        return Response(200, body.encode())
    return Response.json(
        render_list(
            queues,
            _queue_name,
            lambda q: render_queue(app, q, now),
            call.query,
            queue_fields(app, now),
        )
    )


_BY_NAME = operator.attrgetter("name")


def _queue_name(queue: Queue) -> str:
    return str(queue.name)


def show_queue(call: Call) -> Response:
    """One queue, with its consumers."""
    vhost = call.vhost()
    queue = call.queue(vhost)
    item = render_queue(call.app, queue, call.app.clock())
    item["consumer_details"] = [
        render_consumer(call.app, c) for c in queue.consumers if isinstance(c, Consumer)
    ]
    return call.one(item)


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    return body_bool(body, key, default)


def _arguments(body: dict[str, Any]) -> dict[str, Any]:
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise HttpError(400, "'arguments' must be an object")
    return arguments


def declare_queue(call: Call) -> Response:
    """PUT: create the queue (201), or check an existing one is equivalent (204)."""
    name = call.params["name"]
    vhost = call.vhost("configure", name)
    body = call.json_object()
    if not name:
        raise HttpError(400, "a queue name is required")
    durable = _bool(body, "durable", True)
    auto_delete = _bool(body, "auto_delete")
    arguments = _arguments(body)
    existed = name in vhost.queues
    vhost.declare_queue(name, durable=durable, auto_delete=auto_delete, arguments=arguments)
    return Response.empty(204 if existed else 201)


def delete_queue(call: Call) -> Response:
    """DELETE, honouring `if-empty=true` and `if-unused=true`."""
    name = call.params["name"]
    vhost = call.vhost("configure", name)
    queue = call.queue(vhost)
    vhost.delete_queue(
        name,
        if_unused=call.flag("if-unused"),
        if_empty=call.flag("if-empty"),
        owner=queue.exclusive_owner,
    )
    return Response.empty()


def purge_queue(call: Call) -> Response:
    """DELETE contents: drop every ready message."""
    name = call.params["name"]
    vhost = call.vhost("read", name)
    call.queue(vhost).purge()
    return Response.empty()


ACKMODES = {
    "ack_requeue_true": True,
    "reject_requeue_true": True,
    "ack_requeue_false": False,
    "reject_requeue_false": False,
}


def get_messages(call: Call) -> Response:
    """POST get: take up to `count` messages, then requeue them or remove them (ackmode)."""
    name = call.params["name"]
    vhost = call.vhost("read", name)
    queue = call.queue(vhost)
    body = call.json_object(empty_ok=False)
    count = body_int(body, "count", 1)
    if count < 1:
        raise HttpError(400, "'count' must be a positive integer")
    ackmode = body.get("ackmode", "ack_requeue_true")
    if ackmode not in ACKMODES:
        raise HttpError(400, f"'ackmode' must be one of {', '.join(ACKMODES)}")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise HttpError(400, "'encoding' must be auto or base64")
    truncate = body_int(body, "truncate", None)
    if truncate is not None and truncate < 0:
        raise HttpError(400, "'truncate' must be a non-negative integer")
    channel = management_channel()
    taken: list[tuple[dict[str, Any], BodySource]] = []
    for _ in range(count):
        got = channel.get(queue, False)
        if got is None:
            break
        _tag, entry, redelivered = got
        message = entry.message
        fields: dict[str, Any] = {
            "payload_bytes": message.size,
            "redelivered": redelivered,
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "message_count": queue.message_count,
            "properties": render_properties(message.properties_bin),
        }
        taken.append(
            (fields, body_source(message))
        )  # a paged body is read later, in a worker thread
    if taken:
        if ACKMODES[ackmode]:
            call.broker.reject(channel, 0, True, requeue=True)
        elif ackmode.startswith("ack"):
            call.broker.ack(channel, 0, True)
        else:
            call.broker.reject(channel, 0, True, requeue=False)
    return Response(200, finish=partial(render_got, taken, encoding, truncate))


def render_got(
    taken: list[tuple[dict[str, Any], BodySource]], encoding: str, truncate: int | None
) -> Response:
    """The get's JSON answer, paged bodies read back from disk (in a worker thread)."""
    out: list[dict[str, Any]] = []
    for fields, body in taken:
        data = read_body(body)
        payload, payload_encoding = encode_payload(
            data if truncate is None else data[:truncate], encoding
        )
        out.append({**fields, "payload": payload, "payload_encoding": payload_encoding})
    return Response.json(jsonable(out))
