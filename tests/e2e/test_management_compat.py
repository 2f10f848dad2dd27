"""Management API details RabbitMQ's tools rely on: string values in bodies, endpoints, fields."""

from __future__ import annotations

from typing import Any

import pytest
from mgmt_helpers import Reply, call, q

VH = q("/")


@pytest.fixture
def api(broker: Any) -> Any:
    """call() bound to the shared broker's management URL."""
    if not broker.is_amqplite:
        pytest.skip("management tests run against amqplite's own endpoint")
    base = broker.management_url

    def bound(method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return call(base, method, path, body, **kwargs)

    return bound


def test_booleans_and_numbers_as_strings_are_read_as_rabbitmq_does(api: Any, uid: str) -> None:
    queue, exchange = f"q-{uid}", f"x-{uid}"
    body = {"durable": "false", "auto_delete": "true", "arguments": {}}
    assert api("PUT", f"/api/queues/{VH}/{q(queue)}", body).status == 201
    assert api("GET", f"/api/queues/{VH}/{q(queue)}").json["auto_delete"] is True
    body = {"type": "fanout", "durable": "false", "internal": "false"}
    assert api("PUT", f"/api/exchanges/{VH}/{q(exchange)}", body).status == 201
    assert api("GET", f"/api/exchanges/{VH}/{q(exchange)}").json["durable"] is False
    for payload in ("a", "b", "c"):
        published = api(
            "POST",
            f"/api/exchanges/{VH}/amq.default/publish",
            {"routing_key": queue, "payload": payload, "payload_encoding": "string",
             "properties": {"delivery_mode": "2", "priority": "1"}},
        )  # fmt: skip
        assert published.json == {"routed": True}
    got = api(
        "POST",
        f"/api/queues/{VH}/{q(queue)}/get",
        {"count": "2", "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": "50000"},
    )
    assert got.status == 200, got.raw
    assert [m["payload"] for m in got.json] == ["a", "b"]
    assert got.json[0]["properties"]["delivery_mode"] == 2
    policy = {"pattern": f"^{queue}$", "definition": {"max-length": 5}, "priority": "4"}
    assert api("PUT", f"/api/policies/{VH}/p-{q(uid)}", policy).status == 201
    assert api("GET", f"/api/policies/{VH}/p-{q(uid)}").json["priority"] == 4
    api("DELETE", f"/api/policies/{VH}/p-{q(uid)}")
    api("DELETE", f"/api/exchanges/{VH}/{q(exchange)}")
    api("DELETE", f"/api/queues/{VH}/{q(queue)}")


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/api/queues/%2F/{uid}", {"durable": "yes"}, "'durable' must be true or false, got 'yes'"),
        ("/api/queues/%2F/{uid}", {"durable": 1}, "'durable' must be true or false, got 1"),
        ("/api/policies/%2F/{uid}", {"pattern": ".", "definition": {"max-length": 1},
                                     "priority": "high"}, "'priority' must be an integer"),
    ],
)  # fmt: skip
def test_other_strings_are_still_refused_with_400(
    api: Any, uid: str, path: str, body: dict[str, Any], reason: str
) -> None:
    reply = api("PUT", path.format(uid=q(uid)), body)
    assert reply.status == 400
    assert reason in reply.json["reason"]
