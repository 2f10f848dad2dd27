"""Management API details RabbitMQ's tools rely on: string values in bodies, endpoints, fields."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from mgmt_helpers import call, q, wait_for

VH = q("/")


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


def test_health_checks_kubernetes_probes_use(api: Any, broker: Any) -> None:
    ok = {"status": "ok"}
    assert api("GET", "/api/health/checks/virtual-hosts").json == ok
    assert api("GET", "/api/healthchecks/node").json == ok
    assert api("GET", "/api/health/checks/certificate-expiration/1/months").json == ok
    quorum = api("GET", "/api/health/checks/node-is-quorum-critical")
    assert quorum.json == {"status": "ok", "reason": "single node cluster"}
    listening = api("GET", f"/api/health/checks/port-listener/{broker.port}")
    assert listening.json == {"status": "ok", "port": broker.port}
    missing = api("GET", "/api/health/checks/port-listener/1")
    assert missing.status == 503
    assert missing.json["missing"] == 1
    assert {broker.port, broker.management_port} <= set(missing.json["ports"])
    assert api("GET", "/api/health/checks/protocol-listener/amqp").status == 200
    mqtt = api("GET", "/api/health/checks/protocol-listener/mqtt")
    assert (mqtt.status, mqtt.json["missing"]) == (503, "mqtt")


def test_endpoints_of_features_amqplite_lacks_answer_as_rabbitmq_with_none(api: Any) -> None:
    for path in (
        "/api/extensions",
        "/api/parameters",
        "/api/parameters/shovel",
        "/api/global-parameters",
        "/api/vhost-limits",
        f"/api/vhost-limits/{VH}",
        "/api/topic-permissions",
        f"/api/vhosts/{VH}/topic-permissions",
        "/api/users/guest/topic-permissions",
        "/api/operator-policies",
    ):
        reply = api("GET", path)
        assert (reply.status, reply.json) == (200, []), path
    assert api("GET", "/api/vhost-limits/no-such-vhost").status == 404
    refused = api("PUT", f"/api/parameters/shovel/{VH}/s", {"value": {}})
    assert refused.status == 400
    assert "component shovel not found" in refused.json["reason"]
    flags = {f["name"]: f["state"] for f in api("GET", "/api/feature-flags").json}
    assert flags["implicit_default_bindings"] == "enabled"
    assert flags["quorum_queue"] == "disabled"
    overview = api("GET", "/api/overview").json
    assert api("GET", "/api/cluster-name").json == {"name": overview["cluster_name"]}


def test_auth_needs_no_credentials(broker: Any) -> None:
    if not broker.is_amqplite:
        pytest.skip("runs against amqplite's own endpoint")
    reply = call(broker.management_url, "GET", "/api/auth", auth=None)
    assert reply.status == 200
    assert reply.json["enable_uaa"] is False


@pytest.fixture
def client(broker: Any, uid: str) -> Iterator[pika.BlockingConnection]:
    """A pika connection that names itself (RabbitMQ's user_provided_name)."""
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": f"c-{uid}"}
    conn = pika.BlockingConnection(params)
    yield conn
    if conn.is_open:
        conn.close()


def test_queue_fields_monitoring_reads(api: Any, client: pika.BlockingConnection, uid: str) -> None:
    ch = client.channel()
    ch.queue_declare(uid, durable=True)
    ch.confirm_delivery()
    for i, size in enumerate((10, 11, 12)):
        props = pika.BasicProperties(delivery_mode=1 if i == 0 else 2, timestamp=1_700_000_000 + i)
        ch.basic_publish("", uid, b"x" * size, props)
    consumer = client.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(uid, lambda *_: None)  # takes the first message and holds it
    path = f"/api/queues/{VH}/{q(uid)}"

    def held() -> Any:
        client.process_data_events(0.05)
        item = api("GET", path).json
        return item if item["messages_unacknowledged"] == 1 else None

    item = wait_for(held)
    assert (item["message_bytes"], item["message_bytes_ready"]) == (33, 23)
    assert item["message_bytes_unacknowledged"] == 10
    assert (item["messages_persistent"], item["message_bytes_persistent"]) == (2, 23)
    assert (item["messages_ram"], item["messages_ready_ram"]) == (3, 2)
    assert (item["messages_unacknowledged_ram"], item["messages_paged_out"]) == (1, 0)
    assert item["message_bytes_ram"] == 33
    assert item["head_message_timestamp"] == 1_700_000_001  # the oldest ready message
    assert item["consumer_capacity"] == item["consumer_utilisation"] == 0  # at its prefetch
    assert item["single_active_consumer_tag"] is None
    assert item["effective_policy_definition"] == {}
    listed = api("GET", f"/api/queues/{VH}?columns=name,message_bytes,messages_persistent").json
    assert {"name": uid, "message_bytes": 33, "messages_persistent": 2} in listed
    ch.queue_delete(uid)


def test_idle_queue_has_idle_since_and_a_ready_consumer_full_capacity(
    api: Any, client: pika.BlockingConnection, uid: str
) -> None:
    ch = client.channel()
    ch.queue_declare(uid, auto_delete=False)
    ch.basic_consume(uid, lambda *_: None, auto_ack=True)
    path = f"/api/queues/{VH}/{q(uid)}"
    item = wait_for(lambda: (lambda it: it if "idle_since" in it else None)(api("GET", path).json))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", item["idle_since"])
    assert item["consumer_capacity"] == 1.0
    ch.queue_delete(uid)


def test_connection_and_channel_counters(
    api: Any, client: pika.BlockingConnection, uid: str
) -> None:
    ch = client.channel()
    ch.queue_declare(uid, auto_delete=True)
    ch.tx_select()
    ch.basic_publish("", uid, b"y" * 1000)
    ch.basic_publish("", uid, b"y" * 1000)

    def mine() -> Any:
        client.process_data_events(0.05)
        conns = api("GET", "/api/connections").json
        found = [c for c in conns if c.get("user_provided_name") == f"c-{uid}"]
        return found[0] if found and found[0]["recv_oct"] >= 2000 else None

    conn = wait_for(mine)
    assert min(conn["recv_cnt"], conn["send_oct"], conn["send_cnt"]) > 0
    assert conn["send_pend"] >= 0
    assert set(conn["recv_oct_details"]) == {"rate"}
    assert conn["ssl_protocol"] is None
    channels = api("GET", f"/api/connections/{q(conn['name'])}/channels").json
    tx = next(c for c in channels if c["transactional"])
    assert (tx["messages_uncommitted"], tx["acks_uncommitted"], tx["messages_unconfirmed"]) == (
        2,
        0,
        0,
    )
    ch.tx_commit()
    vhost = api("GET", f"/api/vhosts/{VH}").json
    assert vhost["recv_oct"] >= conn["recv_oct"]
    assert vhost["message_stats"]["publish"] >= 2
    assert vhost["metadata"] == {"description": "", "tags": []}
    assert vhost["default_queue_type"] == "classic"


def test_node_and_overview_list_exchange_types_and_mechanisms(api: Any, broker: Any) -> None:
    node = api("GET", "/api/nodes").json[0]
    types = {t["name"] for t in node["exchange_types"]}
    assert {"direct", "fanout", "topic", "headers"} <= types
    assert {m["name"] for m in node["auth_mechanisms"]} == {"PLAIN", "AMQPLAIN"}
    assert node["os_pid"] == str(broker.proc.pid)
    assert node["proc_total"] > node["proc_used"]
    assert node["sockets_total"] > 0
    overview = api("GET", "/api/overview").json
    assert {t["name"] for t in overview["exchange_types"]} == types


def test_exchange_and_overview_message_counters(
    api: Any, client: pika.BlockingConnection, uid: str
) -> None:
    before = api("GET", "/api/overview").json["message_stats"]
    exchange = f"x-{uid}"
    ch = client.channel()
    ch.exchange_declare(exchange, "direct", auto_delete=True)
    ch.queue_declare(uid, auto_delete=True)
    ch.queue_bind(uid, exchange, "hit")
    assert "message_stats" not in api("GET", f"/api/exchanges/{VH}/{q(exchange)}").json
    ch.confirm_delivery()
    ch.basic_publish(exchange, "hit", b"1")
    ch.basic_publish(exchange, "miss", b"2")  # dropped: no queue, not mandatory
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(exchange, "miss", b"3", mandatory=True)  # returned
    assert ch.basic_get(uid, auto_ack=True)[0] is not None
    assert ch.basic_get(uid, auto_ack=True)[0] is None  # get_empty
    stats = api("GET", f"/api/exchanges/{VH}/{q(exchange)}").json["message_stats"]
    assert (stats["publish_in"], stats["publish_out"]) == (3, 1)
    assert set(stats["publish_in_details"]) == {"rate"}
    assert api("GET", f"/api/queues/{VH}/{q(uid)}").json["message_stats"]["get_empty"] == 1
    after = api("GET", "/api/overview").json["message_stats"]
    for field, grew in (
        ("drop_unroutable", 1),
        ("return_unroutable", 1),
        ("confirm", 3),
        ("get_empty", 1),
    ):
        assert after[field] - before.get(field, 0) >= grew, field
        assert field + "_details" in after


def test_overview_churn_rates_count_what_was_created_and_closed(
    api: Any, client: pika.BlockingConnection, uid: str
) -> None:
    before = api("GET", "/api/overview").json["churn_rates"]
    ch = client.channel()
    ch.queue_declare(uid)
    ch.queue_declare(uid)  # declared again: not created again
    ch.queue_delete(uid)
    ch.close()
    after = api("GET", "/api/overview").json["churn_rates"]
    assert after["queue_declared"] - before["queue_declared"] == 2
    assert after["queue_created"] - before["queue_created"] == 1
    assert after["queue_deleted"] - before["queue_deleted"] >= 1
    assert after["channel_created"] - before["channel_created"] >= 1
    assert after["channel_closed"] - before["channel_closed"] >= 1
    assert set(after["connection_created_details"]) == {"rate"}


@pytest.mark.parametrize(
    ("path", "feature"),
    [
        ("/api/global-parameters/cluster_name", "global parameters"),
        ("/api/cluster-name", "renaming the cluster"),
    ],
)
def test_writes_to_what_amqplite_lacks_answer_405_saying_so(
    api: Any, path: str, feature: str
) -> None:
    reply = api("PUT", path, {"value": {"max-connections": 1}})
    assert reply.status == 405
    assert feature in reply.json["reason"]
