"""The management API as a target: deep JSON bodies get 400, non-JSON state changes get 415."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mgmt_helpers import call, q

from amqplite.management.app import MAX_JSON_DEPTH, parse_json_body
from amqplite.management.http import HttpError


def _publish_body(queue: str) -> dict[str, Any]:
    return {"properties": {}, "routing_key": queue, "payload": "x", "payload_encoding": "string"}


def _depth_of_queue(broker: Any, queue: str) -> int:
    reply = call(broker.management_url, "GET", f"/api/queues/%2F/{q(queue)}")
    assert reply.status == 200, reply.raw
    return int(reply.json["messages"])


@pytest.fixture
def queue(broker: Any, uid: str) -> Any:
    name = f"hostile-{uid}"
    assert call(broker.management_url, "PUT", f"/api/queues/%2F/{q(name)}", {}).status in (201, 204)
    yield name
    call(broker.management_url, "DELETE", f"/api/queues/%2F/{q(name)}")


def test_json_nested_100000_levels_is_400_not_500(broker: Any, queue: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    reply = call(broker.management_url, "PUT", f"/api/queues/%2F/{q(queue)}", raw_body=deep)
    assert reply.status == 400, reply.raw
    assert "nested more than" in reply.json["reason"]
    assert call(broker.management_url, "GET", "/api/overview").status == 200


def test_json_nested_just_over_the_bound_is_400(broker: Any, queue: str) -> None:
    body = b'{"arguments": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    reply = call(broker.management_url, "PUT", f"/api/queues/%2F/{q(queue)}-2", raw_body=body)
    assert reply.status == 400, reply.raw
    assert f"nested more than {MAX_JSON_DEPTH} levels" in reply.json["reason"]


def test_parse_json_body_bounds_depth() -> None:
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json_body(ok) is not None
    with pytest.raises(HttpError) as err:
        parse_json_body(b"[" + ok + b"]")
    assert err.value.status == 400
    with pytest.raises(HttpError):
        parse_json_body(b'{"a": "unterminated')


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_publish_as_a_form_could_send_it_is_415(broker: Any, queue: str, content_type: str) -> None:

    reply = call(
        broker.management_url,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        raw_body=json.dumps(_publish_body(queue)).encode(),
        headers={"content-type": content_type},
    )
    assert reply.status == 415, reply.raw
    assert "application/json" in reply.json["reason"]
    assert _depth_of_queue(broker, queue) == 0  # nothing was published


def test_publish_with_json_content_type_is_accepted(broker: Any, queue: str) -> None:

    reply = call(
        broker.management_url,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        raw_body=json.dumps(_publish_body(queue)).encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert reply.status == 200, reply.raw
    assert reply.json == {"routed": True}
