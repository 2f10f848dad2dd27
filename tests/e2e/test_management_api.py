"""The HTTP management API against a live broker: RabbitMQ's fields, writes, errors, SQS-style messaging."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from mgmt_helpers import q, wait_for

VH = q("/")


@pytest.fixture
def queue(api: Any, uid: str) -> Iterator[str]:
    """A non-durable queue declared over HTTP, deleted at teardown."""
    assert api("PUT", f"/api/queues/{VH}/{q(uid)}", {"durable": False}).status == 201
    yield uid
    api("DELETE", f"/api/queues/{VH}/{q(uid)}")


def publish(api: Any, queue: str, payload: str, **properties: Any) -> None:
    reply = api(
        "POST",
        f"/api/exchanges/{VH}/amq.default/publish",
        {
            "routing_key": queue,
            "payload": payload,
            "payload_encoding": "string",
            "properties": properties,
        },
    )
    assert reply.status == 200, reply.raw
    assert reply.json == {"routed": True}


def get_queue(api: Any, queue: str) -> dict[str, Any]:
    reply = api("GET", f"/api/queues/{VH}/{q(queue)}")
    assert reply.status == 200, reply.raw
    return reply.json


# -- read endpoints ------------------------------------------------------------------------------


def test_overview_reports_versions_totals_and_listeners(api: Any, broker: Any) -> None:
    body = api("GET", "/api/overview").json
    assert body["product_name"] == "amqplite"
    assert {"queues", "connections", "channels", "exchanges", "consumers"} <= set(
        body["object_totals"]
    )
    assert {"messages", "messages_ready", "messages_unacknowledged"} <= set(body["queue_totals"])
    assert "rate" in body["message_stats"]["publish_details"]
    assert any(
        lst["protocol"] == "amqp" and lst["port"] == broker.port for lst in body["listeners"]
    )


def test_nodes_and_vhosts_list_the_single_node_and_default_vhost(api: Any) -> None:
    nodes = api("GET", "/api/nodes").json
    assert len(nodes) == 1
    assert nodes[0]["running"] is True
    assert nodes[0]["mem_used"] > 0
    assert api("GET", f"/api/nodes/{q(nodes[0]['name'])}").status == 200
    vhosts = api("GET", "/api/vhosts").json
    assert "/" in [v["name"] for v in vhosts]


def test_queue_object_carries_depths_consumers_memory_and_message_stats(
    api: Any, queue: str
) -> None:
    for i in range(3):
        publish(api, queue, f"m{i}")
    item = get_queue(api, queue)
    assert item["name"] == queue
    assert item["vhost"] == "/"
    assert item["durable"] is False
    assert item["messages"] == 3
    assert item["messages_ready"] == 3
    assert item["messages_unacknowledged"] == 0
    assert item["consumers"] == 0
    assert item["memory"] > 0
    stats = item["message_stats"]
    assert stats["publish"] == 3
    for key in ("publish", "deliver", "ack", "redeliver"):
        assert key in stats
        assert "rate" in stats[f"{key}_details"]


def test_publish_rate_becomes_positive_after_publishing(api: Any, queue: str) -> None:
    get_queue(api, queue)  # first sample
    for i in range(20):
        publish(api, queue, f"m{i}")
    time.sleep(1.1)
    assert get_queue(api, queue)["message_stats"]["publish_details"]["rate"] > 0


def test_queue_lists_per_vhost_with_pagination_and_columns(api: Any, uid: str) -> None:
    names = [f"{uid}-{i}" for i in range(5)]
    for name in names:
        assert api("PUT", f"/api/queues/{VH}/{q(name)}", {"durable": False}).status == 201
    try:
        everything = api("GET", "/api/queues").json
        assert set(names) <= {item["name"] for item in everything}
        page = api(
            "GET", f"/api/queues/{VH}?page=2&page_size=2&name={q(uid)}&columns=name,messages"
        ).json
        assert page["filtered_count"] == 5
        assert page["page_count"] == 3
        assert page["page"] == 2
        assert page["item_count"] == 2
        assert page["total_count"] >= 5
        assert [item["name"] for item in page["items"]] == sorted(names)[2:4]
        assert all(set(item) == {"name", "messages"} for item in page["items"])
        reverse = api(
            "GET", f"/api/queues/{VH}?page=1&page_size=5&name={q(uid)}&sort=name&sort_reverse=true"
        ).json
        assert [item["name"] for item in reverse["items"]] == sorted(names, reverse=True)
        assert api("GET", f"/api/queues?page=99&page_size=2&name={q(uid)}").status == 400
    finally:
        for name in names:
            api("DELETE", f"/api/queues/{VH}/{q(name)}")


def test_put_queue_declares_then_accepts_equivalent_and_refuses_inequivalent(
    api: Any, uid: str
) -> None:
    path = f"/api/queues/{VH}/{q(uid)}"
    try:
        assert api("PUT", path, {"durable": False, "arguments": {"x-max-length": 10}}).status == 201
        assert api("PUT", path, {"durable": False, "arguments": {"x-max-length": 10}}).status == 204
        refused = api("PUT", path, {"durable": True})
        assert refused.status == 400
        assert "inequivalent arg 'durable'" in refused.json["reason"]
        assert get_queue(api, uid)["arguments"] == {"x-max-length": 10}
    finally:
        assert api("DELETE", path).status == 204
    assert api("GET", path).status == 404


def test_delete_queue_if_empty_refuses_a_queue_with_messages(api: Any, queue: str) -> None:
    publish(api, queue, "x")
    assert api("DELETE", f"/api/queues/{VH}/{q(queue)}?if-empty=true").status == 400
    assert get_queue(api, queue)["messages"] == 1


def test_delete_contents_purges_the_queue(api: Any, queue: str) -> None:
    for i in range(4):
        publish(api, queue, f"m{i}")
    assert api("DELETE", f"/api/queues/{VH}/{q(queue)}/contents").status == 204
    assert get_queue(api, queue)["messages"] == 0


def test_get_with_ack_requeue_true_peeks_and_leaves_messages_redelivered(
    api: Any, queue: str
) -> None:
    publish(api, queue, "first", headers={"k": "v"}, content_type="text/plain")
    publish(api, queue, "second")
    reply = api(
        "POST",
        f"/api/queues/{VH}/{q(queue)}/get",
        {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    assert reply.status == 200
    got = reply.json
    assert [m["payload"] for m in got] == ["first", "second"]
    assert got[0]["properties"] == {"headers": {"k": "v"}, "content_type": "text/plain"}
    assert got[0]["payload_encoding"] == "string"
    assert got[0]["payload_bytes"] == 5
    assert got[0]["redelivered"] is False
    assert got[0]["routing_key"] == queue
    assert get_queue(api, queue)["messages_ready"] == 2
    again = api(
        "POST", f"/api/queues/{VH}/{q(queue)}/get", {"count": 1, "ackmode": "ack_requeue_true"}
    ).json
    assert again[0]["payload"] == "first"
    assert again[0]["redelivered"] is True


def test_get_with_ack_requeue_false_removes_messages(api: Any, queue: str) -> None:
    publish(api, queue, "a")
    publish(api, queue, "b")
    got = api(
        "POST", f"/api/queues/{VH}/{q(queue)}/get", {"count": 1, "ackmode": "ack_requeue_false"}
    ).json
    assert [m["payload"] for m in got] == ["a"]
    assert got[0]["message_count"] == 1
    assert get_queue(api, queue)["messages"] == 1


def test_get_returns_binary_payloads_as_base64(api: Any, queue: str) -> None:
    payload = base64.b64encode(b"\xff\x00\xfe").decode()
    reply = api(
        "POST",
        f"/api/exchanges/{VH}/amq.default/publish",
        {"routing_key": queue, "payload": payload, "payload_encoding": "base64", "properties": {}},
    )
    assert reply.json == {"routed": True}
    got = api(
        "POST",
        f"/api/queues/{VH}/{q(queue)}/get",
        {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
    ).json
    assert got[0]["payload_encoding"] == "base64"
    assert got[0]["payload"] == payload


def test_exchange_put_get_publish_and_delete(api: Any, uid: str, queue: str) -> None:
    path = f"/api/exchanges/{VH}/{q(uid)}"
    assert api("PUT", path, {"type": "fanout", "durable": False}).status == 201
    try:
        item = api("GET", path).json
        assert item == {
            **item,
            "name": uid,
            "type": "fanout",
            "durable": False,
            "auto_delete": False,
            "internal": False,
            "vhost": "/",
        }
        assert uid in [e["name"] for e in api("GET", f"/api/exchanges/{VH}").json]
        unrouted = api(
            "POST",
            path + "/publish",
            {"routing_key": "", "payload": "x", "payload_encoding": "string", "properties": {}},
        )
        assert unrouted.json == {"routed": False}
        assert (
            api(
                "POST",
                f"/api/bindings/{VH}/e/{q(uid)}/q/{q(queue)}",
                {"routing_key": "", "arguments": {}},
            ).status
            == 201
        )
        routed = api(
            "POST",
            path + "/publish",
            {"routing_key": "", "payload": "x", "payload_encoding": "string", "properties": {}},
        )
        assert routed.json == {"routed": True}
        assert get_queue(api, queue)["messages"] == 1
        assert api("PUT", path, {"type": "direct", "durable": False}).status == 400
        assert api("DELETE", path + "?if-unused=true").status == 400
    finally:
        assert api("DELETE", path).status == 204
    assert api("GET", path).status == 404


def test_default_exchange_is_listed_with_an_empty_name(api: Any) -> None:
    names = [e["name"] for e in api("GET", "/api/exchanges").json]
    assert "" in names
    assert "amq.topic" in names
    assert api("GET", f"/api/exchanges/{VH}/amq.default").json["type"] == "direct"


def test_bindings_create_list_show_and_delete(api: Any, queue: str) -> None:
    base = f"/api/bindings/{VH}/e/amq.direct/q/{q(queue)}"
    created = api("POST", base, {"routing_key": "rk.1", "arguments": {"x-a": 1}})
    assert created.status == 201
    assert created.headers["location"].startswith(base + "/")
    listed = api("GET", base).json
    assert len(listed) == 1
    binding = listed[0]
    assert binding == {
        **binding,
        "source": "amq.direct",
        "destination": queue,
        "destination_type": "queue",
        "routing_key": "rk.1",
        "arguments": {"x-a": 1},
        "vhost": "/",
    }
    props = binding["properties_key"]
    assert api("GET", f"{base}/{q(props)}").json["routing_key"] == "rk.1"
    queue_bindings = api("GET", f"/api/queues/{VH}/{q(queue)}/bindings").json
    assert {b["source"] for b in queue_bindings} == {"", "amq.direct"}
    assert any(
        b["destination"] == queue
        for b in api("GET", f"/api/exchanges/{VH}/amq.direct/bindings/source").json
    )
    assert any(
        b["destination"] == queue and b["source"] == "amq.direct"
        for b in api("GET", "/api/bindings").json
    )
    assert api("DELETE", f"{base}/{q(props)}").status == 204
    assert api("GET", base).json == []
    assert api("DELETE", f"{base}/{q(props)}").status == 404


def test_exchange_to_exchange_binding(api: Any, uid: str) -> None:
    dest = f"{uid}-dest"
    assert (
        api("PUT", f"/api/exchanges/{VH}/{q(dest)}", {"type": "fanout", "durable": False}).status
        == 201
    )
    try:
        assert (
            api(
                "POST", f"/api/bindings/{VH}/e/amq.topic/e/{q(dest)}", {"routing_key": "a.#"}
            ).status
            == 201
        )
        found = api("GET", f"/api/exchanges/{VH}/{q(dest)}/bindings/destination").json
        assert [(b["source"], b["destination_type"], b["routing_key"]) for b in found] == [
            ("amq.topic", "exchange", "a.#")
        ]
    finally:
        api("DELETE", f"/api/exchanges/{VH}/{q(dest)}")


def test_connections_channels_and_consumers_show_a_pika_client(
    api: Any, broker: Any, queue: str
) -> None:
    params = pika.URLParameters(broker.url + "?heartbeat=0")
    params.client_properties = {"connection_name": f"conn-{queue}"}
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=7)
        channel.basic_consume(queue, lambda *a: None, consumer_tag=f"tag-{queue}")
        port = (
            connection._impl.socket.getsockname()[1]
            if hasattr(connection._impl, "socket")
            else None
        )

        def mine() -> list[dict[str, Any]]:
            return [
                c
                for c in api("GET", "/api/connections").json
                if c["client_properties"].get("connection_name") == f"conn-{queue}"
            ]

        conn = wait_for(mine)[0]
        assert conn["user"] == "guest"
        assert conn["vhost"] == "/"
        assert conn["protocol"] == "AMQP 0-9-1"
        assert conn["channels"] == 1
        assert conn["peer_host"] == "127.0.0.1"
        assert conn["port"] == broker.port
        if port is not None:
            assert conn["peer_port"] == port
        assert api("GET", f"/api/connections/{q(conn['name'])}").json["name"] == conn["name"]
        channels = [
            c
            for c in api("GET", "/api/channels").json
            if c["connection_details"]["name"] == conn["name"]
        ]
        assert len(channels) == 1
        assert channels[0]["number"] == 1
        assert channels[0]["consumer_count"] == 1
        assert channels[0]["prefetch_count"] == 7
        consumers = [
            c for c in api("GET", "/api/consumers").json if c["consumer_tag"] == f"tag-{queue}"
        ]
        assert len(consumers) == 1
        consumer = consumers[0]
        assert consumer["queue"] == {"name": queue, "vhost": "/"}
        assert consumer["ack_required"] is True
        assert consumer["channel_details"]["connection_name"] == conn["name"]
        assert get_queue(api, queue)["consumers"] == 1
        assert get_queue(api, queue)["consumer_details"][0]["consumer_tag"] == f"tag-{queue}"

        assert api("DELETE", f"/api/connections/{q(conn['name'])}").status == 204
        with pytest.raises(pika.exceptions.ConnectionClosed) as closed:
            connection.sleep(5)  # pika processes the server's connection.close meanwhile
        assert closed.value.reply_code == 320
        wait_for(lambda: not mine())
    finally:
        if connection.is_open:
            connection.close()


def test_users_and_permissions_round_trip(api: Any, uid: str) -> None:
    user = f"u-{uid}"
    assert (
        api("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": "management"}).status == 201
    )
    try:
        item = api("GET", f"/api/users/{q(user)}").json
        assert item["tags"] == ["management"]
        assert item["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert "password" not in item
        assert item["password_hash"]
        assert user in [u["name"] for u in api("GET", "/api/users").json]
        # a management user without permissions on "/" cannot see its queues
        assert api("GET", f"/api/queues/{VH}", auth=(user, "pw")).status == 403
        perm = {"configure": "^$", "write": ".*", "read": ".*"}
        assert api("PUT", f"/api/permissions/{VH}/{q(user)}", perm).status == 201
        assert api("GET", f"/api/permissions/{VH}/{q(user)}").json == {
            "user": user,
            "vhost": "/",
            **perm,
        }
        assert {"user": user, "vhost": "/", **perm} in api("GET", "/api/permissions").json
        assert api("GET", f"/api/queues/{VH}", auth=(user, "pw")).status == 200
        # configure "^$" allows no declares
        assert (
            api("PUT", f"/api/queues/{VH}/{q(uid)}", {"durable": False}, auth=(user, "pw")).status
            == 403
        )
        # management users may not manage users
        assert api("GET", "/api/users", auth=(user, "pw")).status == 403
        assert api("DELETE", f"/api/permissions/{VH}/{q(user)}").status == 204
        assert api("GET", f"/api/permissions/{VH}/{q(user)}").status == 404
    finally:
        assert api("DELETE", f"/api/users/{q(user)}").status == 204
    assert api("GET", f"/api/users/{q(user)}").status == 404


def test_policies_round_trip(api: Any, uid: str) -> None:
    path = f"/api/policies/{VH}/{q(uid)}"
    body = {
        "pattern": f"^{uid}$",
        "definition": {"max-length": 5},
        "priority": 1,
        "apply-to": "queues",
    }
    assert api("PUT", path, body).status == 201
    try:
        item = api("GET", path).json
        assert item == {
            "vhost": "/",
            "name": uid,
            "pattern": f"^{uid}$",
            "definition": {"max-length": 5},
            "priority": 1,
            "apply-to": "queues",
        }
        assert uid in [p["name"] for p in api("GET", f"/api/policies/{VH}").json]
        assert api("PUT", path, {**body, "definition": {"max-length": "lots"}}).status == 400
    finally:
        assert api("DELETE", path).status == 204
    assert api("GET", path).status == 404


def test_policy_alternate_exchange_catches_unroutable_pika_publishes(
    api: Any, broker: Any, uid: str, queue: str
) -> None:
    source, alternate = f"{uid}-src", f"{uid}-ae"
    policy = f"/api/policies/{VH}/{q(uid)}"
    for name, kind in ((source, "direct"), (alternate, "fanout")):
        assert api("PUT", f"/api/exchanges/{VH}/{q(name)}", {"type": kind}).status == 201
    assert api("POST", f"/api/bindings/{VH}/e/{q(alternate)}/q/{q(queue)}", {}).status == 201
    body = {
        "pattern": f"^{uid}-src$",
        "definition": {"alternate-exchange": alternate},
        "apply-to": "exchanges",
    }
    assert api("PUT", policy, body).status == 201
    try:
        assert api("GET", f"/api/exchanges/{VH}/{q(source)}").json["policy"] == uid
        connection = pika.BlockingConnection(pika.URLParameters(broker.url + "?heartbeat=0"))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(source, "no-binding", b"caught", mandatory=True)
        finally:
            connection.close()
        wait_for(lambda: get_queue(api, queue)["messages"] == 1)
        got = api(
            "POST", f"/api/queues/{VH}/{q(queue)}/get", {"count": 1, "ackmode": "ack_requeue_false"}
        )
        assert got.json[0]["payload"] == "caught"
        assert got.json[0]["exchange"] == source
    finally:
        assert api("DELETE", policy).status == 204
        for name in (source, alternate):
            api("DELETE", f"/api/exchanges/{VH}/{q(name)}")


def test_definitions_export_and_import(api: Any, uid: str) -> None:
    exported = api("GET", "/api/definitions").json
    assert {"users", "vhosts", "permissions", "queues", "exchanges", "bindings", "policies"} <= set(
        exported
    )
    document = {
        "queues": [
            {"name": uid, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
        ]
    }
    try:
        assert api("POST", "/api/definitions", document).status == 204
        assert get_queue(api, uid)["durable"] is True
        assert uid in [item["name"] for item in api("GET", "/api/definitions").json["queues"]]
        conflicting = {
            "queues": [
                {"name": uid, "vhost": "/", "durable": False, "auto_delete": False, "arguments": {}}
            ]
        }
        assert api("POST", "/api/definitions", conflicting).status == 400
        assert api("POST", "/api/definitions", raw_body=b"{not json").status == 400
    finally:
        api("DELETE", f"/api/queues/{VH}/{q(uid)}")


def test_health_check_and_aliveness_test(api: Any) -> None:
    assert api("GET", "/api/health/checks/alarms").json == {"status": "ok"}
    assert api("GET", f"/api/aliveness-test/{VH}").json == {"status": "ok"}
    assert api("GET", f"/api/aliveness-test/{q('no-such-vhost')}").status == 404


# -- errors --------------------------------------------------------------------------------------


def test_missing_or_wrong_credentials_get_401_with_a_challenge(api: Any) -> None:
    missing = api("GET", "/api/overview", auth=None)
    assert missing.status == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert missing.json["error"] == "not_authorised"
    assert api("GET", "/api/overview", auth=("guest", "wrong")).status == 401


def test_a_user_without_a_management_tag_gets_403(api: Any, uid: str) -> None:
    user = f"plain-{uid}"
    assert api("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": ""}).status == 201
    try:
        reply = api("GET", "/api/overview", auth=(user, "pw"))
        assert reply.status == 403
        assert reply.json["reason"]
    finally:
        api("DELETE", f"/api/users/{q(user)}")


def test_unknown_objects_are_404_and_wrong_methods_405(api: Any) -> None:
    assert api("GET", f"/api/queues/{VH}/{q('no-such-queue')}").status == 404
    assert api("GET", f"/api/queues/{q('no-such-vhost')}").status == 404
    assert api("GET", "/api/no-such-thing").json == {
        "error": "Object Not Found",
        "reason": "Not Found",
    }
    wrong = api("PATCH", "/api/queues")
    assert wrong.status == 405
    assert "GET" in wrong.headers["allow"]
    assert api("POST", "/api/overview", {}).status == 405


def test_malformed_input_is_400_with_a_json_reason(api: Any, uid: str) -> None:
    path = f"/api/queues/{VH}/{q(uid)}"
    bad_json = api("PUT", path, raw_body=b'{"durable": tru')
    assert bad_json.status == 400
    assert bad_json.json["error"] == "bad_request"
    assert "JSON" in bad_json.json["reason"]
    assert api("PUT", path, {"durable": "yes"}).status == 400
    assert api("PUT", path, {"arguments": [1, 2]}).status == 400
    assert api("PUT", f"/api/exchanges/{VH}/{q(uid)}", {"type": "no-such-type"}).status == 400
    assert api("GET", "/api/queues?page=1&page_size=100000").status == 400
    assert api("GET", path).status == 404  # nothing was created


def test_a_broken_http_request_gets_400_and_the_broker_keeps_serving(api: Any, broker: Any) -> None:
    with socket.create_connection(
        (broker.host, broker.management_port or 15672), timeout=10
    ) as sock:
        sock.sendall(b"GARBAGE / NOT-HTTP\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    assert api("GET", "/api/overview").status == 200


def test_an_idle_half_sent_request_does_not_block_other_clients(api: Any, broker: Any) -> None:
    with socket.create_connection(
        (broker.host, broker.management_port or 15672), timeout=10
    ) as sock:
        sock.sendall(b"PUT /api/queues/%2F/x HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
        # the stalled upload holds only its own connection
        assert api("GET", "/api/overview").status == 200
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        connection.close()


# -- SQS-style messaging -------------------------------------------------------------------------


def sqs(queue: str) -> str:
    return f"/api/v1/queues/{VH}/{q(queue)}/messages"


def test_sqs_receive_hides_a_message_until_its_visibility_timeout_then_redelivers(
    api: Any, queue: str
) -> None:
    sent = api("POST", sqs(queue), {"body": "hello", "headers": {"h": 1}})
    assert sent.status == 201
    assert sent.json["message_id"]
    first = api("GET", sqs(queue) + "?max=10&visibility_timeout=1").json["messages"]
    assert len(first) == 1
    assert first[0]["body"] == "hello"
    assert first[0]["receipt"]
    assert first[0]["redelivered"] is False
    assert first[0]["headers"] == {"h": 1}
    assert first[0]["message_id"] == sent.json["message_id"]
    # invisible to other receivers, counted as unacked meanwhile
    assert api("GET", sqs(queue) + "?max=10").json["messages"] == []
    assert get_queue(api, queue)["messages_unacknowledged"] == 1
    again = wait_for(
        lambda: api("GET", sqs(queue) + "?max=10&visibility_timeout=30").json["messages"],
        timeout=10,
    )
    assert again[0]["body"] == "hello"
    assert again[0]["redelivered"] is True
    assert again[0]["receive_count"] == 2
    # the old receipt expired with the timeout; the new one acknowledges
    assert api("DELETE", sqs(queue) + f"/{first[0]['receipt']}").status == 404
    assert api("DELETE", sqs(queue) + f"/{again[0]['receipt']}").status == 204
    item = get_queue(api, queue)
    assert item["messages"] == 0
    assert item["message_stats"]["ack"] == 1


def test_sqs_delete_before_the_timeout_removes_the_message_for_good(api: Any, queue: str) -> None:
    for i in range(3):
        assert api("POST", sqs(queue), {"body": f"m{i}"}).status == 201
    got = api("GET", sqs(queue) + "?max=2&visibility_timeout=60").json["messages"]
    assert [m["body"] for m in got] == ["m0", "m1"]
    for m in got:
        assert api("DELETE", sqs(queue) + f"/{m['receipt']}").status == 204
    assert api("DELETE", sqs(queue) + f"/{got[0]['receipt']}").status == 404
    assert get_queue(api, queue)["messages"] == 1


def test_sqs_messages_are_shared_with_amqp_consumers(api: Any, broker: Any, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        channel.basic_publish("", queue, b"from-amqp", pika.BasicProperties(priority=3))
        got = wait_for(
            lambda: api("GET", sqs(queue) + "?max=1&visibility_timeout=0.2").json["messages"]
        )
        assert got[0]["body"] == "from-amqp"
        assert got[0]["properties"]["priority"] == 3
        # after the visibility timeout the AMQP side gets it back, redelivered
        method = wait_for(lambda: channel.basic_get(queue, auto_ack=True)[0], timeout=10)
        assert method.redelivered is True
        assert (
            api("POST", sqs(queue), {"body": "from-http", "priority": 5, "ttl": 60000}).status
            == 201
        )
        method, props, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"from-http"
        assert props.priority == 5
        assert props.expiration == "60000"
    finally:
        connection.close()


def test_sqs_delay_holds_a_message_back(api: Any, queue: str) -> None:
    assert api("POST", sqs(queue), {"body": "later", "delay": 0.5}).json["delayed"] is True
    assert get_queue(api, queue)["messages"] == 0
    got = wait_for(lambda: api("GET", sqs(queue) + "?max=1").json["messages"], timeout=10)
    assert got[0]["body"] == "later"


def test_sqs_errors(api: Any, queue: str) -> None:
    assert api("POST", sqs("no-such-queue-" + queue), {"body": "x"}).status == 404
    assert api("POST", sqs(queue), {"nobody": "x"}).status == 400
    assert api("POST", sqs(queue), {"body": "x", "delay": -1}).status == 400
    assert api("GET", sqs(queue) + "?visibility_timeout=abc").status == 400
    assert api("GET", sqs(queue) + "?max=0").status == 400
    assert api("DELETE", sqs(queue) + "/not-a-receipt").status == 404
    assert api("GET", sqs(queue), auth=None).status == 401


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_expose_queue_gauges_counters_and_histograms(api: Any, queue: str) -> None:
    publish(api, queue, "x")
    reply = api("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.raw.decode()
    labels = f'{{vhost="/",queue="{queue}"}}'
    assert f"amqplite_queue_messages_ready{labels} 1" in text
    assert f"amqplite_queue_messages_unacked{labels} 0" in text
    assert f"amqplite_queue_consumers{labels} 0" in text
    assert f"amqplite_queue_messages_published_total{labels} 1" in text
    for name in ("published", "delivered", "acked", "redelivered", "dead_lettered", "expired"):
        assert f"# TYPE amqplite_global_messages_{name}_total counter" in text
    for name in (
        "amqplite_connections",
        "amqplite_channels",
        "amqplite_journal_bytes",
        "amqplite_process_resident_memory_bytes",
    ):
        assert f"\n{name} " in text
    assert 'amqplite_fsync_seconds_bucket{le="+Inf"}' in text
    assert "amqplite_fsync_seconds_count" in text
