"""/api/v1/queues/{vhost}/{name}/messages: SQS-style publish, receive and delete over HTTP."""

from __future__ import annotations

import math
import uuid
from functools import partial
from typing import Any

from amqplite.broker.publishing import make_message
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import jsonable
from amqplite.management.publishing import decode_payload, encode_json_properties
from amqplite.management.resources.common import (
    BodySource,
    body_source,
    encode_payload,
    read_body,
    render_properties,
)
from amqplite.management.routing import USER, Router
from amqplite.management.sqs import MAX_DELAY, MAX_RECEIVE, MAX_VISIBILITY_TIMEOUT

DEFAULT_VISIBILITY_TIMEOUT = 30.0
BASE = "/api/v1/queues/{vhost}/{name}/messages"


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("POST", BASE, send_message, USER)
    router.add("GET", BASE, receive_messages, USER)
    router.add("DELETE", BASE + "/{receipt}", delete_message, USER)
    router.add("PUT", BASE + "/{receipt}", change_visibility, USER)


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise HttpError(400, f"'{name}' must be a number") from None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise HttpError(400, f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def send_message(call: Call) -> Response:
    """Publish one message to the queue: body, priority, delay (s), ttl (ms), headers."""
    name = call.params["name"]
    vhost = call.vhost("write", "amq.default")
    call.queue(vhost)
    body = call.json_object(empty_ok=False)
    if "body" not in body:
        raise HttpError(400, "'body' is required")
    payload = decode_payload(body["body"], body.get("body_encoding"))
    properties: dict[str, Any] = {"message_id": str(uuid.uuid4())}
    if body.get("priority") is not None:
        properties["priority"] = int(_number(body["priority"], "priority", 0, 255))
    if body.get("ttl") is not None:
        properties["expiration"] = str(int(_number(body["ttl"], "ttl", 0, 2**32 - 1)))
    if body.get("headers") is not None:
        properties["headers"] = body["headers"]
    if body.get("content_type") is not None:
        properties["content_type"] = body["content_type"]
    if body.get("persistent"):
        properties["delivery_mode"] = 2
    delay = _number(body.get("delay", 0), "delay", 0, MAX_DELAY)
    message = make_message("", name, encode_json_properties(properties), payload)
    call.app.sqs.publish(vhost.name, name, message, delay, call.app.clock())
    return Response.json({"message_id": properties["message_id"], "delayed": delay > 0}, 201)


def receive_messages(call: Call) -> Response:
    """Receive up to `max` messages, each invisible for `visibility_timeout` seconds."""
    name = call.params["name"]
    vhost = call.vhost("read", name)
    queue = call.queue(vhost)
    count = int(_number(call.query.get("max", "1"), "max", 1, MAX_RECEIVE))
    visibility = _number(
        call.query.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT),
        "visibility_timeout",
        0,
        MAX_VISIBILITY_TIMEOUT,
    )
    received = call.app.sqs.receive(queue, count, visibility, call.app.clock())
    taken: list[tuple[dict[str, Any], BodySource]] = []
    for item in received:
        message = item.entry.message
        properties = render_properties(message.properties_bin)
        fields = {
            "receipt": item.receipt,
            "message_id": properties.get("message_id"),
            "redelivered": item.redelivered,
            "receive_count": item.entry.delivery_count,
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "headers": properties.get("headers", {}),
            "properties": properties,
        }
        taken.append((fields, body_source(message)))  # a paged body is read in a worker thread
    return Response(200, finish=partial(render_received, taken))


def render_received(taken: list[tuple[dict[str, Any], BodySource]]) -> Response:
    """The receive's JSON answer, paged bodies read back from disk (in a worker thread)."""
    messages = []
    for fields, source in taken:
        text, encoding = encode_payload(read_body(source))
        messages.append({**fields, "body": text, "body_encoding": encoding})
    return Response.json(jsonable({"messages": messages}))


def delete_message(call: Call) -> Response:
    """Acknowledge a received message by its receipt: 204, or 404 once expired or deleted."""
    name = call.params["name"]
    vhost = call.vhost("read", name)
    queue = vhost.queues.get(name)
    if not call.app.sqs.delete(call.params["receipt"], queue):
        raise HttpError(404, "receipt handle unknown, already deleted or its visibility timed out")
    return Response.empty()


def change_visibility(call: Call) -> Response:
    """Extend (or shorten) a received message's visibility timeout: body {"visibility_timeout": s}."""
    name = call.params["name"]
    call.vhost("read", name)
    body = call.json_object(empty_ok=False)
    visibility = _number(
        body.get("visibility_timeout"), "visibility_timeout", 0, MAX_VISIBILITY_TIMEOUT
    )
    if not call.app.sqs.change_visibility(call.params["receipt"], visibility, call.app.clock()):
        raise HttpError(404, "receipt handle unknown, already deleted or its visibility timed out")
    return Response.empty()
